"""Errors of the schema registry. Each carries the Confluent ``error_code`` and HTTP status to answer with."""

from __future__ import annotations

from collections.abc import Sequence

from schemas.exceptions import SchemaError


class SchemaRegistryError(SchemaError):
    """Base of the registry's errors; ``error_code`` is Confluent's, ``http_status`` its HTTP status."""

    error_code = 50001
    http_status = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class SubjectNotFound(SchemaRegistryError):
    error_code, http_status = 40401, 404

    def __init__(self, subject: str) -> None:
        super().__init__(f"Subject '{subject}' not found.")
        self.subject = subject


class VersionNotFound(SchemaRegistryError):
    error_code, http_status = 40402, 404

    def __init__(self, subject: str, version: int | str) -> None:
        super().__init__(f"Version {version} not found for subject '{subject}'.")
        self.subject = subject
        self.version = version


class SchemaNotFound(SchemaRegistryError):
    error_code, http_status = 40403, 404


class SubjectSoftDeleted(SchemaRegistryError):
    error_code, http_status = 40404, 404

    def __init__(self, subject: str) -> None:
        super().__init__(f"Subject '{subject}' was soft deleted. Set permanent=true to delete permanently")
        self.subject = subject


class SubjectNotSoftDeleted(SchemaRegistryError):
    error_code, http_status = 40405, 404

    def __init__(self, subject: str) -> None:
        super().__init__(f"Subject '{subject}' was not deleted first before being permanently deleted")
        self.subject = subject


class VersionSoftDeleted(SchemaRegistryError):
    error_code, http_status = 40406, 404

    def __init__(self, subject: str, version: int) -> None:
        super().__init__(
            f"Subject '{subject}' Version {version} was soft deleted. "
            "Set permanent=true to delete permanently"
        )
        self.subject = subject
        self.version = version


class VersionNotSoftDeleted(SchemaRegistryError):
    error_code, http_status = 40407, 404

    def __init__(self, subject: str, version: int) -> None:
        super().__init__(
            f"Subject '{subject}' Version {version} was not deleted first before being permanently deleted"
        )
        self.subject = subject
        self.version = version


class SubjectConfigNotFound(SchemaRegistryError):
    error_code, http_status = 40408, 404

    def __init__(self, subject: str) -> None:
        super().__init__(f"Subject '{subject}' does not have subject-level compatibility configured")
        self.subject = subject


class IncompatibleSchema(SchemaRegistryError):
    """The schema breaks the subject's compatibility level; ``messages`` lists every incompatibility."""

    error_code, http_status = 409, 409

    def __init__(self, subject: str, messages: Sequence[str]) -> None:
        super().__init__(
            f'Schema being registered is incompatible with an earlier schema for subject "{subject}", '
            f"details: [{'; '.join(messages)}]"
        )
        self.subject = subject
        self.messages = list(messages)


class InvalidSchema(SchemaRegistryError):
    error_code, http_status = 42201, 422


class InvalidVersion(SchemaRegistryError):
    error_code, http_status = 42202, 422

    def __init__(self, version: str) -> None:
        super().__init__(
            f"The specified version '{version}' is not a valid version id. Allowed values are between "
            '[1, 2^31-1] and the string "latest"'
        )
        self.version = version


class InvalidSubject(SchemaRegistryError):
    """A subject name the registry cannot store (a control character: Postgres text cannot hold NUL)."""

    error_code, http_status = 42208, 422

    def __init__(self, subject: str) -> None:
        super().__init__(f"The specified subject {subject!a} is not valid: it contains a control character.")
        self.subject = subject


class InvalidCompatibilityLevel(SchemaRegistryError):
    error_code, http_status = 42203, 422

    def __init__(self, level: object) -> None:
        super().__init__(
            f"Invalid compatibility level {level!r}. Valid values are none, backward, forward, full, "
            "backward_transitive, forward_transitive, and full_transitive"
        )
        self.level = level


class SchemaStoreError(SchemaRegistryError):
    """The backing store failed (Postgres unreachable, query error); ``retry_after`` in seconds."""

    error_code, http_status = 50001, 500

    def __init__(self, message: str, retry_after: float = 1.0) -> None:
        super().__init__(f"Error in the backend data store: {message}")
        self.retry_after = retry_after


class ServerStartError(SchemaRegistryError):
    """The HTTP server did not come up (port taken, app failed) within its timeout."""

    def __init__(self, url: str, detail: str) -> None:
        super().__init__(f"schema registry at {url} did not start: {detail}")
        self.url = url
