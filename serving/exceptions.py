"""Errors of the ``serving`` package; each maps to one HTTP status and carries what the caller needs."""

from __future__ import annotations

from flywheel.exceptions import FlywheelError


class ServingError(FlywheelError):
    """Base of the serving package's errors. ``status`` and ``code`` shape the ``{error, detail}`` body."""

    status: int = 500
    code: str = "serving_error"

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


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


class ModelLoadError(ServingError):
    """``version`` could not be loaded (registry unreachable, artifact missing, unknown kind, ...)."""

    code = "model_load_failed"

    def __init__(self, version: str, detail: str) -> None:
        super().__init__(f"version {version}: {detail}")
        self.version = version


class ChecksumMismatch(ModelLoadError):
    """The artifact's sha256 differs from the one announced in the ModelEvent or registered."""

    code = "checksum_mismatch"
