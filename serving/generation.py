"""The generation path behind ``POST /v1/models/{name}/generate``: route the request (champion, or the
canary for its share of users), run it on the pod's :class:`GenerationPool`, publish the prediction event
(schema version 2: :class:`GenerationInput` / :class:`GenerationOutput`), and queue the shadow's copy.

Why a pool of its own and not the anyio thread pool: one generation holds a worker for up to seconds
(64 new tokens of SmolLM2-135M: ~35-45 ms of CPU per token with the kind's decode loop, i.e. ~2.5 s, and
2-3x that in wall time on a loaded 2-core machine) and every generator of a pod shares one base
model whose forward passes are serialised, so more threads would only queue inside the lock. The pool
runs ``generate_workers`` at once and lets ``generate_queue`` more wait; one more is refused at once with
429 and a ``Retry-After`` from the recent p95 (the client can back off; a queue that grows without bound
only turns every answer into a time-out).

The deadline (``generate_timeout_s`` from arrival): a request still queued at its deadline is dropped
without running and answered 504; a non-streamed generation that is running at its deadline cannot be
interrupted (``GeneratorKind.generate`` is one call), so the client gets 504 and the generation finishes
in the background, holding its worker (the bound stays true). Why 504 and not a 200 with
``finish_reason: timeout``: a non-streamed client has nothing partial to show, and an error status is what
its retries and dashboards already understand. Either way the prediction is published with
``finish_reason`` ``timeout`` (the canary's error rate counts it). A stream is read piece by piece, so at
its deadline it is cut: the last event says ``finish_reason: timeout`` and the partial answer is
published as such.

A generation that raises is a 500 naming the prediction, the version and the exception (a stream: an
``error`` event), counted ``finish="error"`` and published with ``finish_reason`` ``error``: the canary's
error rate counts it like a time-out.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, TypeVar

from pydantic import ValidationError

from kinds.base_models import SMOLLM2, load_base
from kinds.generation import Generation, GeneratorKind, Prompt
from schemas.events import GenerationInput, GenerationOutput, PredictionEventV2, Variant
from serving.exceptions import GenerationFailed, GenerationTimeout, InvalidInput, NotReady, Overloaded, WrongTask
from serving.genpool import GenerationPool
from serving.models import GenerateCreate, GenerationPublic
from serving.router import route
from serving.runtime import LoadedModel
from serving.services import Services

log = logging.getLogger(__name__)

T = TypeVar("T")
Finish = Literal["stop", "length", "timeout"]


@dataclass(frozen=True)
class _Request:
    """One checked request, routed: what the job and the event need."""

    services: Services
    body: GenerateCreate
    prompt: Prompt
    prediction_id: str
    loaded: LoadedModel
    generator: GeneratorKind
    variant: Variant
    deadline: float
    arrived: float


def check(body: GenerateCreate, services: Services) -> _Request:
    """The request routed to a generator, or a 4xx/503: wrong task, too many tokens, no champion yet."""
    settings, name = services.settings, services.settings.model_name
    if services.task != "text-generation":
        raise WrongTask(f"model {name!r} is a {services.task} model: POST /v1/models/{name}/predict")
    if body.max_tokens > settings.generate_max_tokens:
        raise InvalidInput(f"max_tokens: {body.max_tokens} is more than this pod allows "
                           f"(FLYWHEEL_GENERATE_MAX_TOKENS={settings.generate_max_tokens})")
    deployment = services.runtime.deployment
    if not deployment.ready:
        raise NotReady(f"model {name!r} has no champion loaded yet")
    pid = uuid.uuid4().hex
    r = route(deployment, body.user_id, pid)
    now = time.monotonic()
    return _Request(services, body, Prompt(body.prompt, body.context, body.persona), pid, r.model,
                    r.model.generator, r.variant, now + settings.generate_timeout_s, now)


async def generate(body: GenerateCreate, services: Services) -> GenerationPublic:
    """The non-streamed answer (a stream goes through :func:`open_stream`)."""
    req = check(body, services)
    pool = _pool(services)
    future = _admit(pool, req, lambda: _run(req))
    try:
        generation = await asyncio.wait_for(asyncio.wrap_future(future), max(0.0, req.deadline - time.monotonic()))
    except (TimeoutError, GenerationTimeout):
        _count(req, "timeout")
        future.add_done_callback(lambda done: _publish_late(req, done))
        raise GenerationTimeout(
            f"prediction {req.prediction_id}: no answer from version {req.loaded.version} within "
            f"FLYWHEEL_GENERATE_TIMEOUT_S={services.settings.generate_timeout_s:g}s ({pool.admitted} generations "
            "running or queued)", pool.retry_after()) from None
    except Exception as exc:
        raise _failed(req, exc) from exc
    finish: Finish = "length" if generation.finish_reason == "length" else "stop"
    answer = _answer(req, generation.text, generation.prompt_tokens, generation.completion_tokens, finish,
                     _elapsed_ms(req))
    _served(req, answer)
    _shadow(req)
    return answer


def open_stream(body: GenerateCreate, services: Services) -> AsyncIterator[bytes]:
    """Admit a streamed request (429 / 4xx raised here, before the response starts) and return its
    server-sent events: ``event: token`` with ``{"text": piece}`` as pieces come, then ``event: done``
    with the whole answer (or ``event: error``)."""
    req = check(body, services)
    loop = asyncio.get_running_loop()
    pieces: asyncio.Queue[str | BaseException | None] = asyncio.Queue()
    stop = threading.Event()

    def put(item: str | BaseException | None) -> None:
        loop.call_soon_threadsafe(pieces.put_nowait, item)

    def job() -> None:
        if time.monotonic() >= req.deadline:
            put(GenerationTimeout("the deadline passed in the queue"))
            return
        started = time.perf_counter()
        iterator: Iterator[str] | None = None
        try:  # a stream that fails to start is an error event too (not a wait for the deadline)
            iterator = req.generator.stream(req.prompt, max_new_tokens=req.body.max_tokens,
                                            temperature=req.body.temperature, stop=tuple(req.body.stop))
            for piece in iterator:
                if stop.is_set():
                    break
                put(piece)
            _observe(req, time.perf_counter() - started)
            put(None)
        except Exception as exc:
            put(exc)
        finally:
            close = getattr(iterator, "close", None)
            if close is not None:
                close()

    _admit(_pool(services), req, job)
    return _events(req, pieces, stop)


async def _events(req: _Request, pieces: asyncio.Queue[str | BaseException | None], stop: threading.Event
                  ) -> AsyncIterator[bytes]:
    text: list[str] = []
    finish: Finish | None = None
    try:
        while finish is None:
            try:
                item = await asyncio.wait_for(pieces.get(), max(0.0, req.deadline - time.monotonic()))
            except TimeoutError:
                item = GenerationTimeout("the deadline passed")
            if isinstance(item, str):
                text.append(item)
                yield _sse("token", {"text": item})
            elif item is None:
                finish = "stop"
            elif isinstance(item, GenerationTimeout):
                finish = "timeout"
            else:
                yield _sse("error", {"error": GenerationFailed.code, "detail": _failed(req, item).detail})
                return
    finally:
        stop.set()  # the worker stops at its next piece (a client gone, a deadline passed)
    whole = "".join(text)
    prompt_tokens, completion_tokens = _token_counts(req, whole)
    if finish == "stop" and completion_tokens >= req.body.max_tokens:
        finish = "length"
    answer = _answer(req, whole, prompt_tokens, completion_tokens, finish, _elapsed_ms(req))
    _served(req, answer)
    _shadow(req)
    yield _sse("done", answer.model_dump())


def _publish_late(req: _Request, done: Future[Generation]) -> None:
    """A request answered 504 is still a prediction of its variant that failed: published with
    ``finish_reason`` ``timeout`` (what the generation made once it finished, or nothing when it never
    started), so a canary's error rate counts it."""
    generation = None if done.cancelled() or done.exception() is not None else done.result()
    _publish(req, req.prediction_id, req.loaded, req.variant, generation.text if generation else "",
             generation.prompt_tokens if generation else 0, generation.completion_tokens if generation else 0,
             "timeout", _elapsed_ms(req))


