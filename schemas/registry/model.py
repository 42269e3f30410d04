"""Value types of the registry: a schema, a reference, a subject version and compatibility levels."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from schemas.registry.exceptions import InvalidCompatibilityLevel

SCHEMA_TYPES = ("AVRO", "JSON", "PROTOBUF")


class CompatibilityLevel(StrEnum):
    NONE = "NONE"
    BACKWARD = "BACKWARD"
    BACKWARD_TRANSITIVE = "BACKWARD_TRANSITIVE"
    FORWARD = "FORWARD"
    FORWARD_TRANSITIVE = "FORWARD_TRANSITIVE"
    FULL = "FULL"
    FULL_TRANSITIVE = "FULL_TRANSITIVE"

    @classmethod
    def parse(cls, value: object) -> CompatibilityLevel:
        """Case-insensitive parse; anything else is :class:`InvalidCompatibilityLevel` (42203)."""
        if isinstance(value, str):
            try:
                return cls(value.strip().upper())
            except ValueError:
                pass
        raise InvalidCompatibilityLevel(value)

    @property
    def transitive(self) -> bool:
        return self.value.endswith("_TRANSITIVE")

    @property
    def backward(self) -> bool:
        """The new schema must read data written with the old one(s)."""
        return self.value.startswith(("BACKWARD", "FULL"))

    @property
    def forward(self) -> bool:
        """The old schema(s) must read data written with the new one."""
        return self.value.startswith(("FORWARD", "FULL"))


DEFAULT_LEVEL = CompatibilityLevel.BACKWARD


@dataclass(frozen=True, slots=True)
class Reference:
    """A named reference to another subject's version (stored and returned, not resolved)."""

    name: str
    subject: str
    version: int

    def to_dict(self) -> dict[str, object]:
        return {"name": self.name, "subject": self.subject, "version": self.version}


@dataclass(frozen=True, slots=True)
class Schema:
    """Schema text as registered; ``schema_type`` is AVRO, JSON or PROTOBUF."""

    text: str
    schema_type: str = "JSON"
    references: tuple[Reference, ...] = field(default=())


@dataclass(frozen=True, slots=True)
class SubjectVersion:
    """One version of a subject: which schema (id) it points at and whether it is soft-deleted."""

    subject: str
    version: int
    schema_id: int
    schema: Schema
    deleted: bool = False
