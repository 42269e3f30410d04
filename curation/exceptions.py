"""Errors of the ``curation`` package."""

from __future__ import annotations

from core.exceptions import FlywheelError


class CurationError(FlywheelError):
    """Base of the curation package's errors (a bad config file, among others)."""


class CurationStoreError(CurationError):
    """Postgres refused or could not run a curation pass; ``retry_after`` is a sensible wait. Nothing of
    the failed batch was written (one transaction per batch)."""

    def __init__(self, detail: str, retry_after: float = 1.0) -> None:
        super().__init__(f"curation could not read or write Postgres: {detail}")
        self.retry_after = retry_after
