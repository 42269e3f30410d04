"""The prediction path behind the routes: route each item, run each model once per request on its
items, publish the events; the shadow runs later, on a copy, and only publishes. Models whose kind
batches (``ModelKind.batches``) go through the pod's :class:`~serving.batching.MicroBatcher` when one is
given; the others are scored in the calling thread.

The routes use :func:`predict_async`: it awaits the micro-batcher's future on the event loop (no
thread-pool hop), scores kinds whose ``predict_proba`` is cheap (``ModelKind.inline``) on the event loop
itself, and any other kind in the thread pool."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from fastapi import BackgroundTasks
from fastapi.concurrency import run_in_threadpool
from pydantic import ValidationError

from core.settings import FlywheelSettings
from kinds.base import Probabilities
from schemas.events import ClassificationOutput, PredictionEvent, PredictionEventV2, TabularInput, Variant
from schemas.exceptions import InvalidEvent
from serving.batching import MicroBatcher
from serving.exceptions import InvalidInput, NotReady, ServingError, WrongTask
from serving.metrics import ServingMetrics
from serving.models import (
    FeedbackCreate,
    FeedbackPublic,
    ModelFeedbackCreate,
    ModelPredictCreate,
    PredictCreate,
    PredictionPublic,
    TabularPredictCreate,
)
from serving.publisher import PredictionPublisher
from serving.router import Route, route
from serving.runtime import Deployment, LoadedModel
from serving.services import Services
from tasks import Input, InputRejected

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Scored:
    """``latency_ms``: from asking for the item's probabilities to having them, i.e. the ``predict_proba``
    call it was part of, plus its wait in the micro-batcher's queue when batched."""

    label: str
    probabilities: dict[str, float]
    latency_ms: float


def check_text(text: str, settings: FlywheelSettings, where: str = "text") -> None:
    if not text.strip():
        raise InvalidInput(f"{where}: must not be empty")
    if len(text) > settings.max_text_chars:
        raise InvalidInput(f"{where}: {len(text)} characters, more than max_text_chars={settings.max_text_chars}")


def check_item(item: ModelPredictCreate, services: Services, where: str = "") -> ModelPredictCreate:
    """The item if it fits the model's task and contract (a tabular row with its features normalised: every
    declared feature present, absent optional ones as null), else :class:`InvalidInput`."""
    prefix = f"{where}." if where else ""
    spec = services.spec
    if services.task == "text-generation":
        name = services.settings.model_name
        raise WrongTask(f"model {name!r} is a text-generation model: POST /v1/models/{name}/generate")
    if isinstance(item, PredictCreate):
        if services.task != "text-classification":
            raise InvalidInput(f"{prefix}text: model {services.settings.model_name!r} is a {services.task} model; "
                               "send `features`")
        check_text(item.text, services.settings, f"{prefix}text")
        return item
    if spec is None or spec.features is None:
        raise InvalidInput(f"{prefix}features: model {services.settings.model_name!r} is a {services.task} model; "
                           "send `text`")
    try:
        return item.model_copy(update={"features": spec.features.validate_row(item.features)})
    except InputRejected as exc:
        raise InvalidInput(f"{prefix}features: {exc.detail} ({exc.reason.value})") from exc


def model_input(item: ModelPredictCreate) -> Input:
    return item.text if isinstance(item, PredictCreate) else item.features


def score(model: LoadedModel, texts: Sequence[Input], batcher: MicroBatcher | None = None) -> list[Scored]:
    if batcher is not None and model.classifier.batches:
        batched = batcher.predict(model, texts)  # type: ignore[arg-type]  # batching kinds take texts
        return _scored(model, batched.proba, batched.latency_ms)
    started = time.perf_counter()
    proba = model.predict_proba(texts)
    return _scored(model, proba, (time.perf_counter() - started) * 1000)


