"""``/v1/models``: every model the pod hosts, by name. ``/predict`` and ``/feedback`` stay the default
model's; ``/v1/models/{name}/...`` are the same routes for any hosted model, with a body typed by the
model's task (a text, or features checked against its feature schema)."""

from __future__ import annotations

from typing import Annotated, cast

from fastapi import BackgroundTasks, Depends, FastAPI, Path, Request
from fastapi.responses import StreamingResponse

from serving import _predict, generation
from serving.exceptions import NotReady
from serving.models import (
    BatchPublic,
    ErrorPublic,
    FeedbackPublic,
    GenerateCreate,
    GenerationPublic,
    HostedListPublic,
    HostedPublic,
    ModelBatchCreate,
    ModelFeedbackCreate,
    ModelPredictCreate,
    ModelsPublic,
    PredictionPublic,
)
from serving.pod import Pod
from serving.services import Services
from serving.views import loaded_public, models_public

ERRORS: dict[int | str, dict[str, object]] = {code: {"model": ErrorPublic} for code in (404, 422, 503)}
GENERATE_RESPONSES: dict[int | str, dict[str, object]] = {
    **ERRORS, **{code: {"model": ErrorPublic} for code in (429, 500, 504)},
    200: {"content": {"text/event-stream": {"schema": {
        "type": "string", "description": "With `stream: true`: server-sent events `token` ({text}) as pieces "
        "are generated, then `done` (the GenerationPublic body) or `error` ({error, detail})."}}}}}
ModelName = Annotated[str, Path(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9._-]+$")]


async def get_pod(request: Request) -> Pod:
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
        [result] = await _predict.serve([_predict.check_item(body, services)], services, background)
        request.state.variant = result.variant
        return result

    @app.post("/v1/models/{name}/predict/batch", response_model=BatchPublic, responses=ERRORS)
    async def predict_batch(name: ModelName, body: ModelBatchCreate, background: BackgroundTasks,
                            pod: PodDep) -> BatchPublic:
        services = pod.get(name)
        items = [_predict.check_item(item, services, f"items.{i}") for i, item in enumerate(body.items)]
        return BatchPublic(predictions=await _predict.serve(items, services, background))

    @app.post("/v1/models/{name}/generate", response_model=GenerationPublic, responses=GENERATE_RESPONSES)
    async def generate(name: ModelName, body: GenerateCreate, request: Request, pod: PodDep
                       ) -> GenerationPublic | StreamingResponse:
        """A text generator's answer. Busy pod: 429 with Retry-After; past FLYWHEEL_GENERATE_TIMEOUT_S: 504
        (a stream instead ends with finish_reason `timeout`); a classifier's name: 422 `wrong_task`."""
        services = pod.get(name)
        if body.stream:
            events = generation.open_stream(body, services)
            return StreamingResponse(events, media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        result = await generation.generate(body, services)
        request.state.variant = result.variant
        return result

    @app.post("/v1/models/{name}/feedback", status_code=202, response_model=FeedbackPublic, responses=ERRORS)
    async def feedback(name: ModelName, body: ModelFeedbackCreate, pod: PodDep) -> FeedbackPublic:
        return _predict.send_feedback(body, pod.get(name), model=name)
