"""Decode a record value into a validated event, or say exactly why not.

Accepts plain JSON and the Confluent wire format (magic byte 0 + 4-byte schema id + JSON). Structural
validation is pydantic's; semantic rules that depend on configuration (label set, text size, clock skew)
are :class:`EventRules`. The hot path is one ``validate_json`` call; the error path classifies.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import get_args

from pydantic import TypeAdapter, ValidationError

from schemas.events import (
    AnyEvent,
    FeedbackEvent,
    FeedbackEventV2,
    PredictionEvent,
    PredictionEventV2,
    TextInput,
)
from schemas.exceptions import DecodeError
from schemas.reasons import Reason

_TYPES = frozenset(cls.model_fields["type"].default for cls in get_args(get_args(AnyEvent)[0]))
WIRE_MAGIC = 0

Decoded = PredictionEvent | FeedbackEvent | PredictionEventV2 | FeedbackEventV2
Expected = type[PredictionEvent] | type[FeedbackEvent]
_VERSION_2: dict[type, type[PredictionEventV2] | type[FeedbackEventV2]] = {
    PredictionEvent: PredictionEventV2, FeedbackEvent: FeedbackEventV2}

SchemaIdCheck = Callable[[int], bool]
"""Answers whether a Confluent schema id is known to the registry."""


def split_wire_format(value: bytes) -> tuple[int | None, bytes]:
    """Return ``(schema_id, payload)``; ``schema_id`` is None for plain JSON."""
    if value[:1] == b"\x00":
        if len(value) < 5:
            raise DecodeError(Reason.MALFORMED_JSON, "Confluent wire-format header is truncated")
        return int.from_bytes(value[1:5], "big"), value[5:]
    return None, value


@dataclass(frozen=True, slots=True)
class EventRules:
    """Configuration-dependent rules applied after structural validation."""

    labels: frozenset[str]
    max_text_chars: int = 5000
    max_future_skew: timedelta = timedelta(minutes=5)

    def check(self, event: AnyEvent | PredictionEventV2 | FeedbackEventV2, now: datetime) -> None:
        if event.ts - now > self.max_future_skew:
            raise DecodeError(
                Reason.TIMESTAMP_IN_FUTURE, f"ts {event.ts.isoformat()} is more than "
                f"{self.max_future_skew.total_seconds():.0f}s ahead of {now.isoformat()}"
            )
        if isinstance(event, PredictionEvent):
            self._check_text(event.text)
            unknown = set(event.probabilities) - self.labels
            if unknown:
                raise DecodeError(Reason.LABEL_NOT_IN_SET, f"probabilities name unknown labels {sorted(unknown)}")
        elif isinstance(event, PredictionEventV2) and isinstance(event.input, TextInput):
            self._check_text(event.input.text)  # labels and features: the model's, checked at ingest
        elif isinstance(event, FeedbackEvent) and event.label is not None and event.label not in self.labels:
            raise DecodeError(
                Reason.LABEL_NOT_IN_SET, f"label {event.label!r} is not one of {sorted(self.labels)}"
            )

    def _check_text(self, text: str) -> None:
        if not text.strip():
            raise DecodeError(Reason.TEXT_EMPTY, "text is empty or whitespace")
        if len(text) > self.max_text_chars:
            raise DecodeError(Reason.TEXT_TOO_LONG, f"text has {len(text)} chars, limit {self.max_text_chars}")


class EventDecoder:
    """Turns raw record values of one topic into events of the expected type: version 1 (``expected``)
    or, when the record declares ``"schema_version": 2``, its version 2 (the record names its model;
    what depends on the model is checked at ingest)."""

    def __init__(
        self,
        expected: Expected,
        rules: EventRules,
        schema_id_known: SchemaIdCheck | None = None,
        max_record_bytes: int = 1_000_000,
    ) -> None:
        self.expected = expected
        self.rules = rules
        self.schema_id_known = schema_id_known
        self.max_record_bytes = max_record_bytes
        self._adapter: TypeAdapter[PredictionEvent | FeedbackEvent] = TypeAdapter(expected)
        self.expected_v2 = _VERSION_2[expected]
        self._adapter_v2: TypeAdapter[PredictionEventV2 | FeedbackEventV2] = TypeAdapter(self.expected_v2)

    def decode(self, value: bytes | None, now: datetime) -> Decoded:
        if not value:
            raise DecodeError(Reason.EMPTY_VALUE, "record value is empty or null")
        if len(value) > self.max_record_bytes:
            raise DecodeError(Reason.RECORD_TOO_LARGE, f"{len(value)} bytes, limit {self.max_record_bytes}")
        schema_id, payload = split_wire_format(value)
        if schema_id is not None and self.schema_id_known is not None and not self.schema_id_known(schema_id):
            raise DecodeError(Reason.UNKNOWN_SCHEMA_ID, f"schema id {schema_id} is not in the registry")
        event: Decoded
        if declares_version_2(payload):
            try:
                event = self._adapter_v2.validate_json(payload)
            except ValidationError as exc:
                raise classify(payload, exc, self.expected_v2) from None
        else:
            try:
                event = self._adapter.validate_json(payload)
            except ValidationError as exc:
                raise classify(payload, exc, self.expected) from None
        self.rules.check(event, now)
        return event


def declares_version_2(payload: bytes) -> bool:
    """Whether ``payload`` is a JSON object with ``"schema_version": 2`` (the integer, not ``true``)."""
    if b"schema_version" not in payload:
        return False
    try:
        obj = json.loads(payload)
    except (ValueError, RecursionError):
        return False
    return isinstance(obj, dict) and type(obj.get("schema_version")) is int and obj["schema_version"] == 2


def classify(payload: bytes, exc: ValidationError, expected: Expected | type[PredictionEventV2] | type[FeedbackEventV2]
             ) -> DecodeError:
    """Map a pydantic failure to the most specific reason code (slow path, bad records only)."""
    try:
        payload.decode("utf-8")
    except UnicodeDecodeError as err:
        return DecodeError(Reason.INVALID_UTF8, f"byte {err.start}: {err.reason}")
    errors = exc.errors(include_url=False)
    first = errors[0]
    kind, loc = first["type"], first["loc"]
    if kind == "json_invalid":
        return DecodeError(Reason.MALFORMED_JSON, str(first.get("ctx", {}).get("error", first["msg"])))
    if kind in ("model_type", "model_attributes_type", "dict_type") and not loc:
        return DecodeError(Reason.NOT_AN_OBJECT, "top-level JSON value is not an object")
    by_field = {e["loc"][0]: e for e in errors if e["loc"]}
    if "type" in by_field:
        declared = _field(payload, "type")
        if not isinstance(declared, str) or declared not in _TYPES:
            return DecodeError(Reason.UNKNOWN_EVENT_TYPE, f"type {declared!r} is not an event type")
        return DecodeError(
            Reason.WRONG_TOPIC, f"a {declared!r} event on a topic for {expected.model_fields['type'].default!r}"
        )
    if "schema_version" in by_field:
        return DecodeError(Reason.UNKNOWN_SCHEMA_VERSION, f"schema_version {_field(payload, 'schema_version')!r}")
    detail = "; ".join(f"{'.'.join(map(str, e['loc'])) or '<event>'}: {e['msg']}" for e in errors[:5])
    if any(e["type"] == "missing" for e in errors):
        return DecodeError(Reason.MISSING_FIELD, detail)
    if all(e["type"] in ("value_error", "finite_number")
           or e["type"].startswith(("greater", "less", "string_too", "too_")) for e in errors):
        return DecodeError(Reason.INVALID_VALUE, detail)
    return DecodeError(Reason.WRONG_TYPE, detail)


def _field(payload: bytes, name: str) -> object:
    try:
        obj = json.loads(payload)
    except ValueError:
        return None
    return obj.get(name) if isinstance(obj, dict) else None