async def score_async(model: LoadedModel, texts: Sequence[Input], batcher: MicroBatcher | None = None
                      ) -> list[Scored]:
    """:func:`score` for the event loop: awaits the batcher, runs ``inline`` kinds here, others in the pool."""
    if batcher is not None and model.classifier.batches:
        batched = await asyncio.wrap_future(batcher.submit(model, texts))  # type: ignore[arg-type]
        return _scored(model, batched.proba, batched.latency_ms)
    if model.classifier.inline:
        return score(model, texts)
    return await run_in_threadpool(score, model, texts)


def _scored(model: LoadedModel, proba: Probabilities, latency_ms: float) -> list[Scored]:
    labels = model.classifier.labels
    return [Scored(labels[int(row.argmax())], dict(zip(labels, row.tolist(), strict=True)), latency_ms)
            for row in proba]


def predict(items: Sequence[ModelPredictCreate], deployment: Deployment, services: Services
            ) -> list[PredictionPublic]:
    ids, routes = _routes(items, deployment)
    scored: dict[int, Scored] = {}
    for idx in _groups(routes):
        results = score(routes[idx[0]].model, [model_input(items[i]) for i in idx], services.batcher)
        scored.update(zip(idx, results, strict=True))
    return _served(items, ids, routes, scored, services)


async def predict_async(items: Sequence[ModelPredictCreate], deployment: Deployment,
                        services: Services) -> list[PredictionPublic]:
    ids, routes = _routes(items, deployment)
    scored: dict[int, Scored] = {}
    for idx in _groups(routes):
        results = await score_async(routes[idx[0]].model, [model_input(items[i]) for i in idx], services.batcher)
        scored.update(zip(idx, results, strict=True))
    return _served(items, ids, routes, scored, services)


def _routes(items: Sequence[ModelPredictCreate], deployment: Deployment) -> tuple[list[str], list[Route]]:
    ids = [uuid.uuid4().hex for _ in items]
    return ids, [route(deployment, item.user_id, pid) for item, pid in zip(items, ids, strict=True)]


def _groups(routes: Sequence[Route]) -> list[list[int]]:
    """The item indices of each model version (each model runs once per request)."""
    groups: dict[str, list[int]] = {}
    for i, r in enumerate(routes):
        groups.setdefault(r.model.version, []).append(i)
    return list(groups.values())


def _served(items: Sequence[ModelPredictCreate], ids: Sequence[str], routes: Sequence[Route], scored: dict[int, Scored],
            services: Services) -> list[PredictionPublic]:
    settings, publisher, metrics = services.settings, services.publisher, services.metrics
    out = []
    for i, (item, pid, r) in enumerate(zip(items, ids, routes, strict=True)):
        s = scored[i]
        metrics.predictions.labels(r.variant, _version_label(services, r.model.version)).inc()
        if services.first_serves is not None:
            services.first_serves.served(settings.model_name, r.model.version)
        publish(publisher, metrics, settings, pid, item, r.model, r.variant, s)
        out.append(PredictionPublic(prediction_id=pid, label=s.label, probabilities=s.probabilities,
                                    model=settings.model_name, version=r.model.version,
                                    semver=r.model.served.semver, variant=r.variant))
    return out


async def serve(items: Sequence[ModelPredictCreate], services: Services,
                background: BackgroundTasks) -> list[PredictionPublic]:
    """What every predict route does with checked items: read the deployment once (the request sees one),
    score, publish, and queue the shadow's copy after the response."""
    deployment = services.runtime.deployment
    if not deployment.ready:
        raise NotReady(f"model {services.settings.model_name!r} has no champion loaded yet")
    results = await predict_async(items, deployment, services)
    job = shadow_job(items, results, deployment, services)
    if job is not None:
        background.add_task(job)
    return results


