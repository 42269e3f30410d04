"""``/v1/models``: every model the pod hosts, by name. ``/predict`` and ``/feedback`` stay the default
model's; ``/v1/models/{name}/...`` are the same routes for any hosted model, with a body typed by the
model's task (a text, or features checked against its feature schema)."""

from __future__ import annotations

from typing import Annotated, cast

from fastapi import BackgroundTasks, Depends, FastAPI, Path, Request

from schemas.exceptions import InvalidEvent
from serving import _predict
from serving.deps import MetricsDep
from serving.exceptions import InvalidInput, NotReady, ServingError
from serving.models import (
    BatchPublic,
    ErrorPublic,
    FeedbackCreate,
    FeedbackPublic,
    HostedListPublic,
    HostedPublic,
    ModelBatchCreate,
    ModelPredictCreate,
    ModelsPublic,
    PredictionPublic,
)
from serving.pod import Pod
from serving.services import Services
from serving.views import loaded_public, models_public

ERRORS: dict[int | str, dict[str, object]] = {code: {"model": ErrorPublic} for code in (404, 422, 503)}
ModelName = Annotated[str, Path(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9._-]+$")]


def get_pod(request: Request) -> Pod:
    pod = getattr(request.app.state, "pod", None)
    if pod is None:
        raise NotReady("the app is starting")
    return cast(Pod, pod)


PodDep = Annotated[Pod, Depends(get_pod)]


def hosted_public(services: Services, default: bool) -> HostedPublic:
    d, spec = services.runtime.deployment, services.spec
    return HostedPublic(
        model=services.settings.model_name, task=services.task, labels=list(services.settings.labels),
        features=spec.features.to_params() if spec is not None and spec.features is not None else None,
        default=default, ready=d.ready, champion=loaded_public(d.champion), canary=loaded_public(d.canary),
        canary_traffic=d.canary_traffic)


def install_v1_routes(app: FastAPI) -> None:
    @app.get("/v1/models", response_model=HostedListPublic)
    def hosted(pod: PodDep) -> HostedListPublic:
        return HostedListPublic(models=[hosted_public(s, s is pod.default) for s in pod.hosted.values()])

    @app.get("/v1/models/{name}", response_model=ModelsPublic, responses=ERRORS)
    def model_detail(name: ModelName, pod: PodDep) -> ModelsPublic:
        services = pod.get(name)
        return models_public(name, services.registry, services.runtime)

    @app.post("/v1/models/{name}/predict", response_model=PredictionPublic, responses=ERRORS)
    async def predict(name: ModelName, body: ModelPredictCreate, request: Request, background: BackgroundTasks,
                      pod: PodDep) -> PredictionPublic:
        services = pod.get(name)
        item = _predict.check_item(body, services)
        deployment = services.runtime.deployment
        if not deployment.ready:
            raise NotReady(f"model {name!r} has no champion loaded yet")
        [result] = await _predict.predict_async([item], deployment, services)
        request.state.variant = result.variant
        job = _predict.shadow_job([item], [result], deployment, services)
        if job is not None:
            background.add_task(job)
        return result

    @app.post("/v1/models/{name}/predict/batch", response_model=BatchPublic, responses=ERRORS)
    async def predict_batch(name: ModelName, body: ModelBatchCreate, background: BackgroundTasks,
                            pod: PodDep) -> BatchPublic:
        services = pod.get(name)
        items = [_predict.check_item(item, services, f"items.{i}") for i, item in enumerate(body.items)]
        deployment = services.runtime.deployment
        if not deployment.ready:
            raise NotReady(f"model {name!r} has no champion loaded yet")
        results = await _predict.predict_async(items, deployment, services)
        job = _predict.shadow_job(items, results, deployment, services)
        if job is not None:
            background.add_task(job)
        return BatchPublic(predictions=results)

    @app.post("/v1/models/{name}/feedback", status_code=202, response_model=FeedbackPublic, responses=ERRORS)
    def feedback(name: ModelName, body: FeedbackCreate, pod: PodDep, metrics: MetricsDep) -> FeedbackPublic:
        services = pod.get(name)
        labels = services.settings.labels
        if body.label is not None and body.label not in labels:
            raise InvalidInput(f"label: {body.label!r} is not one of model {name!r}'s {list(labels)}")
        try:
            event = services.feedback.feedback(body.prediction_id, label=body.label, thumbs=body.thumbs,
                                               user_id=body.user_id, source="serving", model=name)
        except InvalidEvent as exc:
            raise InvalidInput(str(exc)) from exc
        except ServingError:
            metrics.feedback.labels("refused").inc()
            raise
        metrics.feedback.labels("accepted").inc()
        return FeedbackPublic(feedback_id=event.feedback_id)
