"""The contract every event shares: a ``type`` discriminator, a schema version and a timestamp."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict


class Event(BaseModel):
    """Base of all events on Flywheel topics.

    ``type`` discriminates the union; ``schema_version`` is the major version inside the topic's ``.v1``
    name. Unknown extra fields are ignored so that a producer on a newer minor schema does not poison
    the stream; anything that changes meaning needs a new major version (and a new topic).
    """

    model_config = ConfigDict(frozen=True, extra="ignore", str_strip_whitespace=False)

    SCHEMA_VERSION: ClassVar[int] = 1

    type: str
    schema_version: Literal[1] = 1
    ts: AwareDatetime

    def to_json(self) -> bytes:
        return self.model_dump_json().encode()
