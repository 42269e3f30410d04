"""The ingest processor: predictions and feedback land in Postgres, deduplicated and joined.

* predictions: idempotent on ``prediction_id``;
* feedback: idempotent on ``feedback_id`` and on a content key (prediction, user, label/thumbs) for
  clients that resend with fresh ids; joined to its prediction (model, version, variant, predicted label,
  probabilities). Feedback that arrives first waits as ``pending`` and is joined when the prediction
  lands; after ``orphan_timeout_s`` it is resolved as ``orphan``. Feedback that names its model (schema
  version 2) joins only a prediction of that model.

A generator's prediction stores its prompt document in ``input`` and its output (text, token counts,
finish reason) in ``output``; its feedback may carry a rating, a correction and an interaction signal.

Version 1 events are the default text model's, checked against the configured label set. Version 2
events name their model: before the batch lands, each is checked against that model's declared spec
(:mod:`tasks`), in the batch's transaction (:meth:`IngestProcessor.screen`): an unknown model, an input
of the wrong task, a feature violation or a label the model does not have is dead-lettered with its
reason; nothing else is held up by it.

Rows go through binary COPY into temporary staging tables, then one INSERT .. SELECT per table: the
database does the join and the unique indexes decide what is a duplicate. ``ON CONFLICT DO NOTHING``
probes every unique index once more per row before inserting (measured: ~20% of the feedback INSERT's
backend CPU), so the INSERT is first tried without it (:class:`Optimism`) on the batch deduplicated
here (first occurrence wins, as ``ON CONFLICT DO NOTHING`` in ``ord`` order would when no row exists
yet). A row that already exists raises a unique violation: the savepoint is rolled back, the batch is
staged again as it came and goes through ``ON CONFLICT DO NOTHING``, and the next batches of that table
skip the attempt for a while.

Feedback whose predictions have not landed (a stream of feedback ahead of its predictions, a replay, a
model whose pods publish no prediction events) needs no join, so when the previous batch joined nothing
and one probe of the predictions' primary key finds none of this batch's, its rows are copied straight
into ``feedback`` as pending, without staging (:data:`_PROBE_LANDED`; measured on the 2-core AVX2 EPYC:
15.5-16.1 instead of 19.8-20.6 us of backend CPU and 5.9 instead of 6.9-7.5 us of Python a row). A batch
where the probe finds a prediction goes the staged way, joined in SQL; so does every batch after one that
joined, without the probe, until a batch joins nothing again.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import psycopg
from psycopg.adapt import Dumper
from psycopg.pq import Format

from core.exceptions import FlywheelError
from core.settings import FlywheelSettings, Topics
from schemas.codec import EventRules, SchemaIdCheck
from schemas.events import (
    ClassificationOutput,
    FeedbackEvent,
    FeedbackEventV2,
    IdRange,
    Landed,
    PredictionEvent,
    PredictionEventV2,
)
from schemas.fast import FastDecoder, FeedbackRecord, PredictionRecord
from schemas.reasons import Reason
from streams.base import Item, Outcome, Processor, Rejection, Signal
from tasks import InputRejected, ModelCatalog, task_of

# CPython's own MD5 when the interpreter has it: hashlib's OpenSSL 3 one looks its provider up on every call (on
# the 2-core EPYC: 1.1 vs 2.1 us per content key). The same digest either way (no stubs for ``_md5``: hence Any).
try:
    _md5: Callable[[bytes], Any] = importlib.import_module("_md5").md5
except ImportError:  # an interpreter built without it
    _md5 = hashlib.md5


@dataclass(frozen=True, slots=True)
class ModelPrediction:
    """A version 2 prediction checked against its model's spec: what ``write`` lands."""

    prediction_id: str
    model: str
    model_version: str
    variant: str
    text: str | None
    input: str | None  # JSON of the stored input (non-text tasks)
    label: str | None  # None for a generator
    probabilities: dict[str, float] | None
    latency_ms: float
    user_id: str | None
    domain: str | None
    segment: str | None
    ts: datetime
    output: str | None = None  # JSON of a generator's output (text, token counts, finish reason)


