"""The ingest hot path (msgspec) against the reference decoder (pydantic), no broker, no database: every
record gets the same verdict — the same field values, or the same dead-letter reason and detail."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from schemas import DecodeError, EventDecoder, EventRules, FeedbackEvent, PredictionEvent
from schemas.fast import FastDecoder, FeedbackRecord, PredictionRecord
from tests.streams.test_bad_input import feedback_corpus, prediction_corpus

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
RULES = EventRules(frozenset({"negative", "neutral", "positive"}), max_text_chars=50,
                   max_future_skew=timedelta(minutes=5))


def _verdict(decode: Any, value: bytes | None, now: datetime) -> tuple[str, object]:
    try:
        event = decode(value, now)
    except DecodeError as exc:
        return "dead", (exc.reason, exc.detail)
    fields = (event.model_dump(exclude={"type", "schema_version"}) if isinstance(event, FeedbackEvent | PredictionEvent)
              else {f: getattr(event, f) for f in event.__struct_fields__ if f not in ("type", "schema_version")})
    ts = fields.pop("ts")
    return "event", (fields, ts, ts.utcoffset())  # the same instant and offset (tzinfo classes differ)


def _same(expected: type[FeedbackEvent] | type[PredictionEvent], values: list[bytes | None],
          known: Any = None, now: datetime = NOW) -> int:
    reference = EventDecoder(expected, RULES, known)
    fast = FastDecoder(expected, RULES, known)
    accepted = 0
    for value in values:
        want = _verdict(reference.decode, value, now)
        assert _verdict(fast.decode, value, now) == want, value
        accepted += want[0] == "event"
    return accepted


def _fb(**kw: object) -> dict[str, object]:
    base: dict[str, object] = {"type": "feedback", "schema_version": 1, "feedback_id": "f1", "prediction_id": "p1",
                               "label": "positive", "user_id": "u1", "source": "test", "ts": NOW.isoformat()}
    base.update(kw)
    return {k: v for k, v in base.items() if v is not _DROP}


def _pred(**kw: object) -> dict[str, object]:
    base: dict[str, object] = {"type": "prediction", "schema_version": 1, "prediction_id": "p1", "model": "m",
                               "model_version": "1", "variant": "champion", "text": "fine film", "label": "positive",
                               "probabilities": {"negative": 0.25, "positive": 0.75}, "latency_ms": 3,
                               "ts": NOW.isoformat()}
    base.update(kw)
    return {k: v for k, v in base.items() if v is not _DROP}


_DROP = object()

TIMESTAMPS = [
    "2026-11-22T12:00:00Z", "2026-11-22T12:00:00+00:00", "2026-11-22 12:00:00Z", "2026-11-22t12:00:00z",
    "2026-11-22T12:00:00.5Z", "2026-11-22T12:00:00.123456Z", "2026-11-22T12:00:00.1234567Z",
    "2026-11-22T12:00:00.9999995Z", "2026-11-22T12:00:00.000000001Z", "2026-11-22T13:30:00+01:30",
    "2026-11-22T12:00:00-00:00", "2026-11-22T12:00:00+0100", "2026-11-22T12:00Z", "2026-11-22T12:00:00,5Z",
    "2026-11-22T12:00:00", "2026-11-22", "20261122T120000Z", "2026-02-30T12:00:00Z", "2026-11-22T24:00:00Z",
    "2026-11-22T12:00:60Z", "2026-11-22T12:00:00+24:00", "2026-11-22T12:00:00+23:59", "0000-01-01T00:00:00Z",
    "2026-11-22T12:06:00Z", "2026-11-22T12:04:59Z", "2026-W47-7T12:00:00Z", 1795000000, 1795000000.5, None, "",
]


def test_bad_input_corpus_gets_the_same_reasons() -> None:
    now = datetime.now(UTC)  # the corpus is stamped with the wall clock
    assert _same(FeedbackEvent, [v for v, _ in feedback_corpus()], now=now) == 1  # the NUL one: valid JSON
    _same(PredictionEvent, [v for v, _ in prediction_corpus()], now=now)


@pytest.mark.parametrize("ts", TIMESTAMPS)
def test_timestamps(ts: object) -> None:
    _same(FeedbackEvent, [json.dumps(_fb(ts=ts)).encode()])
    _same(PredictionEvent, [json.dumps(_pred(ts=ts)).encode()])


def test_edge_cases() -> None:
    feedback = [
        json.dumps(_fb()).encode(), json.dumps(_fb(type=_DROP, schema_version=_DROP, source=_DROP)).encode(),
        json.dumps(_fb(label=None, thumbs="down")).encode(), json.dumps(_fb(label=None, thumbs="sideways")).encode(),
        json.dumps(_fb(schema_version=1.0)).encode(), json.dumps(_fb(schema_version="1")).encode(),
        json.dumps(_fb(schema_version=True)).encode(), json.dumps(_fb(type=None)).encode(),
        json.dumps(_fb(feedback_id="")).encode(), json.dumps(_fb(feedback_id="x" * 128)).encode(),
        json.dumps(_fb(feedback_id="x" * 129)).encode(), json.dumps(_fb(feedback_id="é" * 128)).encode(),
        json.dumps(_fb(user_id="u" * 201)).encode(), json.dumps(_fb(user_id=None)).encode(),
        json.dumps(_fb(source="")).encode(), json.dumps(_fb(extra={"nested": [1, {"a": None}]})).encode(),
        json.dumps(_fb(label="positive ")).encode(), json.dumps(_fb(feedback_id=7)).encode(),
        b'{"type": "feedback", "feedback_id": "f1", "feedback_id": "f2", "prediction_id": "p", "label": "positive",'
        b' "ts": "2026-11-22T12:00:00Z"}',
        b'{"type": "feedback", "feedback\\u005fid": "f1", "prediction_id": "p", "label": "positive",'
        b' "ts": "2026-11-22T12:00:00Z"}',
        b'{"type": "feedback", "feedback_id": "\\ud800", "prediction_id": "p", "label": "positive",'
        b' "ts": "2026-11-22T12:00:00Z"}',
        b'{"type": "feedback", "feedback_id": "\xff", "prediction_id": "p", "label": "positive",'
        b' "ts": "2026-11-22T12:00:00Z"}',
        b'\xef\xbb\xbf' + json.dumps(_fb()).encode(), json.dumps(_fb()).encode() + b" \n",
        json.dumps(_fb()).encode() + b"x",
        json.dumps(_fb(x=json.loads("[" * 150 + "]" * 150))).encode(),
        json.dumps(_fb(x=json.loads("[" * 199 + "]" * 199))).encode(),
        json.dumps(_fb(x=json.loads("[" * 250 + "]" * 250))).encode(),
        b"\x00\x00\x00\x00\x07" + json.dumps(_fb()).encode(), b"\x00\x00\x00\x00\x08" + json.dumps(_fb()).encode(),
        b"\x00\x00\x00", b"\x00", b"", None, b"null", b"[]", b'"x"',
    ]
    assert _same(FeedbackEvent, feedback, known=lambda sid: sid == 7) >= 8
    predictions = [
        json.dumps(_pred()).encode(), json.dumps(_pred(latency_ms=0)).encode(),
        json.dumps(_pred(latency_ms=-1)).encode(),
        json.dumps(_pred(latency_ms="3")).encode(), json.dumps(_pred(latency_ms=1e308)).encode(),
        b'{"type": "prediction", "prediction_id": "p", "model": "m", "model_version": "1", "text": "t",'
        b' "label": "positive", "probabilities": {"positive": 1}, "latency_ms": 1e400, "ts": "2026-11-22T12:00:00Z"}',
        b'{"type": "prediction", "prediction_id": "p", "model": "m", "model_version": "1", "text": "t",'
        b' "label": "positive", "probabilities": {"positive": 1}, "latency_ms": NaN, "ts": "2026-11-22T12:00:00Z"}',
        b'{"type": "prediction", "prediction_id": "p", "model": "m", "model_version": "1", "text": "t",'
        b' "label": "positive", "probabilities": {"positive": 0.5, "negative": 0.5, "positive": 0.5},'
        b' "latency_ms": 1, "ts": "2026-11-22T12:00:00Z"}',
        json.dumps(_pred(probabilities={"positive": 1.0005})).encode(),
        json.dumps(_pred(probabilities={"positive": 0.9995})).encode(),
        json.dumps(_pred(probabilities={"positive": 0.9985, "negative": 0.0})).encode(),
        json.dumps(_pred(probabilities={"positive": "1"})).encode(), json.dumps(_pred(probabilities=[])).encode(),
        json.dumps(_pred(probabilities={})).encode(), json.dumps(_pred(label="neutral")).encode(),
        json.dumps(_pred(text="x" * 50)).encode(), json.dumps(_pred(text="x" * 51)).encode(),
        json.dumps(_pred(text="\u00a0")).encode(), json.dumps(_pred(text="\u2028")).encode(),
        json.dumps(_pred(variant="canary")).encode(), json.dumps(_pred(variant="blue")).encode(),
        json.dumps(_pred(domain="d" * 101)).encode(), json.dumps(_pred(segment=None)).encode(),
        json.dumps(_pred(model="")).encode(), json.dumps(_pred(model_version="v" * 65)).encode(),
        json.dumps(_pred(user_id="u")).encode(), json.dumps(_pred(variant=_DROP)).encode(),
    ]
    assert _same(PredictionEvent, predictions) >= 10


def test_generated_records() -> None:
    """Random field-level mutations of valid records (types, lengths, values, drops)."""
    rng = random.Random(7)
    pool: list[object] = [None, "", " ", "x", "positive", "negative", "up", "down", "champion", "feedback",
                          "prediction", 0, 1, -1, 0.5, 2.5, True, [], {}, {"positive": 1.0}, "y" * 129, "z" * 201,
                          NOW.isoformat(), "2026-11-22T12:00:00.1234567+00:00", "\u0000", "é" * 64]
    for expected, make in ((FeedbackEvent, _fb), (PredictionEvent, _pred)):
        values: list[bytes | None] = []
        keys = [*make().keys(), "label", "thumbs", "extra"]
        for _ in range(3000):
            change = {rng.choice(keys): rng.choice([*pool, _DROP]) for _ in range(rng.randint(1, 3))}
            values.append(json.dumps(make(**change)).encode())
        _same(expected, values)


def test_records_carry_the_event_fields() -> None:
    assert set(FeedbackRecord.__struct_fields__) == set(FeedbackEvent.model_fields)
    assert set(PredictionRecord.__struct_fields__) == set(PredictionEvent.model_fields)
