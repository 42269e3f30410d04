"""The serving API: ``create_app(settings)`` builds it, ``serve(settings, stop_event)`` runs it.

Routes stay thin: validation, one call into :mod:`serving._predict` / the runtime / the producers, and a
``*Public`` body. Every error leaves as ``{error, detail}`` JSON."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import AsyncIterator, Mapping

import psycopg
import uvicorn
from fastapi import BackgroundTasks, FastAPI, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Receive, Scope, Send

from core.db import session_connector
from core.exceptions import ConfigError
from core.kafka import KafkaConnection
from core.settings import FlywheelSettings
from registry import ModelRegistry, open_from_settings
from serving import _predict
from serving._openapi import install_openapi
from serving.admin import install_admin_routes
from serving.control import Admin
from serving.deps import MetricsDep, RegistryDep, RuntimeDep, ServicesDep, SettingsDep
from serving.exceptions import NotReady, ServingError
from serving.fastpath import PodApp
from serving.first_serve import FirstServes
from serving.metrics import ServingMetrics
from serving.models import (
    BatchCreate,
    BatchPublic,
    ErrorPublic,
    FeedbackCreate,
    FeedbackPublic,
    ModelsPublic,
    PredictCreate,
    PredictionPublic,
    ReadyPublic,
    StatusPublic,
)
from serving.pod import DeclaredModels, Pod
from serving.publisher import FeedbackPublisher, PredictionPublisher
from serving.routes_v1 import install_v1_routes
from serving.services import Services
from serving.views import models_public, ready_public
from streams.exceptions import StreamError
from tasks import ModelSpec, ModelStore

log = logging.getLogger(__name__)
ERRORS: dict[int | str, dict[str, object]] = {
    code: {"model": ErrorPublic} for code in (422, 503)}
ROUTES = frozenset({"/predict", "/predict/batch", "/feedback", "/models", "/health", "/ready", "/metrics",
                    "/retrain", "/evaluate", "/models/{version}/promote", "/models/rollback", "/bootstrap",
                    "/review/next", "/review/label", "/training/{job_id}", "/v1/models", "/v1/models/{name}",
                    "/v1/models/{name}/predict", "/v1/models/{name}/predict/batch", "/v1/models/{name}/feedback",
                    "/v1/models/{name}/generate", "/v1/models/{name}/retrain", "/v1/models/{name}/evaluate",
                    "/v1/models/{name}/versions/{version}/promote", "/v1/models/{name}/rollback",
                    "/v1/models/{name}/bootstrap", "/v1/models/{name}/review/next", "/v1/models/{name}/review/label",
                    "/v1/models/{name}/training/{job_id}"})


def create_app(settings: FlywheelSettings, *, registry: ModelRegistry | None = None,
               publisher: PredictionPublisher | None = None, feedback: FeedbackPublisher | None = None,
               metrics: ServingMetrics | None = None, kafka: KafkaConnection | None = None,
               database_url: str | None = None,
               watch: bool = True) -> FastAPI:
    """The app; nothing connects until its lifespan starts (registry, producers, the models watcher).
    Collaborators not given are built from settings: ``kafka`` defaults to ``settings.kafka_connection()``
    and the registry to the platform's (``database_url`` or ``settings.database_url``)."""
    metrics = metrics or ServingMetrics()
    kafka = kafka or settings.kafka_connection()

    url = database_url or (settings.database_url.get_secret_value() if settings.database_url else None)

    def open_services() -> tuple[Pod, DeclaredModels | None]:
        found = registry
        if found is None:
            if url is None:
                raise ConfigError("serving needs the registry: FLYWHEEL_DATABASE_URL or FLYWHEEL_REGISTRY_URI")
            found = open_from_settings(settings, url)
        default = Services.build(settings, metrics, kafka, found, publisher, feedback, watch)
        if url is not None:
            default.first_serves = FirstServes(session_connector(url), metrics)
        pod = Pod(default)
        if url is None or registry is not None:  # an injected registry serves its one model (tests)
            return pod, None
        database_url = url

        def build(spec: ModelSpec) -> Services:
            model_settings = settings.model_copy(update={"model_name": spec.name, "labels": spec.labels})
            return Services.build(settings, metrics, kafka, open_from_settings(model_settings, database_url),
                                  watch=watch, spec=spec, shared=default)

        for spec in hosted_specs(settings, url):
            if spec.name == settings.model_name:
                default.spec = spec
                continue
            pod.others[spec.name] = build(spec)
        declared = DeclaredModels(pod, lambda: hosted_specs(settings, database_url), build, settings.models_refresh_s,
                                  added=lambda services: admin_for(app, services))
        return pod, declared

    def open_admin(services: Services) -> Admin | None:
        if settings.admin_token is None:
            return None
        if url is None:
            log.warning("admin routes are off: FLYWHEEL_ADMIN_TOKEN is set but there is no database URL")
            return None
        return Admin.open(settings, kafka, url, services.registry)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        pod, declared = await run_in_threadpool(open_services)
        pod.start()
        app.state.pod, app.state.services = pod, pod.default
        app.state.admin = await run_in_threadpool(open_admin, pod.default)
        app.state.admins = {}  # /v1/models/{name}/... admin routes, one per hosted model
        for services in pod.hosted.values():
            admin_for(app, services)
        if declared is not None:
            declared.start()
        try:
            yield
        finally:
            if declared is not None:
                await run_in_threadpool(declared.stop)
            if app.state.admin is not None:
                app.state.admin.close()
            await run_in_threadpool(pod.close)

    app = PodApp(title="Flywheel serving", version="1", lifespan=lifespan)
    app.fast_path = settings.predict_fast_path
    app.state.settings, app.state.metrics = settings, metrics
    _install_handlers(app, metrics)
    _install_routes(app)
    install_v1_routes(app)
    install_admin_routes(app, settings)
    install_openapi(app, settings)
    return app


