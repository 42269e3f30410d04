"""Pure decode tests (no broker, no database): the hot path and the reason classifier."""

from __future__ import annotations

import base64
import json
import random
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from schemas import DeadLetter, DecodeError, EventDecoder, EventRules, FeedbackEvent, PredictionEvent, Reason
from schemas.codec import split_wire_format
from streams.ingest import tolerant

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
RULES = EventRules(frozenset({"negative", "neutral", "positive"}), max_text_chars=50,
                   max_future_skew=timedelta(minutes=5))


def fb(**kw: object) -> bytes:
    base: dict[str, object] = {"type": "feedback", "feedback_id": "f1", "prediction_id": "p1",
                               "label": "positive", "ts": NOW.isoformat()}
    base.update(kw)
    return json.dumps(base).encode()


def test_valid_plain_and_wire_format() -> None:
    decoder = EventDecoder(FeedbackEvent, RULES)
    event = decoder.decode(fb(), NOW)
    assert isinstance(event, FeedbackEvent) and event.label == "positive" and event.source == "api"
    assert decoder.decode(b"\x00\x00\x00\x00\x2a" + fb(), NOW) == event
    assert split_wire_format(b"\x00\x00\x00\x01\x00{}") == (256, b"{}")


def test_thumbs_instead_of_label() -> None:
    event = EventDecoder(FeedbackEvent, RULES).decode(fb(label=None, thumbs="down"), NOW)
    assert isinstance(event, FeedbackEvent) and event.thumbs == "down"


@pytest.mark.parametrize(("value", "reason"), [
    (None, Reason.EMPTY_VALUE),
    (b"", Reason.EMPTY_VALUE),
    (b"{", Reason.MALFORMED_JSON),
    (b"\xc3\x28", Reason.INVALID_UTF8),
    (b"42", Reason.NOT_AN_OBJECT),
    (fb(type="click"), Reason.UNKNOWN_EVENT_TYPE),
    (fb(schema_version=3), Reason.UNKNOWN_SCHEMA_VERSION),
    (fb(feedback_id=None), Reason.WRONG_TYPE),
    (json.dumps({"type": "feedback", "prediction_id": "p", "label": "positive",
                 "ts": NOW.isoformat()}).encode(), Reason.MISSING_FIELD),
    (fb(label=None), Reason.INVALID_VALUE),
    (fb(label="angry"), Reason.LABEL_NOT_IN_SET),
    (fb(ts=(NOW + timedelta(minutes=6)).isoformat()), Reason.TIMESTAMP_IN_FUTURE),
    (fb(ts="2026-11-22T12:00:00"), Reason.WRONG_TYPE),  # naive timestamps are refused
    (b"\x00\x01", Reason.MALFORMED_JSON),
])
def test_reasons(value: bytes | None, reason: Reason) -> None:
    with pytest.raises(DecodeError) as info:
        EventDecoder(FeedbackEvent, RULES).decode(value, NOW)
    assert info.value.reason is reason
    assert info.value.detail


def test_prediction_rules() -> None:
    decoder = EventDecoder(PredictionEvent, RULES)
    base = {"type": "prediction", "prediction_id": "p", "model": "m", "model_version": "1", "text": "ok",
            "label": "positive", "probabilities": {"positive": 0.9, "negative": 0.1}, "latency_ms": 1.0,
            "ts": NOW.isoformat()}
    assert decoder.decode(json.dumps(base).encode(), NOW).label == "positive"  # type: ignore[union-attr]
    for change, reason in [({"text": "x" * 51}, Reason.TEXT_TOO_LONG), ({"text": " "}, Reason.TEXT_EMPTY),
                           ({"label": "neutral"}, Reason.INVALID_VALUE),
                           ({"latency_ms": -1}, Reason.INVALID_VALUE)]:
        with pytest.raises(DecodeError) as info:
            decoder.decode(json.dumps(base | change).encode(), NOW)
        assert info.value.reason is reason, change


def test_unknown_schema_id_and_tolerant_check() -> None:
    decoder = EventDecoder(FeedbackEvent, RULES, schema_id_known=lambda sid: sid == 7)
    assert decoder.decode(b"\x00\x00\x00\x00\x07" + fb(), NOW)
    with pytest.raises(DecodeError) as info:
        decoder.decode(b"\x00\x00\x00\x00\x08" + fb(), NOW)
    assert info.value.reason is Reason.UNKNOWN_SCHEMA_ID

    from core.exceptions import DatabaseUnavailable

    def down(_sid: int) -> bool:
        raise DatabaseUnavailable("registry store down")

    assert tolerant(down)(8) is True  # a registry outage never dead-letters good records


def test_record_over_the_size_limit() -> None:
    decoder = EventDecoder(FeedbackEvent, RULES, max_record_bytes=1000)
    assert decoder.decode(fb(), NOW)
    with pytest.raises(DecodeError) as info:
        decoder.decode(fb(source="x" * 1000), NOW)
    assert info.value.reason is Reason.RECORD_TOO_LARGE and "limit 1000" in info.value.detail


def test_dead_letter_bytes_are_standard_base64_that_any_decoder_reads() -> None:
    """docs/events.md says base64: a standard decoder must read every dead letter (URL-safe text, which
    pydantic wrote before and 9 of 240 dead letters decoded wrongly with, is still read)."""
    rng = random.Random(21)
    for i in range(240):
        original = rng.randbytes(rng.randint(0, 64))
        key = None if i % 3 == 0 else rng.randbytes(rng.randint(1, 16))
        dead = DeadLetter(ts=datetime(2026, 11, 22, tzinfo=UTC), reason=Reason.MALFORMED_JSON, detail="x",
                          source_topic="t", source_partition=0, source_offset=i, group="g", original=original,
                          original_key=key)
        wire = json.loads(dead.to_json())
        assert base64.b64decode(wire["original"], validate=True) == original
        assert wire["original_key"] is None or base64.b64decode(wire["original_key"], validate=True) == key
        assert DeadLetter.model_validate_json(dead.to_json()) == dead
        urlsafe = {**wire, "original": base64.urlsafe_b64encode(original).decode().rstrip("=")}
        assert DeadLetter.model_validate_json(json.dumps(urlsafe)).original == original
    assert DeadLetter.model_json_schema()["properties"]["original"]["contentEncoding"] == "base64"
    with pytest.raises(ValidationError, match="base64"):
        DeadLetter.model_validate_json(json.dumps({**wire, "original": "not base64!"}))