def _failed(req: _Request, exc: BaseException) -> GenerationFailed:
    """A generation that raised: logged, counted (``finish="error"``) and published with ``finish_reason``
    ``error`` (the canary's error rate counts it); the 500 the client gets names the version and why."""
    _count(req, "error")
    log.error("generation by %s %s failed", req.services.settings.model_name, req.loaded.version, exc_info=exc)
    why = f"{type(exc).__name__}: {exc}"[:300]
    _publish(req, req.prediction_id, req.loaded, req.variant, "", 0, 0, "error", _elapsed_ms(req), error=why)
    return GenerationFailed(f"prediction {req.prediction_id}: version {req.loaded.version} failed ({why})")


def _admit(pool: GenerationPool, req: _Request, job: Callable[[], T]) -> Future[T]:
    try:
        return pool.submit(job)
    except Overloaded:
        _count(req, "overloaded")
        raise


def _run(req: _Request) -> Generation:
    if time.monotonic() >= req.deadline:
        raise GenerationTimeout("the deadline passed in the queue")
    started = time.perf_counter()
    [generation] = req.generator.generate([req.prompt], max_new_tokens=req.body.max_tokens,
                                          temperature=req.body.temperature, stop=tuple(req.body.stop))
    _observe(req, time.perf_counter() - started)
    return generation


def _observe(req: _Request, seconds: float) -> None:
    metrics, model = req.services.metrics, req.services.settings.model_name
    metrics.generate_seconds.labels(model, req.loaded.version, req.variant).observe(seconds)
    p95 = _pool(req.services).latency.add(model, req.loaded.version, seconds)
    metrics.generate_p95.labels(model, req.loaded.version).set(p95)
    metrics.generate_threads.labels(model).set(req.services.generate_threads)