def admin_for(app: FastAPI, services: Services) -> None:
    """Give a hosted model its ``/v1/models/{name}/...`` admin actions (none when admin routes are off)."""
    admin: Admin | None = app.state.admin
    if admin is None:
        return
    name = services.settings.model_name
    own = admin if name == admin.settings.model_name else admin.for_model(services.settings, services.registry)
    app.state.admins = {**app.state.admins, name: own}


def hosted_specs(settings: FlywheelSettings, database_url: str) -> list[ModelSpec]:
    """The declared models this pod hosts: ``FLYWHEEL_SERVE_MODELS``, else every declared model. A name
    that is not declared stops the pod with a clear error."""
    try:
        with session_connector(database_url)() as conn:
            specs = {spec.name: spec for spec in ModelStore(conn).all()}
    except psycopg.Error as exc:
        raise ConfigError(f"cannot read the declared models: {' '.join(str(exc).split())}") from exc
    if not settings.serve_models:
        return list(specs.values())
    unknown = sorted(set(settings.serve_models) - set(specs) - {settings.model_name})
    if unknown:
        raise ConfigError(f"FLYWHEEL_SERVE_MODELS names undeclared models {unknown}; declared: {sorted(specs)}")
    return [specs[name] for name in dict.fromkeys(settings.serve_models) if name in specs]  # each name once


