"""The ingest hot path (msgspec) against the reference decoder (pydantic), no broker, no database: every
record gets the same verdict — the same field values, or the same dead-letter reason and detail."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

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


# -- differential fuzzing ----------------------------------------------------------------------------
# Every decoder the ingest processor runs: (the event type it expects, a valid record of it). A new event
# (schema_version 2, ...) adds its line; the strategies below only use the record's shape.
DECODERS: list[tuple[type[FeedbackEvent] | type[PredictionEvent], dict[str, object]]] = [
    (FeedbackEvent, _fb()), (PredictionEvent, _pred()),
]
FUZZ = settings(max_examples=1500, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much])
# raw JSON number and literal tokens whose reading differs between parsers, or between lax and strict
_TOKENS = ["1e999", "-1e999", "1E2", "-0", "0.0", "1.0", "1.000000000000000000001", "0.50", "5e-324", "1e-400",
           "NaN", "Infinity", "-Infinity", "true", "false", "null", '"3.5"', '"1"', '"true"', '"7"', "7", "1795000000",
           '"1795000000"', '"2026-11-22T12:00:00Z"', '"2026-11-22T12:00:00.1234567Z"', '"\\u0000"', '"\\ud800"',
           '"\\u00e9"', '"positive"', '"negative"', '"up"', '"champion"', "[]", "{}", '{"positive": 1}']
_UTF8_TRAPS = [b"\xc3\x28", b"\xff", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\xc0\xaf", b"\xe2\x82", b"\x00"]
_json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12) | st.sampled_from(["positive", "negative", "neutral", "up", "down", "", " ", "x" * 129]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=6)


@st.composite
def _structures(draw: st.DrawFn, example: dict[str, object], fields: list[str]) -> bytes:
    """JSON objects shaped like ``example``: fields dropped, repeated, retyped or given raw tokens,
    keys that are not the fields, written out by hand so that any token can stand anywhere."""
    keys = [*example, *fields, "extra", "\u00e9"]
    record = dict(example)
    for key in draw(st.lists(st.sampled_from(keys), max_size=4)):
        record[key] = draw(st.sampled_from([_DROP, _RAW, _VALUE]))
    parts: list[str] = []
    for key, value in record.items():
        if value is _DROP:
            continue
        if value is _RAW:
            token = draw(st.sampled_from(_TOKENS))
        elif value is _VALUE:
            token = json.dumps(draw(_json_values), ensure_ascii=draw(st.booleans()))
        else:
            token = json.dumps(value)
        parts.append(f"{json.dumps(key)}: {token}")
        if draw(st.integers(0, 9)) == 0:  # a duplicate key: the last one wins in both, or not
            parts.append(f"{json.dumps(key)}: {draw(st.sampled_from(_TOKENS))}")
    order = draw(st.permutations(parts))
    return ("{" + ", ".join(order) + "}").encode()


@st.composite
def _bytes_of(draw: st.DrawFn, base: st.SearchStrategy[bytes]) -> bytes:
    """Byte-level edits of a record: invalid UTF-8 put into a key, a value or between tokens, bytes
    replaced, cut or inserted, a wire-format header (known schema id 7, unknown 8) or a BOM in front."""
    value = bytearray(draw(base))
    for _ in range(draw(st.integers(0, 3))):
        at = draw(st.integers(0, len(value)))
        edit = draw(st.integers(0, 4))
        if edit == 0:
            value[at:at] = draw(st.sampled_from(_UTF8_TRAPS))
        elif edit == 1 and at < len(value):
            value[at] = draw(st.integers(0, 255))
        elif edit == 2:
            del value[at:at + draw(st.integers(1, 8))]
        elif edit == 3:
            value[at:at] = draw(st.binary(max_size=4))
        else:  # right after the opening quote of a key or string
            quotes = [i for i, b in enumerate(value) if b == ord('"')]
            if quotes:
                spot = draw(st.sampled_from(quotes)) + 1
                value[spot:spot] = draw(st.sampled_from(_UTF8_TRAPS))
    prefix = draw(st.sampled_from([b"", b"", b"", b"\x00\x00\x00\x00\x07", b"\x00\x00\x00\x00\x08", b"\xef\xbb\xbf"]))
    return prefix + bytes(value)


_RAW, _VALUE = object(), object()


def _fuzz(expected: type[FeedbackEvent] | type[PredictionEvent], values: st.SearchStrategy[bytes]) -> None:
    reference = EventDecoder(expected, RULES, lambda sid: sid == 7)
    fast = FastDecoder(expected, RULES, lambda sid: sid == 7)

    @FUZZ
    @given(values)
    def agree(value: bytes) -> None:
        want = _verdict(reference.decode, value, NOW)
        assert _verdict(fast.decode, value, NOW) == want, value

    agree()


@pytest.mark.parametrize(("expected", "example"), DECODERS, ids=lambda d: getattr(d, "__name__", ""))
def test_fuzz_json_structures_get_the_same_verdict(expected: type[FeedbackEvent] | type[PredictionEvent],
                                                   example: dict[str, object]) -> None:
    _fuzz(expected, _structures(example, list(expected.model_fields)))


@pytest.mark.parametrize(("expected", "example"), DECODERS, ids=lambda d: getattr(d, "__name__", ""))
def test_fuzz_bytes_get_the_same_verdict(expected: type[FeedbackEvent] | type[PredictionEvent],
                                         example: dict[str, object]) -> None:
    records = _structures(example, list(expected.model_fields)) | st.just(json.dumps(example).encode())
    _fuzz(expected, _bytes_of(records) | st.binary(max_size=64))


def test_strict_where_lax_coercion_would_change_the_meaning() -> None:
    """Decided for the questionable cases (both decoders, so the fuzz tests hold them to it): invalid UTF-8
    anywhere is refused, even in a key or an ignored field; ``true`` is no schema version; a timestamp is an
    RFC 3339 string (a number would be read as Unix time: ``7`` is 1970-01-01); a latency is a finite JSON
    number (``1e999`` would be stored as Infinity), and ``"3.5"`` or ``true`` are not numbers."""
    valid_fb, valid_pred = json.dumps(_fb()).encode(), json.dumps(_pred()).encode()
    cases: list[tuple[type[FeedbackEvent] | type[PredictionEvent], bytes, str]] = [
        (FeedbackEvent, b'{"\xc3\x28": 1, ' + valid_fb[1:], "invalid_utf8"),
        (FeedbackEvent, valid_fb[:-1] + b', "ignored": "\xc3\x28"}', "invalid_utf8"),
        (FeedbackEvent, json.dumps(_fb(schema_version=True)).encode(), "unknown_schema_version"),
        (FeedbackEvent, json.dumps(_fb(schema_version=1.0)).encode(), "unknown_schema_version"),
        (FeedbackEvent, json.dumps(_fb(ts=7)).encode(), "wrong_type"),
        (FeedbackEvent, json.dumps(_fb(ts="1795000000")).encode(), "wrong_type"),
        (PredictionEvent, json.dumps(_pred(ts=1795000000.5)).encode(), "wrong_type"),
        (PredictionEvent, valid_pred.replace(b'"latency_ms": 3', b'"latency_ms": 1e999'), "invalid_value"),
        (PredictionEvent, json.dumps(_pred(latency_ms="3.5")).encode(), "wrong_type"),
        (PredictionEvent, json.dumps(_pred(latency_ms=True)).encode(), "wrong_type"),
        (PredictionEvent, json.dumps(_pred(probabilities={"positive": "1"})).encode(), "wrong_type"),
        (PredictionEvent, json.dumps(_pred(probabilities={"positive": True})).encode(), "wrong_type"),
    ]
    for expected, value, reason in cases:
        for decoder in (EventDecoder(expected, RULES), FastDecoder(expected, RULES)):
            with pytest.raises(DecodeError) as refused:
                decoder.decode(value, NOW)
            assert refused.value.reason == reason, (value, refused.value)
    assert _same(PredictionEvent, [json.dumps(_pred(latency_ms=3)).encode(),  # an integer is a number
                                   json.dumps(_pred(ts="1970-01-01T00:00:00Z")).encode()]) == 2  # a backfill is ok
