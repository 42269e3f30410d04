"""The contract every event shares: a ``type`` discriminator, a schema version and a timestamp."""

from __future__ import annotations

import re
from typing import Annotated, ClassVar, Literal

from pydantic import AwareDatetime, BaseModel, BeforeValidator, ConfigDict
from pydantic_core import PydanticCustomError

_NUMERIC = re.compile(r"\s*[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?\s*")


def _rfc3339_only(value: object) -> object:
    """pydantic reads a number (or a numeric string) as Unix time, guessing seconds or milliseconds by its
    size, so ``"ts": 7`` would land as 1970-01-01: a timestamp must be an RFC 3339 string."""
    if isinstance(value, int | float) or (isinstance(value, str) and _NUMERIC.fullmatch(value)):
        raise PydanticCustomError("datetime_type", "Input should be an RFC 3339 timestamp string, not a number")
    return value


def _exact_int(value: object) -> object:
    """A lax ``Literal[1]`` takes ``true`` (and ``1.0``) for 1: a schema version is a JSON integer."""
    if type(value) is not int:
        raise PydanticCustomError("literal_error", "Input should be the integer schema version")
    return value


Timestamp = Annotated[AwareDatetime, BeforeValidator(_rfc3339_only)]
SchemaVersion1 = Annotated[Literal[1], BeforeValidator(_exact_int)]


class Event(BaseModel):
    """Base of all events on Flywheel topics.

    ``type`` discriminates the union; ``schema_version`` is the major version inside the topic's ``.v1``
    name. Unknown extra fields are ignored so that a producer on a newer minor schema does not poison
    the stream; anything that changes meaning needs a new major version (and a new topic).
    """

    model_config = ConfigDict(frozen=True, extra="ignore", str_strip_whitespace=False)

    SCHEMA_VERSION: ClassVar[int] = 1

    type: str
    schema_version: SchemaVersion1 = 1
    ts: Timestamp

    def to_json(self) -> bytes:
        return self.model_dump_json().encode()