def send_feedback(body: FeedbackCreate, services: Services, *, model: str | None = None) -> FeedbackPublic:
    """What every feedback route does: the label checked against the model's, the event published (schema
    version 2 naming ``model`` when given, else version 1: the default model's), counted either way."""
    labels, metrics, name = services.settings.labels, services.metrics, services.settings.model_name
    rating, correction, signal = ((body.rating, body.correction, body.signal) if isinstance(body, ModelFeedbackCreate)
                                  else (None, None, None))
    judgement = {"rating": rating, "correction": correction, "signal": signal}
    if services.task == "text-generation":
        if body.label is not None:
            raise InvalidInput(f"label: model {name!r} is a text-generation model: it takes thumbs, a rating, "
                               "a correction or a signal, not a label")
    else:
        for field, value in judgement.items():
            if value is not None:
                raise InvalidInput(f"{field}: model {name!r} is a {services.task} model: it takes a label or "
                                   f"thumbs, not a {field}")
        if body.label is None and body.thumbs is None:
            raise InvalidInput(f"label: model {name!r} is a {services.task} model: feedback needs a label or thumbs")
    if body.label is not None and body.label not in labels:
        raise InvalidInput(f"label: {body.label!r} is not one of model {name!r}'s {list(labels)}")
    try:
        event = services.feedback.feedback(body.prediction_id, label=body.label, thumbs=body.thumbs,
                                           user_id=body.user_id, source="serving", model=model, rating=rating,
                                           correction=correction, signal=signal)
    except InvalidEvent as exc:
        raise InvalidInput(str(exc)) from exc
    except ServingError:
        metrics.feedback.labels("refused").inc()
        raise
    metrics.feedback.labels("accepted").inc()
    return FeedbackPublic(feedback_id=event.feedback_id)


def shadow_job(items: Sequence[ModelPredictCreate], results: Sequence[PredictionPublic], deployment: Deployment,
               services: Services) -> Callable[[], None] | None:
    """What to run after the response: the shadow on copies of the items (its event's prediction id is
    ``<served prediction id>-shadow``, so it never collides with the served one)."""
    shadow = deployment.shadow
    if shadow is None:
        return None
    settings, publisher, metrics, batcher = services.settings, services.publisher, services.metrics, services.batcher
    copies = [item.model_copy() for item in items]
    ids = [f"{r.prediction_id}-shadow" for r in results]

    def run() -> None:
        try:
            scored = score(shadow, [model_input(c) for c in copies], batcher)
            for item, pid, s in zip(copies, ids, scored, strict=True):
                metrics.predictions.labels("shadow", _version_label(services, shadow.version)).inc()
                publish(publisher, metrics, settings, pid, item, shadow, "shadow", s)
        except Exception:  # a shadow failure must never surface anywhere but the log
            log.exception("shadow %s failed", shadow.version)

    return run


def _version_label(services: Services, version: str) -> str:
    """The metrics' version label: version numbers are per model, so another model's carry its name (the
    default model's stay bare even when it is declared in Postgres, as ``flywheel up`` does)."""
    return version if services.is_default else f"{services.settings.model_name}:{version}"


def publish(publisher: PredictionPublisher, metrics: ServingMetrics, settings: FlywheelSettings, pid: str,
            item: ModelPredictCreate, model: LoadedModel, variant: Variant, s: Scored) -> None:
    """The prediction event: schema version 1 for a text (what every text model published before), version
    2 (task-typed input and output) for any other input."""
    event: PredictionEvent | PredictionEventV2
    try:
        if isinstance(item, TabularPredictCreate):
            event = PredictionEventV2(
                ts=datetime.now(UTC), prediction_id=pid, model=settings.model_name, model_version=model.version,
                variant=variant, input=TabularInput(features=item.features),
                output=ClassificationOutput(label=s.label, probabilities=s.probabilities), latency_ms=s.latency_ms,
                user_id=item.user_id, domain=item.domain, segment=item.segment)
        else:
            event = PredictionEvent(ts=datetime.now(UTC), prediction_id=pid, model=settings.model_name,
                                    model_version=model.version, variant=variant, text=item.text, label=s.label,
                                    probabilities=s.probabilities, latency_ms=s.latency_ms, user_id=item.user_id,
                                    domain=item.domain, segment=item.segment)
    except ValidationError as exc:
        metrics.events_dropped.labels("invalid_event").inc()
        log.warning("prediction %s not publishable: %s", pid, exc)
        return
    publisher.publish(event)
