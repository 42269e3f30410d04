"""``create_app(store)``: the subset of Confluent's Schema Registry REST API that the
``confluent_kafka.schema_registry`` client uses, on any :class:`SchemaStore`.

Every error is Confluent-shaped: ``{"error_code": int, "message": str}`` with the matching HTTP status
(404 for 404xx, 409, 422 for 422xx, 500 for 50001), including unknown routes and malformed bodies.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from core.exceptions import FlywheelError
from schemas.registry._global_routes import router as global_router
from schemas.registry._http import RegistryJSONResponse
from schemas.registry._subject_routes import router as subject_router
from schemas.registry.base import CompatibilityCheck, SchemaStore
from schemas.registry.compat import CompatibilityChecker
from schemas.registry.exceptions import SchemaRegistryError

log = logging.getLogger(__name__)


def _error(status: int, code: int, message: str) -> JSONResponse:
    return RegistryJSONResponse({"error_code": code, "message": message}, status_code=status)


async def _registry_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, SchemaRegistryError)
    if exc.http_status >= 500:  # %a: a path or a message quoting client input is logged escaped
        log.warning("schema registry store error on %s %a: %a", request.method, request.url.path, str(exc))
    return _error(exc.http_status, exc.error_code, exc.message)


async def _flywheel_error(request: Request, exc: Exception) -> JSONResponse:
    log.warning("schema registry error on %s %a: %a", request.method, request.url.path, str(exc))
    return _error(500, 50001, f"Error in the backend data store: {exc}")


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    return _error(exc.status_code, exc.status_code, f"HTTP {exc.status_code} {exc.detail}")


async def _invalid_request(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    details = "; ".join(f"{'.'.join(map(str, e.get('loc', ())))}: {e.get('msg', '')}" for e in exc.errors())
    return _error(422, 422, f"Unprocessable request: {details}")


def create_app(store: SchemaStore, *, checker: CompatibilityCheck | None = None) -> FastAPI:
    """The registry app on ``store``; ``checker`` decides compatibility (default:
    :class:`CompatibilityChecker` with Flywheel's lenient open-content rule)."""
    app = FastAPI(
        title="Flywheel schema registry",
        default_response_class=RegistryJSONResponse,
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
    )
    app.state.store = store
    app.state.checker = checker if checker is not None else CompatibilityChecker()
    app.add_exception_handler(SchemaRegistryError, _registry_error)
    app.add_exception_handler(FlywheelError, _flywheel_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _invalid_request)

    @app.get("/")
    def root() -> dict[str, str]:
        return {}

    app.include_router(subject_router)
    app.include_router(global_router)
    return app