@dataclass(frozen=True, slots=True)
class ModelFeedback:
    """A version 2 feedback checked against its model's spec."""

    feedback_id: str
    prediction_id: str
    model: str
    label: str | None
    thumbs: str | None
    user_id: str | None
    source: str
    ts: datetime
    rating: int | None = None
    correction: str | None = None
    signal: str | None = None


IngestEvent = PredictionRecord | FeedbackRecord | PredictionEventV2 | FeedbackEventV2 | ModelPrediction | ModelFeedback
# per-record type checks take tuples: ``isinstance(x, A | B)`` builds the union object on every call (measured on
# the 2-core EPYC: ~0.6 us more per check, three checks per record)
_V2_EVENTS = (PredictionEventV2, FeedbackEventV2)
_PREDICTIONS = (PredictionRecord, ModelPrediction)
_FEEDBACK = (FeedbackRecord, ModelFeedback)

_STAGING = """
CREATE TEMP TABLE IF NOT EXISTS stg_predictions (
    ord int, prediction_id text, model text, model_version text, variant text, text text, label text,
    probabilities text, latency_ms float8, user_id text, domain text, segment text, ts timestamptz, input text,
    output text
) ON COMMIT DELETE ROWS;
CREATE TEMP TABLE IF NOT EXISTS stg_feedback (
    ord int, feedback_id text, content_key uuid, prediction_id text, label text, thumbs text, user_id text,
    source text, ts timestamptz, model text, rating int2, correction text, signal text
) ON COMMIT DELETE ROWS;
"""
_PRED_COLS = ("ord", "prediction_id", "model", "model_version", "variant", "text", "label", "probabilities",
              "latency_ms", "user_id", "domain", "segment", "ts", "input", "output")
_PRED_TYPES = ["int4", "text", "text", "text", "text", "text", "text", "text", "float8", "text", "text", "text",
               "timestamptz", "text", "text"]
_FB_COLS = ("ord", "feedback_id", "content_key", "prediction_id", "label", "thumbs", "user_id", "source", "ts",
            "model", "rating", "correction", "signal")
_FB_TYPES = ["int4", "text", "uuid", "text", "text", "text", "text", "text", "timestamptz", "text", "int2", "text",
             "text"]
# feedback copied straight into its table: the staged columns with ``status`` (every row pending) in ``ord``'s place
_PENDING_COLS = ("status", *_FB_COLS[1:])
_PENDING_TYPES = ["text", *_FB_TYPES[1:]]
# Has any of these predictions landed? The ids as one string split in SQL: a list parameter costs ~3 us an id to
# adapt in psycopg (measured on the 2-core AVX2 EPYC), the joined string 0.2. The identity's next value comes
# along: every id the batch's rows take is above it (the low end of the batch's id range, as with RETURNING a range
# that other writers' rows may interleave).
_PROBE_LANDED = """
SELECT nextval(pg_get_serial_sequence('feedback', 'id')),
       EXISTS (SELECT 1 FROM predictions WHERE prediction_id = ANY (string_to_array(%s, chr(31))))
"""
_LAST_FEEDBACK_ID = "SELECT currval(pg_get_serial_sequence('feedback', 'id'))"
_SEPARATOR = "\x1f"

