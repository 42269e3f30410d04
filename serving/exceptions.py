"""Errors of the ``serving`` package; each maps to one HTTP status and carries what the caller needs."""

from __future__ import annotations

from core.exceptions import FlywheelError


class ServingError(FlywheelError):
    """Base of the serving package's errors. ``status`` and ``code`` shape the ``{error, detail}`` body."""

    status: int = 500
    code: str = "serving_error"

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail

    def headers(self) -> dict[str, str] | None:
        """Extra response headers (``Retry-After``, ``WWW-Authenticate``)."""
        return None


class InvalidInput(ServingError):
    """A request the API refuses (empty or too long text, an unknown label, ...)."""

    status = 422
    code = "invalid_request"


class NotReady(ServingError):
    """No champion is loaded yet: the pod cannot answer predictions."""

    status = 503
    code = "not_ready"


class QueueFull(ServingError):
    """The producer's local queue is full (the broker is slow or away); try again after ``retry_after``."""

    status = 503
    code = "queue_full"

    def __init__(self, detail: str, retry_after: float = 1.0) -> None:
        super().__init__(detail)
        self.retry_after = retry_after

    def headers(self) -> dict[str, str] | None:
        return {"Retry-After": str(max(1, int(self.retry_after)))}


class ModelLoadError(ServingError):
    """``version`` could not be loaded (registry unreachable, artifact missing, unknown kind, ...)."""

    code = "model_load_failed"

    def __init__(self, version: str, detail: str) -> None:
        super().__init__(f"version {version}: {detail}")
        self.version = version


class ChecksumMismatch(ModelLoadError):
    """The artifact's sha256 differs from the one announced in the ModelEvent or registered."""

    code = "checksum_mismatch"


class Unauthorized(ServingError):
    """An admin route called without the bearer token, or with a wrong one."""

    status = 401
    code = "unauthorized"

    def headers(self) -> dict[str, str] | None:
        return {"WWW-Authenticate": "Bearer"}


class AdminDisabled(ServingError):
    """An admin route on a pod without ``FLYWHEEL_ADMIN_TOKEN`` (or without a database to act on)."""

    status = 403
    code = "admin_disabled"


class NotFound(ServingError):
    """The version, run or request named in the path does not exist (yet)."""

    status = 404
    code = "not_found"


class Conflict(ServingError):
    """A request the current state refuses: a rollback with nothing to roll back to, a bootstrap over a
    champion without ``force``, a training run already under way."""

    status = 409
    code = "conflict"


class Unavailable(ServingError):
    """A dependency of an admin route (database, registry) is down; try again after ``Retry-After``."""

    status = 503
    code = "unavailable"

    def headers(self) -> dict[str, str] | None:
        return {"Retry-After": "1"}


class WrongTask(ServingError):
    """A route of another task: ``/predict`` on a generation model, ``/generate`` on a classifier."""

    status = 422
    code = "wrong_task"


class Overloaded(ServingError):
    """Every generation worker is busy and the waiting queue is full: try again after ``retry_after``
    seconds (429: the pod is healthy, it is at capacity)."""

    status = 429
    code = "overloaded"

    def __init__(self, detail: str, retry_after: float = 1.0) -> None:
        super().__init__(detail)
        self.retry_after = retry_after

    def headers(self) -> dict[str, str] | None:
        return {"Retry-After": str(max(1, round(self.retry_after)))}


class GenerationTimeout(ServingError):
    """The request's deadline passed before its generation finished (or started): 504, with a
    ``Retry-After`` of the pod's current wait."""

    status = 504
    code = "generation_timeout"

    def __init__(self, detail: str, retry_after: float = 1.0) -> None:
        super().__init__(detail)
        self.retry_after = retry_after

    def headers(self) -> dict[str, str] | None:
        return {"Retry-After": str(max(1, round(self.retry_after)))}


class GenerationFailed(ServingError):
    """The generator raised (logged with its traceback); counted as the variant's error."""

    code = "generation_failed"
