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

from fastapi.concurrency import run_in_threadpool
from pydantic import ValidationError

from core.settings import FlywheelSettings
from kinds.base import Probabilities
from schemas.events import PredictionEvent, Variant
from serving.batching import MicroBatcher
from serving.exceptions import InvalidInput
from serving.metrics import ServingMetrics
from serving.models import PredictCreate, PredictionPublic
from serving.publisher import PredictionPublisher
from serving.router import Route, route
from serving.runtime import Deployment, LoadedModel
from serving.services import Services

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


def score(model: LoadedModel, texts: Sequence[str], batcher: MicroBatcher | None = None) -> list[Scored]:
    if batcher is not None and model.model.batches:
        batched = batcher.predict(model, texts)
        return _scored(model, batched.proba, batched.latency_ms)
    started = time.perf_counter()
    proba = model.predict_proba(texts)
    return _scored(model, proba, (time.perf_counter() - started) * 1000)


async def score_async(model: LoadedModel, texts: Sequence[str], batcher: MicroBatcher | None = None) -> list[Scored]:
    """:func:`score` for the event loop: awaits the batcher, runs ``inline`` kinds here, others in the pool."""
    if batcher is not None and model.model.batches:
        batched = await asyncio.wrap_future(batcher.submit(model, texts))
        return _scored(model, batched.proba, batched.latency_ms)
    if model.model.inline:
        return score(model, texts)
    return await run_in_threadpool(score, model, texts)


def _scored(model: LoadedModel, proba: Probabilities, latency_ms: float) -> list[Scored]:
    labels = model.model.labels
    return [Scored(labels[int(row.argmax())], dict(zip(labels, row.tolist(), strict=True)), latency_ms)
            for row in proba]


def predict(items: Sequence[PredictCreate], deployment: Deployment, services: Services) -> list[PredictionPublic]:
    ids, routes = _routes(items, deployment)
    scored: dict[int, Scored] = {}
    for idx in _groups(routes):
        results = score(routes[idx[0]].model, [items[i].text for i in idx], services.batcher)
        scored.update(zip(idx, results, strict=True))
    return _served(items, ids, routes, scored, services)


async def predict_async(items: Sequence[PredictCreate], deployment: Deployment,
                        services: Services) -> list[PredictionPublic]:
    ids, routes = _routes(items, deployment)
    scored: dict[int, Scored] = {}
    for idx in _groups(routes):
        results = await score_async(routes[idx[0]].model, [items[i].text for i in idx], services.batcher)
        scored.update(zip(idx, results, strict=True))
    return _served(items, ids, routes, scored, services)


def _routes(items: Sequence[PredictCreate], deployment: Deployment) -> tuple[list[str], list[Route]]:
    ids = [uuid.uuid4().hex for _ in items]
    return ids, [route(deployment, item.user_id, pid) for item, pid in zip(items, ids, strict=True)]


def _groups(routes: Sequence[Route]) -> list[list[int]]:
    """The item indices of each model version (each model runs once per request)."""
    groups: dict[str, list[int]] = {}
    for i, r in enumerate(routes):
        groups.setdefault(r.model.version, []).append(i)
    return list(groups.values())


def _served(items: Sequence[PredictCreate], ids: Sequence[str], routes: Sequence[Route], scored: dict[int, Scored],
            services: Services) -> list[PredictionPublic]:
    settings, publisher, metrics = services.settings, services.publisher, services.metrics
    out = []
    for i, (item, pid, r) in enumerate(zip(items, ids, routes, strict=True)):
        s = scored[i]
        metrics.predictions.labels(r.variant, r.model.version).inc()
        publish(publisher, metrics, settings, pid, item, r.model, r.variant, s)
        out.append(PredictionPublic(prediction_id=pid, label=s.label, probabilities=s.probabilities,
                                    model=settings.model_name, version=r.model.version,
                                    semver=r.model.served.semver, variant=r.variant))
    return out


def shadow_job(items: Sequence[PredictCreate], results: Sequence[PredictionPublic], deployment: Deployment,
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
            scored = score(shadow, [c.text for c in copies], batcher)
            for item, pid, s in zip(copies, ids, scored, strict=True):
                metrics.predictions.labels("shadow", shadow.version).inc()
                publish(publisher, metrics, settings, pid, item, shadow, "shadow", s)
        except Exception:  # a shadow failure must never surface anywhere but the log
            log.exception("shadow %s failed", shadow.version)

    return run


def publish(publisher: PredictionPublisher, metrics: ServingMetrics, settings: FlywheelSettings, pid: str,
            item: PredictCreate, model: LoadedModel, variant: Variant, s: Scored) -> None:
    try:
        event = PredictionEvent(ts=datetime.now(UTC), prediction_id=pid, model=settings.model_name,
                                model_version=model.version, variant=variant, text=item.text, label=s.label,
                                probabilities=s.probabilities, latency_ms=s.latency_ms, user_id=item.user_id,
                                domain=item.domain, segment=item.segment)
    except ValidationError as exc:
        metrics.events_dropped.labels("invalid_event").inc()
        log.warning("prediction %s not publishable: %s", pid, exc)
        return
    publisher.publish(event)