def _install_routes(app: FastAPI) -> None:
    @app.post("/predict", response_model=PredictionPublic, responses=ERRORS)
    async def predict(body: PredictCreate, request: Request, background: BackgroundTasks,
                      services: ServicesDep) -> PredictionPublic:
        _predict.check_text(body.text, services.settings)
        [result] = await _predict.serve([body], services, background)
        request.state.variant = result.variant
        return result

    @app.post("/predict/batch", response_model=BatchPublic, responses=ERRORS)
    async def predict_batch(body: BatchCreate, background: BackgroundTasks, services: ServicesDep) -> BatchPublic:
        for i, item in enumerate(body.items):
            _predict.check_text(item.text, services.settings, f"items.{i}.text")
        return BatchPublic(predictions=await _predict.serve(body.items, services, background))

    @app.post("/feedback", status_code=202, response_model=FeedbackPublic, responses=ERRORS)
    async def post_feedback(body: FeedbackCreate, services: ServicesDep) -> FeedbackPublic:
        return _predict.send_feedback(body, services)

    @app.get("/models", response_model=ModelsPublic)
    def models(settings: SettingsDep, runtime: RuntimeDep, registry: RegistryDep) -> ModelsPublic:
        return models_public(settings.model_name, registry, runtime)

    @app.get("/health", response_model=StatusPublic)
    async def health() -> StatusPublic:
        return StatusPublic(status="alive")

    @app.get("/ready", response_model=ReadyPublic, responses=ERRORS)
    async def ready(runtime: RuntimeDep) -> ReadyPublic:
        """``ready``; ``degraded`` (still 200: the pod answers) when an earlier champion stands in for an
        announced one that failed to load or verify; 503 while no model is loaded."""
        status = ready_public(runtime)
        if status is None:
            raise NotReady("no champion model is loaded yet")
        return status

    @app.get("/metrics", include_in_schema=False)
    async def metrics_text(metrics: MetricsDep) -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)


def _install_handlers(app: FastAPI, metrics: ServingMetrics) -> None:
    def error(status: int, code: str, detail: str, headers: Mapping[str, str] | None = None) -> JSONResponse:
        return JSONResponse({"error": code, "detail": detail}, status_code=status, headers=headers)

    @app.exception_handler(ServingError)
    async def serving_error(_request: Request, exc: ServingError) -> JSONResponse:
        return error(exc.status, exc.code, exc.detail, exc.headers())

    @app.exception_handler(StreamError)
    async def stream_error(_request: Request, exc: StreamError) -> JSONResponse:
        return error(503, "kafka_unavailable", str(exc), {"Retry-After": "1"})

    @app.exception_handler(RequestValidationError)
    async def invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        parts = [f"{'.'.join(str(p) for p in e['loc'] if p != 'body') or 'body'}: {e['msg']}" for e in exc.errors()]
        return error(422, "invalid_request", "; ".join(parts))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return error(exc.status_code, "http_error", str(exc.detail), exc.headers)  # a 405's Allow

    @app.exception_handler(Exception)
    async def unexpected(_request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error", exc_info=exc)
        return error(500, "internal_error", type(exc).__name__)

    app.add_middleware(_Timed, metrics=metrics)


class _Timed:
    """Request latency per route template and variant (``request.state.variant``, set by the predict routes), as
    a plain ASGI middleware: no per-request task and body streaming like ``@app.middleware("http")``."""

    def __init__(self, app: ASGIApp, metrics: ServingMetrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        try:
            await self.app(scope, receive, send)
        finally:
            # the matched route's template (a model's routes by template, not one series per model name)
            template = getattr(scope.get("route"), "path", scope["path"])
            path = template if template in ROUTES else "other"
            variant = scope.get("state", {}).get("variant", "none")
            self.metrics.request_latency.labels(path, variant).observe(time.perf_counter() - started)


def serve(settings: FlywheelSettings, stop_event: threading.Event, *, port: int | None = None,
          host: str = "127.0.0.1", app: FastAPI | None = None) -> None:
    """Run the API with uvicorn until ``stop_event`` is set. ``port`` defaults to ``settings.serving_port``
    (``FLYWHEEL_SERVING_PORT``, 8000)."""
    config = uvicorn.Config(app or create_app(settings), host=host,
                            port=settings.serving_port if port is None else port, log_level="info",
                            log_config=None)  # uvicorn's records go through the process's logging set-up
    server = uvicorn.Server(config)

    def watch() -> None:
        stop_event.wait()
        server.should_exit = True

    threading.Thread(target=watch, name="flywheel-serve-stop", daemon=True).start()
    server.run()
    if not server.started and not stop_event.is_set():
        raise ServingError(f"the serving API did not start on {host}:{config.port} (see the log above)")