def _count(req: _Request, outcome: str, variant: str | None = None) -> None:
    req.services.metrics.generate_outcomes.labels(req.services.settings.model_name, variant or req.variant,
                                                  outcome).inc()


def _elapsed_ms(req: _Request) -> float:
    return (time.monotonic() - req.arrived) * 1000


def _token_counts(req: _Request, text: str) -> tuple[int, int]:
    """A stream's token counts, by the base model's tokenizer: the completion exactly as re-encoded, the
    prompt without the chat template's tokens (the kind formats it; a stream does not report it)."""
    tokenizer = load_base(str(req.generator.params.get("base", SMOLLM2)), req.services.settings.data_dir).tokenizer
    prompt = " ".join(p for p in (req.prompt.persona, req.prompt.context, req.prompt.prompt) if p)
    return (len(tokenizer.encode(prompt, add_special_tokens=False)),
            len(tokenizer.encode(text, add_special_tokens=False)) if text else 0)


def _answer(req: _Request, text: str, prompt_tokens: int, completion_tokens: int, finish: Finish,
            latency_ms: float) -> GenerationPublic:
    variant: Literal["champion", "canary"] = "canary" if req.variant == "canary" else "champion"
    return GenerationPublic(
        prediction_id=req.prediction_id, text=text, model=req.services.settings.model_name,
        model_version=req.loaded.version, semver=req.loaded.served.semver, variant=variant,
        latency_ms=latency_ms, prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
        finish_reason=finish)


def _served(req: _Request, answer: GenerationPublic) -> None:
    services = req.services
    _count(req, answer.finish_reason)
    model = services.settings.model_name
    services.metrics.generate_tokens.labels(model, "prompt").inc(answer.prompt_tokens)
    services.metrics.generate_tokens.labels(model, "completion").inc(answer.completion_tokens)
    services.metrics.predictions.labels(answer.variant, f"{model}:{answer.model_version}").inc()
    if services.first_serves is not None:  # data-to-deploy: the first answer of a version (as a predict's)
        services.first_serves.served(model, answer.model_version)
    _publish(req, answer.prediction_id, req.loaded, req.variant, answer.text, answer.prompt_tokens,
             answer.completion_tokens, answer.finish_reason, answer.latency_ms)


def _publish(req: _Request, pid: str, loaded: LoadedModel, variant: Variant, text: str, prompt_tokens: int,
             completion_tokens: int, finish: Finish | Literal["error"], latency_ms: float,
             error: str | None = None) -> None:
    services, body = req.services, req.body
    try:
        event = PredictionEventV2(
            ts=datetime.now(UTC), prediction_id=pid, model=services.settings.model_name,
            model_version=loaded.version, variant=variant,
            input=GenerationInput(prompt=body.prompt, context=body.context, persona=body.persona),
            output=GenerationOutput(text=text, prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
                                    finish_reason=finish, error=error),
            latency_ms=latency_ms, user_id=body.user_id, domain=body.domain, segment=body.segment)
    except ValidationError as exc:
        services.metrics.events_dropped.labels("invalid_event").inc()
        log.warning("prediction %s not publishable: %s", pid, exc)
        return
    services.publisher.publish(event)


def _shadow(req: _Request) -> None:
    """The shadow answers a copy once the request's own generation is done, on a worker that is idle
    (never ahead of a request: when every worker is busy the copy is skipped and counted as ``skipped``);
    its event's prediction id is ``<served id>-shadow``. Submitting does not wait: off the request path."""
    shadow = req.services.runtime.deployment.shadow
    if shadow is None or not isinstance(shadow.model, GeneratorKind):
        return
    generator = shadow.model

    def job() -> None:
        started = time.perf_counter()
        try:
            [g] = generator.generate([req.prompt], max_new_tokens=req.body.max_tokens,
                                     temperature=req.body.temperature, stop=tuple(req.body.stop))
        except Exception:  # a shadow failure must never surface anywhere but the log and its counter
            _count(req, "error", "shadow")
            log.exception("shadow %s failed", shadow.version)
            return
        seconds = time.perf_counter() - started
        model = req.services.settings.model_name
        req.services.metrics.generate_seconds.labels(model, shadow.version, "shadow").observe(seconds)
        finish: Finish = "length" if g.finish_reason == "length" else "stop"
        _count(req, finish, "shadow")
        req.services.metrics.predictions.labels("shadow", f"{model}:{shadow.version}").inc()
        _publish(req, f"{req.prediction_id}-shadow", shadow, "shadow", g.text, g.prompt_tokens, g.completion_tokens,
                 finish, seconds * 1000)

    try:
        _pool(req.services).submit(job, idle_only=True)
    except Overloaded:
        _count(req, "skipped", "shadow")


def _pool(services: Services) -> GenerationPool:
    return services.generation


def _sse(event: str, data: dict[str, Any]) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()
