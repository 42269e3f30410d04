"""Schema compatibility: pure functions, no store.

The question asked is always "can a *reader* schema accept every document a *writer* schema accepts?"
BACKWARD puts the new schema in the reader's seat (it must read what the old one wrote), FORWARD the
old one, FULL both; the ``*_TRANSITIVE`` levels ask it against every live version, not just the latest.

JSON schemas are compared structurally (``_json_diff``): types, enums and consts, numeric and length
bounds, ``required``, properties under open and closed content models, ``items``, ``anyOf``/``oneOf``,
``allOf`` and same-document ``$ref``. Other schema types are stored but not analysed: a change is
compatible only under NONE or when the schema is identical to the one it is checked against.

One deliberate difference from Confluent's checker: adding an *optional* property to an *open*
content model (no ``additionalProperties: false``, as pydantic emits for ``extra="ignore"`` models) is
compatible by default, because Flywheel's producers only ever write declared fields. Confluent's
stricter reading (an old writer might have put anything under that name) is available as
``CompatibilityChecker(strict_open_content=True)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from schemas.registry._canonical import fingerprint, parse_json
from schemas.registry._json_diff import JsonDiff
from schemas.registry.model import CompatibilityLevel, Schema, SubjectVersion

__all__ = ["CompatibilityChecker", "json_incompatibilities"]


def json_incompatibilities(
    reader: Any,
    writer: Any,
    *,
    reader_name: str = "the reader",
    writer_name: str = "the writer",
    strict_open_content: bool = False,
) -> list[str]:
    """Every reason a document valid under the JSON schema ``writer`` may be rejected by ``reader``
    (both parsed JSON documents); an empty list means compatible."""
    diff = JsonDiff(reader, writer, reader_name, writer_name, strict_open_content=strict_open_content)
    return diff.run()


@dataclass(frozen=True, slots=True)
class CompatibilityChecker:
    """Checks a candidate schema against a subject's live versions under a compatibility level."""

    strict_open_content: bool = False

    def __call__(
        self, level: CompatibilityLevel, new: Schema, previous: Sequence[SubjectVersion]
    ) -> list[str]:
        """Messages naming each incompatibility; ``previous`` is ordered oldest first."""
        if level is CompatibilityLevel.NONE or not previous:
            return []
        targets = previous if level.transitive else previous[-1:]
        messages: list[str] = []
        for old in reversed(targets):
            name = f"version {old.version}"
            if level.backward:
                messages += [
                    f"{name} (backward): {m}" for m in self.pair(new, old.schema, "the new schema", name)
                ]
            if level.forward:
                messages += [
                    f"{name} (forward): {m}" for m in self.pair(old.schema, new, name, "the new schema")
                ]
        return messages

    def pair(
        self, reader: Schema, writer: Schema, reader_name: str = "the reader", writer_name: str = "the writer"
    ) -> list[str]:
        """Incompatibilities of ``reader`` reading data written with ``writer``."""
        if reader.schema_type != writer.schema_type:
            return [
                f"schema type changed from {writer.schema_type} ({writer_name}) "
                f"to {reader.schema_type} ({reader_name})"
            ]
        if reader.schema_type != "JSON":
            if fingerprint(reader) == fingerprint(writer):
                return []
            return [f"{reader.schema_type} schemas are not analysed: only an identical schema is compatible"]
        return json_incompatibilities(
            parse_json(reader.text),
            parse_json(writer.text),
            reader_name=reader_name,
            writer_name=writer_name,
            strict_open_content=self.strict_open_content,
        )