# {conflict}: "ON CONFLICT .. DO NOTHING" (safe) or "" (optimistic: a duplicate raises; see Optimism)
_INSERT_PREDICTIONS = """
WITH ins AS (
    INSERT INTO predictions (prediction_id, model, model_version, variant, text, label, probabilities,
                             latency_ms, user_id, domain, segment, ts, input, output)
    SELECT prediction_id, model, model_version, variant, text, label, probabilities::jsonb,
           latency_ms, user_id, domain, segment, ts, input::jsonb, output::jsonb
    FROM stg_predictions ORDER BY ord
    {conflict}
    RETURNING id)
SELECT count(*), min(id), max(id) FROM ins
"""
_INSERT_FEEDBACK = """
WITH ins AS (
    INSERT INTO feedback (feedback_id, content_key, prediction_id, label, thumbs, user_id, source, ts,
                          status, model, model_version, variant, predicted_label, probabilities, resolved_at,
                          rating, correction, signal)
    SELECT s.feedback_id, s.content_key, s.prediction_id, s.label, s.thumbs, s.user_id, s.source, s.ts,
           CASE WHEN p.prediction_id IS NULL THEN 'pending' ELSE 'joined' END,
           COALESCE(p.model, s.model), p.model_version, p.variant, p.label, p.probabilities,
           CASE WHEN p.prediction_id IS NULL THEN NULL ELSE now() END,
           s.rating, s.correction, s.signal
    -- LATERAL: one primary-key probe per staged row. Temporary tables have no statistics, and a plain
    -- join could be planned as a hash join that scans the whole predictions table on every batch.
    -- feedback naming its model joins only a prediction of that model
    FROM stg_feedback s LEFT JOIN LATERAL (
        SELECT * FROM predictions WHERE prediction_id = s.prediction_id AND (s.model IS NULL OR model = s.model)
    ) p ON true
    ORDER BY s.ord
    {conflict}
    RETURNING id, status)
SELECT count(*), count(*) FILTER (WHERE status = 'joined'), min(id), max(id) FROM ins
"""
# Pending feedback whose prediction landed in this batch. Found through the content-key index: a key starts with
# the first 8 bytes of md5(prediction_id) (``content_key``), so one prediction's feedback is one key range, and no
# index on ``prediction_id`` has to take a random insert for every pending row. LATERAL subqueries fenced by
# ``OFFSET 0`` (else the planner flattens them into joins and, without statistics for the staging table, may
# hash-join a scan of every pending row): one probe of each index per staged prediction; then a TID join, so
# the UPDATE needs no index on ``id`` either. A row another session resolved meanwhile has a new ctid: skipped.
# ``status = 'pending'`` stays outside the fence: inside, it let the planner AND the key range with the partial
# index ``feedback_pending``, read whole for every probe (measured: 100,000 pending rows, 5,000 staged
# predictions, 9-13 s instead of 0.07-0.12 s). A prediction's key range holds its few feedback rows, pending or not.
_JOIN_STAGED = """
WITH hit AS (
    SELECT f.tid, p.model, p.model_version, p.variant, p.label, p.probabilities
    FROM stg_predictions s
    JOIN LATERAL (SELECT model, model_version, variant, label, probabilities FROM predictions
                  WHERE prediction_id = s.prediction_id OFFSET 0) p ON true
    JOIN LATERAL (SELECT ctid AS tid, status FROM feedback
                  WHERE content_key BETWEEN (left(md5(s.prediction_id), 16) || '0000000000000000')::uuid
                                        AND (left(md5(s.prediction_id), 16) || 'ffffffffffffffff')::uuid
                    AND prediction_id = s.prediction_id
                    AND (model IS NULL OR model = p.model) OFFSET 0) f ON f.status = 'pending'),
upd AS (
    UPDATE feedback f
    SET status = 'joined', model = hit.model, model_version = hit.model_version, variant = hit.variant,
        predicted_label = hit.label, probabilities = hit.probabilities, resolved_at = now()
    FROM hit
    WHERE f.ctid = hit.tid AND f.status = 'pending'
    RETURNING f.id)
SELECT count(*), min(id), max(id) FROM upd
"""
# Every pending row whose prediction has landed (housekeeping): read through the partial index ``feedback_pending``
# on ``id``, one primary-key probe into ``predictions`` each
_JOIN_PENDING = """
WITH upd AS (
    UPDATE feedback f
    SET status = 'joined', model = p.model, model_version = p.model_version, variant = p.variant,
        predicted_label = p.label, probabilities = p.probabilities, resolved_at = now()
    FROM predictions p
    WHERE f.status = 'pending' AND p.prediction_id = f.prediction_id AND (f.model IS NULL OR f.model = p.model)
    RETURNING f.id)
SELECT count(*), min(id), max(id) FROM upd
"""
# Any pending feedback? In the order of the partial index ``feedback_pending``, so it is read from that index
# whatever the statistics say: a plain EXISTS is planned as a sequential scan once pending rows look common,
# and pending rows are the newest, at the end of the table (measured: 721 ms on 2M rows, 8% of them pending,
# for every batch holding predictions; 0.05 ms through the index).
_ANY_PENDING = "SELECT 1 FROM feedback WHERE status = 'pending' ORDER BY id LIMIT 1"
_ORPHAN = """
WITH upd AS (
    UPDATE feedback SET status = 'orphan', resolved_at = now()
    WHERE status = 'pending' AND received_at < now() - make_interval(secs => %s)
    RETURNING id)
SELECT count(*), min(id), max(id) FROM upd
"""


