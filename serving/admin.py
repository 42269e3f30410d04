"""The admin routes, behind a bearer token (``FLYWHEEL_ADMIN_TOKEN``): the CLI's lifecycle commands over
HTTP. A pod never trains: ``/retrain``, ``/bootstrap`` and ``/evaluate`` record a request in Postgres and
publish it on the retrain topic (any trainer takes it, once), answering 202 with its id at once;
``GET /training/{id}`` follows it from any pod. Promote and rollback move an alias and announce it.

A pod without a token refuses every admin route with 403; a wrong or missing token is a 401, answered before
the request body is read (:class:`AdminAuth`)."""

from __future__ import annotations

import hmac
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, cast

from fastapi import APIRouter, Depends, FastAPI, Path, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from core.settings import FlywheelSettings
from kinds.catalog import KINDS
from registry import CHALLENGER, CHAMPION, ModelRegistry
from schemas import ModelEvent, RetrainRequest
from schemas.exceptions import InvalidEvent
from serving.control import Admin, translated
from serving.deps import AdminDep, ServicesDep
from serving.exceptions import (
    AdminDisabled,
    Conflict,
    InvalidInput,
    NotFound,
    NotReady,
    ServingError,
    Unauthorized,
)
from serving.models import (
    NO_NUL,
    BootstrapCreate,
    ErrorPublic,
    EvaluateCreate,
    FeedbackPublic,
    ModelEventPublic,
    PromoteCreate,
    RetrainCreate,
    RetrainPublic,
    ReviewItemPublic,
    ReviewLabelCreate,
    ReviewPublic,
    RollbackCreate,
    TrainingPublic,
)
from serving.routes_v1 import ModelName, get_pod
from serving.services import Services

ADMIN_ERRORS: dict[int | str, dict[str, object]] = {
    code: {"model": ErrorPublic} for code in (401, 403, 404, 409, 422, 503)}


bearer = HTTPBearer(auto_error=False, description="FLYWHEEL_ADMIN_TOKEN")


def check_token(settings: FlywheelSettings, authorization: str | None) -> None:
    """Raise unless ``authorization`` (the header's value) is ``Bearer <FLYWHEEL_ADMIN_TOKEN>``."""
    if settings.admin_token is None:
        raise AdminDisabled("admin routes are off on this pod: FLYWHEEL_ADMIN_TOKEN is not set")
    scheme, _, token = (authorization or "").strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("this route needs `Authorization: Bearer <FLYWHEEL_ADMIN_TOKEN>`")
    if not hmac.compare_digest(token.strip().encode(), settings.admin_token.get_secret_value().encode()):
        raise Unauthorized("the bearer token is not this pod's admin token")


