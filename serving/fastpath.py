"""The single-item predict routes answered before FastAPI's middleware stack and router.

``POST /predict`` and ``POST /v1/models/{name}/predict`` are what a pod serves all day; through FastAPI each
request also crosses eight middleware layers, the router, dependency solving and a second validation of the
response (measured on a MiniLM pod with one client: ~0.5 ms of ~9 ms of CPU a request; at eight clients
~10% more requests a second without them). :class:`PodApp` answers those two routes itself when a request
is well formed, with what the routes would answer:

* the body is parsed as FastAPI does (``json.loads`` when the content type is ``application/json`` or
  ``application/*+json``) and validated by the same models (:class:`~serving.models.PredictCreate`, or
  the task-typed union of the v1 route), then checked by the same functions of :mod:`serving._predict`;
* the response is the same bytes (``PredictionPublic`` serialised by pydantic, as FastAPI's ``dump_json``
  path does) with the same headers; the shadow's copy runs after the response, as a background task would;
* an error raised while serving is rendered by the app's own exception handlers, and the request latency
  is recorded under the route's template and variant, as :class:`serving.app._Timed` does.

Anything else, and any request that fails before it is served (bad JSON, a body the model refuses, an
unknown model, a pod still starting, a body over ``max_body_size``), goes through FastAPI unchanged, its
body replayed: the answer is then FastAPI's own, and nothing was published. ``FLYWHEEL_PREDICT_FAST_PATH=false``
routes every request through FastAPI."""

from __future__ import annotations

import inspect
import json
import re
import time

from fastapi import BackgroundTasks, FastAPI
from pydantic import TypeAdapter
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Message, Receive, Scope, Send

from serving import _predict
from serving.models import ModelPredictCreate, PredictCreate, PredictionPublic
from serving.services import Services

_V1_PREDICT = re.compile(r"/v1/models/([A-Za-z0-9._-]{1,100})/predict")  # the route's path and ModelName
_ITEM = TypeAdapter(ModelPredictCreate)
_JSON_TYPES = re.compile(r"application/(json|[^;/\s]+\+json)\s*(;.*)?", re.IGNORECASE)


class _Refer(Exception):
    """The request is not one the fast path answers: FastAPI gets it (nothing has happened yet)."""


class PodApp(FastAPI):
    """The serving app: FastAPI, with the single-item predict routes answered first (see the module)."""

    fast_path = True

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.fast_path and scope["type"] == "http" and scope["method"] == "POST" and not scope.get("root_path"):
            path = scope["path"]
            if path == "/predict":
                await self._predict(scope, receive, send, None)
                return
            if path.startswith("/v1/models/") and (match := _V1_PREDICT.fullmatch(path)) is not None:
                await self._predict(scope, receive, send, match.group(1))
                return
        await super().__call__(scope, receive, send)

    async def _predict(self, scope: Scope, receive: Receive, send: Send, name: str | None) -> None:
        """One predict request: the default model's (``name`` None) or a hosted model's by name."""
        started = time.perf_counter()
        body, replay = await _read(scope, receive, self.max_body_size)
        try:
            services, item = self._item(scope, body, name)
        except Exception:  # not served here, nothing has happened: FastAPI answers it
            await super().__call__(scope, replay, send)
            return
        variant, background = "none", BackgroundTasks()
        try:
            [result] = await _predict.serve([item], services, background)
            variant = result.variant
            response = Response(PredictionPublic.__pydantic_serializer__.to_json(result, by_alias=True),
                                media_type="application/json")
        except Exception as exc:  # every error leaves as the app's handlers render it
            response, background = await self._handled(scope, replay, exc), BackgroundTasks()
        try:
            await response(scope, replay, send)
        finally:
            template = "/predict" if name is None else "/v1/models/{name}/predict"
            services.metrics.request_latency.labels(template, variant).observe(time.perf_counter() - started)
        await background()

    def _item(self, scope: Scope, body: bytes | None, name: str | None) -> tuple[Services, ModelPredictCreate]:
        """The checked item and its model's services; raises on anything FastAPI should answer instead."""
        pod = getattr(self.state, "pod", None)
        if body is None or pod is None or not _json_body(scope):
            raise _Refer
        if name is None:
            services: Services = pod.default
            item = PredictCreate.model_validate(json.loads(body))
            _predict.check_text(item.text, services.settings)
            return services, item
        services = pod.get(name)
        return services, _predict.check_item(_ITEM.validate_python(json.loads(body)), services)

    async def _handled(self, scope: Scope, receive: Receive, exc: Exception) -> Response:
        """``exc`` as the app's exception handlers answer it, the most specific class first as Starlette
        looks them up (``Exception``'s handler takes the rest)."""
        for cls in type(exc).__mro__:
            handler = self.exception_handlers.get(cls)
            if handler is not None:
                response = handler(Request(scope, receive), exc)
                return await response if inspect.isawaitable(response) else response
        raise exc


async def _read(scope: Scope, receive: Receive, limit: int | None) -> tuple[bytes | None, Receive]:
    """The whole request body (None when the client went away or it passes ``limit``) and a ``receive``
    that hands FastAPI the same messages, then whatever the connection sends next (a disconnect)."""
    messages: list[Message] = []
    size = 0
    while True:
        message = await receive()
        messages.append(message)
        if message["type"] != "http.request":
            return None, _replay(messages, receive)
        size += len(message.get("body", b""))
        if limit is not None and size > limit:
            return None, _replay(messages, receive)
        if not message.get("more_body", False):
            return b"".join(m.get("body", b"") for m in messages), _replay(messages, receive)


def _replay(messages: list[Message], receive: Receive) -> Receive:
    """``receive`` that gives ``messages`` first (consumed: they are not read twice)."""

    async def replay() -> Message:
        return messages.pop(0) if messages else await receive()

    return replay


def _json_body(scope: Scope) -> bool:
    """Whether FastAPI reads this body as JSON: an ``application`` JSON content type (its routes' default
    ``strict_content_type``: a body without a content type is not JSON to them)."""
    for name, value in scope["headers"]:
        if name == b"content-type":
            return _JSON_TYPES.fullmatch(value.decode("latin-1").strip()) is not None
    return False