class Optimism:
    """Whether to try a table's INSERT without ``ON CONFLICT`` first.

    ``ON CONFLICT DO NOTHING`` costs, per row, a probe of every unique index before the insert probes
    them again; most batches hold no row that already exists (duplicates inside a batch are dropped
    before staging). A batch that does (a resend arriving batches later, a replay) pays its attempt
    on top, so after a conflict the next batches of that table go straight to ``ON CONFLICT``: ``pause``
    of them, doubling with each conflict in a row up to ``max_pause`` (a stream where most batches
    repeat rows costs ~1/max_pause of an attempt more than ``ON CONFLICT`` alone).

    Except after an *isolated* conflict: the first in a row, where under ``isolated_share`` of the batch
    already existed (a resend whose first copy ended the previous batch: a producer's retry, a client's
    double submit). The next batch is then tried as usual; the pause starts only if it conflicts too. A
    pause would send ``pause`` batches the slower way for one row (measured in bench/ingest.py: one such
    conflict in 64 feedback batches of a 200,000-event run, and 4 batches paused for it).
    The unique indexes decide either way: nothing is lost or landed twice whichever path runs.
    Shared by the writer threads; a lost update of the countdown only shifts the next attempt."""

    def __init__(self, pause: int = 4, max_pause: int = 64, isolated_share: float = 0.05) -> None:
        self.pause = pause
        self.max_pause = max_pause
        self.isolated_share = isolated_share
        self._skip: dict[str, int] = {}
        self._next_pause: dict[str, int] = {}
        self._streak: dict[str, int] = {}  # conflicts since the last success

    def attempt(self, table: str) -> bool:
        skip = self._skip.get(table, 0)
        if skip:
            self._skip[table] = skip - 1
        return not skip

    def succeeded(self, table: str) -> None:
        self._streak.pop(table, None)
        self._next_pause.pop(table, None)

    def conflicted(self, table: str, existing: int | None = None, rows: int = 0) -> None:
        """An attempt at ``table`` failed; the fallback found ``existing`` of the batch's ``rows``
        (deduplicated) already there (None: unknown, the pause starts)."""
        streak = self._streak[table] = self._streak.get(table, 0) + 1
        if streak == 1 and existing is not None and existing < self.isolated_share * rows:
            return  # isolated: the next batch is tried
        pause = self._next_pause.get(table, self.pause)
        self._skip[table] = pause
        self._next_pause[table] = min(2 * pause, self.max_pause)


def tolerant(check: SchemaIdCheck) -> SchemaIdCheck:
    """A schema-id check that answers True when the registry itself cannot be asked: the payload is
    still validated against the event contract, so a registry outage must not dead-letter good records."""

    def known(schema_id: int) -> bool:
        try:
            return check(schema_id)
        except FlywheelError:
            return True

    return known