def require_token(request: Request,
                  _credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> None:
    """The route-level check (and the OpenAPI security scheme); :class:`AdminAuth` ran it before the body
    was read."""
    check_token(cast(FlywheelSettings, request.app.state.settings), request.headers.get("authorization"))


class AdminAuth:
    """Authenticates admin routes before anything reads the request body, as plain ASGI middleware: an
    unauthenticated request gets its 401 (or 403 when admin routes are off), never a 400/422 about a body
    it had no right to send."""

    def __init__(self, app: ASGIApp, settings: FlywheelSettings, paths: Sequence[re.Pattern[str]]) -> None:
        self.app, self.settings, self.paths = app, settings, paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and any(p.match(scope["path"]) for p in self.paths):
            try:
                check_token(self.settings, Headers(scope=scope).get("authorization"))
            except ServingError as exc:
                response = JSONResponse({"error": exc.code, "detail": exc.detail}, exc.status, exc.headers())
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


@dataclass(frozen=True)
class Target:
    """The model an admin route acts on: its admin actions and its serving services (whose settings are the
    model's own: name, labels, task)."""

    admin: Admin
    services: Services
    named: bool  # reached by name: its feedback events name it (schema version 2), as /v1/models/{name}/feedback

    @property
    def settings(self) -> FlywheelSettings:
        return self.services.settings

    @property
    def name(self) -> str:
        return self.services.settings.model_name


async def default_target(admin: AdminDep, services: ServicesDep) -> Target:
    """The pod's default model (the unprefixed routes)."""
    return Target(admin, services, named=False)


async def named_target(name: ModelName, request: Request, _on: AdminDep) -> Target:
    """A hosted model by name (``/v1/models/{name}/...``); a name the pod does not host is a 404 (and any
    name a 403 while admin routes are off: ``AdminDep``)."""
    services = (await get_pod(request)).get(name)
    own = cast(dict[str, Admin], getattr(request.app.state, "admins", {})).get(name)
    if own is None:  # hosted a moment ago: its admin actions are being added
        raise NotReady(f"model {name!r} is starting on this pod")
    return Target(own, services, named=True)


Version = Annotated[str, Path(min_length=1, max_length=100, pattern=NO_NUL)]
JobId = Annotated[str, Path(min_length=1, max_length=200, pattern=NO_NUL)]


def install_admin_routes(app: FastAPI, settings: FlywheelSettings) -> None:
    """The admin routes twice: unprefixed for the pod's default model, and under ``/v1/models/{name}`` for
    any model the pod hosts (the same actions, checks and answers)."""
    router = APIRouter(tags=["admin"], dependencies=[Depends(require_token)], responses=ADMIN_ERRORS)
    _install(router, "", "/models/{version}/promote", "/models/rollback", default_target)
    _install(router, "/v1/models/{name}", "/v1/models/{name}/versions/{version}/promote",
             "/v1/models/{name}/rollback", named_target)
    app.include_router(router)
    paths = [route.path_regex for route in router.routes if isinstance(route, APIRoute)]
    app.add_middleware(AdminAuth, settings=settings, paths=paths)


def _install(router: APIRouter, prefix: str, promote_path: str, rollback_path: str,
             resolve: Callable[..., Awaitable[Target]]) -> None:
    """One set of admin routes under ``prefix``; ``resolve`` (a dependency) finds the model they act on."""
    on_model: Target = Depends(resolve)  # a default, not Annotated: the string annotation could not name a local

    @router.post(f"{prefix}/retrain", status_code=202, response_model=RetrainPublic)
    def retrain(body: RetrainCreate, target: Target = on_model) -> RetrainPublic:
        """``force_deploy`` (generators only) travels in the request's Postgres row, not on the topic: only an
        authenticated admin request can force a deploy."""
        if body.force_deploy and target.services.task != "text-generation":
            raise Conflict(f"force_deploy is for text-generation models; {target.name!r} is a "
                           f"{target.services.task} model, which deploys only past its gates")
        request = RetrainRequest(ts=datetime.now(UTC), model=target.name, mode=body.mode,
                                 trigger="admin", reason=body.reason)
        params = {"mode": body.mode, "force_deploy": True} if body.force_deploy else {"mode": body.mode}
        target.admin.submit(request, params)  # a Kafka failure is a 503 (the StreamError handler)
        return RetrainPublic(request_id=request.request_id, status="queued")

    @router.post(f"{prefix}/evaluate", status_code=202, response_model=TrainingPublic)
    def evaluate(target: Target = on_model, body: EvaluateCreate | None = None) -> TrainingPublic:
        """The gate report of a version (default: the challenger, else the champion), made by a trainer:
        follow the returned id with ``GET /training/{id}`` to its ``evaluation``."""
        registry = target.admin.registry
        with translated():  # an unknown version (or no champion) is a 404 now, not a failed request later
            info = registry.get(body.version if body and body.version else _default_ref(registry))
        request = RetrainRequest(ts=datetime.now(UTC), model=target.name, action="evaluate",
                                 version=info.version, trigger="admin", reason=f"admin evaluate {info.semver}")
        target.admin.submit(request, {"version": info.version})
        return TrainingPublic(id=request.request_id, status="queued", action="evaluate",
                              request_id=request.request_id, trigger="admin", version=info.version)

    @router.post(promote_path, response_model=ModelEventPublic)
    def promote(version: Version, target: Target = on_model,
                body: PromoteCreate | None = None) -> ModelEventPublic:
        with translated():
            event = target.admin.actions.promote(version, (body or PromoteCreate()).reason)
        return _event(event)

    @router.post(rollback_path, response_model=ModelEventPublic)
    def rollback(target: Target = on_model, body: RollbackCreate | None = None) -> ModelEventPublic:
        body = body or RollbackCreate()
        with translated():
            event = target.admin.actions.rollback(body.to, body.reason)
        return _event(event)

    @router.post(f"{prefix}/bootstrap", status_code=202, response_model=TrainingPublic)
    async def bootstrap(body: BootstrapCreate, target: Target = on_model) -> TrainingPublic:
        """Train the first champion from ``rows``, on a trainer: the corpus is stored with the request in
        Postgres (never on Kafka); follow the returned id with ``GET /training/{id}``."""
        if target.services.task != "text-classification":
            raise Conflict(f"bootstrap over HTTP takes labelled texts; {target.name!r} is a {target.services.task} "
                           f"model: bootstrap it with `flywheel bootstrap --model {target.name}`")
        _check_corpus(body, target.settings)
        if not body.force:
            with translated():
                champion = await run_in_threadpool(target.admin.registry.champion)
            if champion is not None:
                raise Conflict(f"{target.name} already has a champion ({champion.semver}); "
                               "retrain with POST /retrain, or bootstrap with force=true")
        request = RetrainRequest(ts=datetime.now(UTC), model=target.name, action="bootstrap",
                                 trigger="admin", reason=f"admin bootstrap from {body.source}")
        params = {"rows": [[r.text.strip(), r.label, r.domain] for r in body.rows], "source": body.source,
                  "kind": body.kind, "holdout": body.holdout, "force": body.force}
        await run_in_threadpool(target.admin.submit, request, params)
        return TrainingPublic(id=request.request_id, status="queued", action="bootstrap",
                              request_id=request.request_id, trigger="bootstrap", mode="bootstrap")

    @router.get(f"{prefix}/review/next", response_model=ReviewPublic)
    def review_next(target: Target = on_model,
                    n: Annotated[int, Query(ge=1, le=500)] = 10,
                    reviewer: Annotated[str, Query(min_length=1, max_length=200, pattern=NO_NUL)] = "api",
                    ) -> ReviewPublic:
        """The unjudged predictions the model is least sure of (smallest top-two margin), claimed for
        ``reviewer`` for 10 minutes; answer each with ``POST /review/label`` (or ``POST /feedback``)."""
        from curation.review import ReviewQueue

        with translated(), target.admin.connect() as conn:
            items = ReviewQueue(conn, target.name).next(n, reviewer)
        return ReviewPublic(items=[ReviewItemPublic(**item.to_dict()) for item in items])

    @router.post(f"{prefix}/review/label", status_code=202, response_model=FeedbackPublic)
    def review_label(body: ReviewLabelCreate, target: Target = on_model) -> FeedbackPublic:
        if target.services.task == "text-generation":
            raise Conflict(f"{target.name!r} is a text-generation model: it is judged by ratings and corrections "
                           f"(POST /v1/models/{target.name}/feedback), not by a label")
        if body.label not in target.settings.labels:
            raise InvalidInput(f"label: {body.label!r} is not one of {list(target.settings.labels)}")
        from curation.review import ReviewQueue

        with translated(), target.admin.connect() as conn:
            found = ReviewQueue(conn, target.name).find(body.prediction_id)
        if found is None:
            raise NotFound(f"no prediction {body.prediction_id!r} of {target.name!r} has landed")
        try:
            event = target.services.feedback.feedback(
                body.prediction_id, label=body.label, user_id=f"review:{body.reviewer}", source="review",
                model=target.name if target.named else None)
        except InvalidEvent as exc:
            raise InvalidInput(str(exc)) from exc
        return FeedbackPublic(feedback_id=event.feedback_id)

    @router.get(f"{prefix}/training/{{job_id}}", response_model=TrainingPublic)
    def training(job_id: JobId, target: Target = on_model) -> TrainingPublic:
        """An admin request by the id its route returned, or a training run by its run id (any pod)."""
        return target.admin.training(job_id)


def _default_ref(registry: ModelRegistry) -> str:
    """What an evaluation without a version judges: the challenger, else the champion."""
    return CHALLENGER if CHALLENGER in registry.aliases() else CHAMPION


def _check_corpus(body: BootstrapCreate, settings: FlywheelSettings) -> None:
    """A 422 naming the first bad rows: an unknown kind, a label outside the label set, an empty text or
    one too long."""
    if body.kind not in KINDS:
        raise InvalidInput(f"kind: {body.kind!r} is not one of {sorted(KINDS)}")
    bad = [f"rows.{i}.label: {r.label!r}" for i, r in enumerate(body.rows) if r.label not in settings.labels]
    if bad:
        raise InvalidInput(f"{len(bad)} rows with a label outside {list(settings.labels)}: {'; '.join(bad[:5])}")
    limit = settings.max_text_chars
    texts = [f"rows.{i}.text" for i, r in enumerate(body.rows)
             if not r.text.strip() or len(r.text) > limit or not _utf8(r.text)]
    if texts:
        raise InvalidInput(f"{len(texts)} rows with an empty text, one over {limit} characters or one that is "
                           f"not UTF-8: {'; '.join(texts[:5])}")


def _utf8(text: str) -> bool:
    """Postgres stores the corpus: a lone surrogate (JSON allows ``\\ud800``) is refused at the door."""
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def _event(event: ModelEvent) -> ModelEventPublic:
    return ModelEventPublic(action=event.action, model=event.model, version=event.version, semver=event.semver,
                            previous_version=event.previous_version, traffic=event.traffic, reason=event.reason)