class IngestProcessor(Processor[IngestEvent]):
    def __init__(
        self,
        topics: Topics,
        rules: EventRules,
        *,
        group: str = "flywheel-ingest",
        schema_id_known: SchemaIdCheck | None = None,
        orphan_timeout_s: float = 300.0,
        housekeeping_interval_s: float = 5.0,
        catalog: ModelCatalog | None = None,
    ) -> None:
        self.group = group
        self.topics = (topics.predictions, topics.feedback)
        self.landed_topic = topics.landed
        self.orphan_timeout_s = orphan_timeout_s
        self.housekeeping_interval_s = housekeeping_interval_s
        self.catalog = catalog or ModelCatalog()
        self.optimism = Optimism()
        # did the last feedback batch join nothing? Then the next one probes for a direct copy (module docstring).
        # Shared by the writer threads: a lost update costs one probe, or one staged batch, never a wrong row
        self.pending_likely = True
        # connections whose staging tables may hold rows (a batch staged since they were last cleared, or a
        # write that raised: its savepoint's rollback may have restored rows a DELETE had removed). Unknown
        # connections may. The others skip the DELETE, so a transaction that stages nothing never touches
        # the temporary tables, and its commit skips truncating them (ON COMMIT DELETE ROWS truncates only
        # after a transaction that used temporary tables: measured, 3.8% of a backend's CPU in the pending copy)
        self._staged: weakref.WeakKeyDictionary[psycopg.Connection, bool] = weakref.WeakKeyDictionary()
        known = None if schema_id_known is None else tolerant(schema_id_known)
        self._decoders = {
            topics.predictions: FastDecoder(PredictionEvent, rules, known),
            topics.feedback: FastDecoder(FeedbackEvent, rules, known),
        }

    @classmethod
    def from_settings(cls, settings: FlywheelSettings, schema_id_known: SchemaIdCheck | None = None
                      ) -> IngestProcessor:
        rules = EventRules(frozenset(settings.labels), settings.max_text_chars,
                           timedelta(seconds=settings.max_future_skew_s))
        return cls(settings.topics, rules, group=f"{settings.topic_prefix}-ingest",
                   schema_id_known=schema_id_known, orphan_timeout_s=settings.orphan_timeout_s,
                   housekeeping_interval_s=settings.orphan_sweep_interval_s)

    def __repr__(self) -> str:
        return f"IngestProcessor(group={self.group!r}, topics={self.topics!r})"

    def decode(self, topic: str, value: bytes | None, now: datetime) -> IngestEvent:
        return self._decoders[topic].decode(value, now)

    def prepare(self, conn: psycopg.Connection) -> None:
        # the writers' statements are index probes: with 5,000 staged predictions the join's estimate passes
        # jit_above_cost, and compiling it cost 10-20 ms a batch (measured: 0.074-0.10 s with JIT off, 0.086-0.12 on)
        conn.execute("SET jit = off")
        conn.execute(_STAGING)

    def screen(self, conn: psycopg.Connection, items: list[Item[IngestEvent]]) -> list[Rejection]:
        """Version 2 events against their model's spec; each becomes the row ``write`` lands."""
        rejected = []
        spec_of = self.catalog.lookup(conn)
        for item in items:
            event = item.event
            if not isinstance(event, _V2_EVENTS):
                continue
            spec = spec_of(event.model)
            if spec is None:
                rejected.append(Rejection(item, Reason.UNKNOWN_MODEL,
                                          f"model {event.model!r} is not declared (flywheel models create)"))
                continue
            task = task_of(spec)
            try:
                if isinstance(event, FeedbackEventV2):
                    task.check_feedback(spec, event)
                    item.event = ModelFeedback(event.feedback_id, event.prediction_id, event.model, event.label,
                                               event.thumbs, event.user_id, event.source, event.ts, event.rating,
                                               event.correction, event.signal)
                    continue
                stored = task.check_input(spec, event.input)
                output = task.check_output(spec, event.output)
            except InputRejected as exc:
                rejected.append(Rejection(item, exc.reason, exc.detail))
                continue
            data = None if stored.data is None else json.dumps(stored.data, allow_nan=False)
            if isinstance(output, ClassificationOutput):
                label, probabilities, generated = output.label, output.probabilities, None
            else:  # a generator's output is stored whole (text, token counts, finish reason)
                label, probabilities, generated = None, None, output.model_dump_json(exclude_none=True)
            item.event = ModelPrediction(
                event.prediction_id, event.model, event.model_version, event.variant, stored.text, data, label,
                probabilities, event.latency_ms, event.user_id, event.domain, event.segment, event.ts, generated)
        return rejected

    def write(self, conn: psycopg.Connection, items: list[Item[IngestEvent]]) -> Outcome:
        try:
            return self._write(conn, items)
        except BaseException:
            self._staged[conn] = True
            raise

    def _write(self, conn: psycopg.Connection, items: list[Item[IngestEvent]]) -> Outcome:
        preds = [i.event for i in items if isinstance(i.event, _PREDICTIONS)]
        fbs = [i.event for i in items if isinstance(i.event, _FEEDBACK)]
        out = Outcome()
        with conn.cursor() as cur:
            # a bisect retry reuses the transaction: rows an earlier write of it staged are still there.
            # DELETE, not TRUNCATE: TRUNCATE would swap their files every time (measured: 0.5 ms per batch).
            if self._staged.get(conn, True):
                cur.execute("DELETE FROM stg_predictions; DELETE FROM stg_feedback")
                self._staged[conn] = False
            if preds:
                # the first of each id, whichever path runs: a later one is a duplicate either way
                first = _first_predictions(preds)
                self._staged[conn] = True
                _copy_predictions(cur, first)
                attempted = self.optimism.attempt("predictions")
                plain = self._try_plain(conn, cur, "predictions", _INSERT_PREDICTIONS, out) if attempted else None
                n, lo, hi = plain or cur.execute(
                    _INSERT_PREDICTIONS.format(conflict="ON CONFLICT (prediction_id) DO NOTHING")).fetchone() or ()
                if attempted and plain is None:
                    self.optimism.conflicted("predictions", len(first) - n, len(first))
                out.counts["landed:prediction"] += n
                out.counts["duplicates:prediction"] += len(preds) - n
                _range(out, "predictions", lo, hi)
            if fbs:
                n, joined, lo, hi = self._land_feedback(conn, cur, fbs, out)
                out.counts["landed:feedback"] += n
                out.counts["joined"] += joined
                out.counts["pending"] += n - joined
                out.counts["duplicates:feedback"] += len(fbs) - n
                _range(out, "feedback", lo, hi)
            if preds and cur.execute(_ANY_PENDING).fetchone() is not None:
                n, lo, hi = cur.execute(_JOIN_STAGED).fetchone() or (0, None, None)
                out.counts["joined"] += n
                _range(out, "feedback", lo, hi)
        return out

    def _land_feedback(self, conn: psycopg.Connection, cur: psycopg.Cursor,
                       events: list[FeedbackRecord | ModelFeedback], out: Outcome) -> tuple[Any, ...]:
        """Feedback has two unique keys, so which of a batch's events land depends on the rows already
        there (an event whose id exists no longer claims its content key for a later one): the batch
        deduplicated here is exact only when none of it exists, which the attempt without ``ON CONFLICT``
        (copied straight in as pending when no prediction of it has landed, else staged and joined) proves by
        succeeding. Otherwise every event is staged again, in order, for ``ON CONFLICT``."""
        kept: list[FeedbackRecord | ModelFeedback] | None = None
        if self.optimism.attempt("feedback"):
            kept, keys = _first_feedback(events)
            before = _none_landed(cur, kept) if self.pending_likely else None
            if before is not None:
                first = before + 1
                row = self._try(conn, "feedback", out, lambda: (len(kept), 0, first, _copy_pending(cur, kept, keys)))
            else:
                self._staged[conn] = True
                _copy_feedback(cur, kept, keys)
                row = self._try_plain(conn, cur, "feedback", _INSERT_FEEDBACK, out)
                if row is None:
                    cur.execute("DELETE FROM stg_feedback")
            if row is not None:
                self.pending_likely = row[1] == 0
                return row
        keys = [_key(e) for e in events]
        self._staged[conn] = True
        _copy_feedback(cur, events, keys)
        row = cur.execute(_INSERT_FEEDBACK.format(conflict="ON CONFLICT DO NOTHING")).fetchone() or ()
        self.pending_likely = bool(row) and row[1] == 0
        if kept is not None:  # the attempt conflicted: about this many of the batch were there already
            self.optimism.conflicted("feedback", max(0, len(kept) - (row[0] if row else 0)), len(kept))
        return row

    def _try_plain(self, conn: psycopg.Connection, cur: psycopg.Cursor, table: str, statement: str,
                   out: Outcome) -> tuple[Any, ...] | None:
        """The staged rows' INSERT without ``ON CONFLICT``, in a savepoint: its RETURNING aggregate, or
        None when a row already exists (nothing was written)."""
        return self._try(conn, table, out, lambda: cur.execute(statement.format(conflict="")).fetchone() or ())

    def _try(self, conn: psycopg.Connection, table: str, out: Outcome,
             insert: Callable[[], tuple[Any, ...]]) -> tuple[Any, ...] | None:
        """``insert`` in a savepoint, without ``ON CONFLICT``: its result, or None when a row already
        exists (nothing was written; the caller's fallback tells :meth:`Optimism.conflicted` how many)."""
        try:
            with conn.transaction():
                row = insert()
        except psycopg.errors.UniqueViolation:
            out.counts[f"insert_retries:{table}"] += 1
            return None
        self.optimism.succeeded(table)
        return row

    def housekeeping(self, conn: psycopg.Connection) -> Outcome:
        """Join pending feedback whose prediction has landed meanwhile (heals the race between two
        instances committing a prediction and its feedback concurrently), then time out the rest."""
        out = Outcome()
        with conn.cursor() as cur:
            n, lo, hi = cur.execute(_JOIN_PENDING).fetchone() or (0, None, None)
            out.counts["joined"] += n
            _range(out, "feedback", lo, hi)
            n, lo, hi = cur.execute(_ORPHAN, (self.orphan_timeout_s,)).fetchone() or (0, None, None)
            out.counts["orphans"] += n
            _range(out, "feedback", lo, hi)
        return out

    def signal(self, outcome: Outcome, now: datetime) -> Signal | None:
        c = outcome.counts
        if not (c["landed:prediction"] or c["landed:feedback"] or c["joined"] or c["orphans"]):
            return None
        ranges = {k: IdRange(first=lo, last=hi) for k, (lo, hi) in outcome.id_ranges.items()}
        event = Landed(
            ts=now, group=self.group, predictions=c["landed:prediction"], feedback=c["landed:feedback"],
            joined=c["joined"], pending=c["pending"], orphans=c["orphans"],
            duplicates=c["duplicates:prediction"] + c["duplicates:feedback"],
            dead_letters=sum(v for k, v in c.items() if k.startswith("dead_letters:")),
            prediction_ids=ranges.get("predictions"), feedback_ids=ranges.get("feedback"),
        )
        return Signal(self.landed_topic, self.group.encode(), event.to_json())


def _range(out: Outcome, name: str, lo: int | None, hi: int | None) -> None:
    if lo is not None and hi is not None:
        out.merge(Outcome(id_ranges={name: (lo, hi)}))


def _first_predictions(events: list[PredictionRecord | ModelPrediction]) -> list[PredictionRecord | ModelPrediction]:
    """The first event of each ``prediction_id`` in batch order (what ``ON CONFLICT DO NOTHING`` keeps)."""
    seen: set[str] = set()
    first = []
    for e in events:
        if e.prediction_id not in seen:
            seen.add(e.prediction_id)
            first.append(e)
    return first


def _first_feedback(events: list[FeedbackRecord | ModelFeedback]
                    ) -> tuple[list[FeedbackRecord | ModelFeedback], list[bytes]]:
    """The feedback ``ON CONFLICT DO NOTHING`` would keep of a batch inserted in order (an event is
    dropped when an earlier kept one has its ``feedback_id`` or its content key), with their content keys."""
    ids: set[str] = set()
    keys: set[bytes] = set()
    kept = []
    kept_keys = []
    for e in events:
        key = _key(e)
        if e.feedback_id in ids or key in keys:
            continue
        ids.add(e.feedback_id)
        keys.add(key)
        kept.append(e)
        kept_keys.append(key)
    return kept, kept_keys


def _copy_predictions(cur: psycopg.Cursor, events: list[PredictionRecord | ModelPrediction]) -> None:
    with cur.copy(f"COPY stg_predictions ({', '.join(_PRED_COLS)}) FROM STDIN (FORMAT BINARY)") as copy:
        copy.set_types(_PRED_TYPES)
        dumps = json.dumps
        for i, e in enumerate(events):
            copy.write_row((i, e.prediction_id, e.model, e.model_version, e.variant, e.text, e.label,
                            None if e.probabilities is None else dumps(e.probabilities), e.latency_ms, e.user_id,
                            e.domain, e.segment, e.ts, e.input if type(e) is ModelPrediction else None,
                            e.output if type(e) is ModelPrediction else None))


def content_key(prediction_id: str, user_id: str | None, label: str | None, thumbs: str | None,
                extra: tuple[int | None, str | None, str | None] = (None, None, None)) -> bytes:
    """The feedback content key, 16 bytes: the first 8 of md5(prediction_id), then bytes 8-15 of md5 of
    (prediction, user, label, thumbs) joined by U+001F. Equal content gives an equal key (the dedup); the
    prefix puts one prediction's feedback in one range of the key's unique index, which is how pending
    feedback is found when its prediction lands (``_JOIN_STAGED``; no index on ``prediction_id``). The SQL
    equivalent: ``overlay(md5(concat_ws(chr(31), ..)) placing left(md5(prediction_id), 16) from 1)::uuid``
    (migration 0014). A generator's judgement (``extra``: rating, correction, signal) is appended only when
    there is one, so a rating and a later correction of the same response are two rows, not a duplicate."""
    text = f"{prediction_id}\x1f{user_id or ''}\x1f{label or ''}\x1f{thumbs or ''}"
    if extra != (None, None, None):
        rating, correction, signal = extra
        text += f"\x1f{'' if rating is None else rating}\x1f{correction or ''}\x1f{signal or ''}"
    prefix: bytes = _md5(prediction_id.encode()).digest()[:8]
    content: bytes = _md5(text.encode()).digest()[8:]
    return prefix + content


def _key(e: FeedbackRecord | ModelFeedback) -> bytes:
    """The content key of one feedback event (a generator's judgement included when it has one)."""
    if type(e) is ModelFeedback:
        return content_key(e.prediction_id, e.user_id, e.label, e.thumbs, (e.rating, e.correction, e.signal))
    return content_key(e.prediction_id, e.user_id, e.label, e.thumbs)


class _UuidBytesDumper(Dumper):
    """16 raw bytes as a binary uuid (the UUID class would cost an object per row)."""

    format = Format.BINARY

    def dump(self, obj: bytes) -> bytes:
        return obj


def _none_landed(cur: psycopg.Cursor, events: list[FeedbackRecord | ModelFeedback]) -> int | None:
    """The identity's next value when no prediction of ``events`` has landed (every id their rows take is above
    it), else None. None too when an id holds the separator: the staged way then decides."""
    ids = _SEPARATOR.join([e.prediction_id for e in events])
    if ids.count(_SEPARATOR) != len(events) - 1:
        return None
    before, landed = cur.execute(_PROBE_LANDED, (ids,)).fetchone() or (0, True)
    return None if landed else int(before)


def _copy_pending(cur: psycopg.Cursor, events: list[FeedbackRecord | ModelFeedback], keys: list[bytes]) -> int:
    """``events`` with their content keys copied into ``feedback`` as pending, in order; the last id they took."""
    _copy_feedback(cur, events, keys, pending=True)
    last: int = (cur.execute(_LAST_FEEDBACK_ID).fetchone() or (0,))[0]
    return last


def _copy_feedback(cur: psycopg.Cursor, events: list[FeedbackRecord | ModelFeedback], keys: list[bytes], *,
                   pending: bool = False) -> None:
    """``events`` with their content keys into the staging table, numbered in ``ord``; or, ``pending``, straight
    into ``feedback`` with ``status`` pending in that column."""
    uuid_dumper = type("_Dumper", (_UuidBytesDumper,), {"oid": cur.adapters.types["uuid"].oid})
    cur.adapters.register_dumper(None, uuid_dumper)  # this cursor only
    table, cols, types = ("feedback", _PENDING_COLS, _PENDING_TYPES) if pending else ("stg_feedback", _FB_COLS,
                                                                                      _FB_TYPES)
    with cur.copy(f"COPY {table} ({', '.join(cols)}) FROM STDIN (FORMAT BINARY)") as copy:
        copy.set_types(types)
        for i, (e, key) in enumerate(zip(events, keys, strict=True)):
            extra = (e.rating, e.correction, e.signal) if type(e) is ModelFeedback else (None, None, None)
            copy.write_row(("pending" if pending else i, e.feedback_id, key, e.prediction_id, e.label, e.thumbs,
                            e.user_id, e.source, e.ts, e.model if type(e) is ModelFeedback else None, *extra))
