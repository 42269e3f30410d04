"""The Postgres side of the processor runtime: one decoded batch -> one transaction.

Inside the transaction the partitions' offset rows are locked and the batch is fenced against them
(records below the stored offset are replays and skipped; a batch starting above it is a gap and
refused), the processor writes its rows (a record Postgres refuses is isolated by bisection and
dead-lettered as ``sink_rejected``), dead letters land in ``dead_letters`` and on the DLQ topic, and the
next offsets and counters are saved.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, TypeVar

import psycopg

from schemas.events import DeadLetter
from schemas.reasons import Reason
from streams import offsets
from streams.base import Item, Outcome, Processor
from streams.exceptions import DeliveryError, OffsetGap
from streams.kafka import CheckedProducer
from streams.metrics import StreamMetrics

log = logging.getLogger(__name__)
T = TypeVar("T")
TP = tuple[str, int]

# what a single record can make Postgres (or the driver encoding it) refuse: isolated by bisection
_RECORD_FAULTS = (psycopg.errors.DataError, psycopg.errors.IntegrityError, psycopg.errors.ProgramLimitExceeded,
                  UnicodeEncodeError)
DLQ_ORIGINAL_MAX = 256 * 1024  # bytes of the original kept in the DLQ topic copy (Postgres keeps all)


@dataclass(slots=True)
class Batch(Generic[T]):
    items: list[Item[T]]
    dead: list[DeadLetter]
    spans: dict[TP, list[int]]  # (topic, partition) -> [first offset, last offset]
    consumed: Counter[str]
    started: float


def _printable(text: str) -> str:
    """Text Postgres accepts: no NUL, no lone surrogates (details quote user-supplied keys)."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8").replace("\x00", "\\x00")


def _topic_copy(dead: DeadLetter) -> DeadLetter:
    if len(dead.original) <= DLQ_ORIGINAL_MAX:
        return dead
    note = f" [original truncated to {DLQ_ORIGINAL_MAX} of {len(dead.original)} bytes; full bytes in dead_letters]"
    return dead.model_copy(update={"original": dead.original[:DLQ_ORIGINAL_MAX], "detail": dead.detail + note})


def dead_letter(group: str, reason: Reason, detail: str, topic: str, partition: int, offset: int, msg: Any,
                now: datetime) -> DeadLetter:
    return DeadLetter(
        ts=now, reason=reason, detail=_printable(detail)[:2000], source_topic=topic, source_partition=partition,
        source_offset=offset, group=group, original=msg.value() or b"", original_key=msg.key(),
    )


def fence(spans: dict[TP, list[int]], stored: dict[TP, int]) -> dict[TP, int]:
    """The first offset to write per partition; :class:`OffsetGap` when the batch starts past the stored one."""
    start = {}
    for tp, (first, _last) in spans.items():
        have = stored.get(tp, offsets.NO_OFFSET)
        if have != offsets.NO_OFFSET and have < first:
            raise OffsetGap(tp[0], tp[1], have, first)
        start[tp] = max(first, have)
    return start


class BatchSink(Generic[T]):
    """Commits batches of one processor group: ``commit(conn, batch, cluster)``."""

    def __init__(self, processor: Processor[T], producer: CheckedProducer, dlq_topic: str, metrics: StreamMetrics,
                 clock: Callable[[], datetime]) -> None:
        self.processor = processor
        self.group = processor.group
        self.producer = producer
        self.dlq_topic = dlq_topic
        self.metrics = metrics
        self.clock = clock

    def commit(self, conn: psycopg.Connection, batch: Batch[T], cluster: str) -> tuple[Outcome, dict[TP, int]]:
        outcome = Outcome()
        with conn.transaction():
            stored = offsets.lock(conn, self.group, cluster, batch.spans)
            start = fence(batch.spans, stored)
            items = [i for i in batch.items if i.offset >= start[(i.topic, i.partition)]]
            dead = [d for d in batch.dead if d.source_offset >= start[(d.source_topic, d.source_partition)]]
            outcome.counts["replayed"] = len(batch.items) + len(batch.dead) - len(items) - len(dead)
            if items:
                items = self._screen(conn, items, dead)
            kept_dead = list(dead)  # before bisection adds the records Postgres refused (they are items)
            if items:
                outcome.merge(self._write(conn, items, dead))
            if dead:
                self._dead_letter_all(conn, dead, cluster)
                outcome.counts.update(f"dead_letters:{d.reason.value}" for d in dead)
            # never move a stored offset backwards (a replayed range re-read in other chunks)
            next_offsets = {tp: max(last + 1, stored.get(tp, offsets.NO_OFFSET))
                            for tp, (_first, last) in batch.spans.items()}
            offsets.save(conn, self.group, cluster, next_offsets)
            consumed: Counter[str] = Counter(i.topic for i in items)
            consumed.update(d.source_topic for d in kept_dead)
            offsets.bump_counters(conn, self.group, {
                **{f"consumed:{t}": n for t, n in consumed.items()}, **outcome.counts})
        return outcome, next_offsets

    def _screen(self, conn: psycopg.Connection, items: list[Item[T]], dead: list[DeadLetter]) -> list[Item[T]]:
        """The items the processor accepts once it sees the database; the others join ``dead``."""
        rejected = self.processor.screen(conn, items)
        if not rejected:
            return items
        now = self.clock()
        refused = {id(r.item) for r in rejected}
        dead.extend(dead_letter(self.group, r.reason, r.detail, r.item.topic, r.item.partition, r.item.offset,
                                r.item.source, now) for r in rejected)
        return [i for i in items if id(i) not in refused]

    def _write(self, conn: psycopg.Connection, items: list[Item[T]], dead: list[DeadLetter]) -> Outcome:
        """Write items in a savepoint; if the database refuses a record, bisect to isolate it."""
        try:
            with conn.transaction():
                return self.processor.write(conn, items)
        except _RECORD_FAULTS as exc:
            if len(items) == 1:
                item = items[0]
                detail = f"{type(exc).__name__}: {' '.join(str(exc).split())}"[:2000]
                dead.append(dead_letter(self.group, Reason.SINK_REJECTED, detail, item.topic, item.partition,
                                        item.offset, item.source, self.clock()))
                return Outcome()
            mid = len(items) // 2
            return self._write(conn, items[:mid], dead).merge(self._write(conn, items[mid:], dead))

    def _dead_letter_all(self, conn: psycopg.Connection, dead: list[DeadLetter], cluster: str) -> None:
        """Dead letters land in Postgres (exactly once, in this transaction) and on the DLQ topic
        (acknowledged before the commit: at least once, keyed by source coordinates)."""
        conn.cursor().executemany(
            """INSERT INTO dead_letters (group_id, cluster_id, topic, partition, "offset", reason, detail, original,
                                         original_key)
               VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING""",
            [(d.group, cluster, d.source_topic, d.source_partition, d.source_offset, d.reason.value, d.detail,
              d.original, d.original_key) for d in dead],
        )
        try:
            self.producer.send_all(self.dlq_topic, (
                (f"{d.source_topic}:{d.source_partition}:{d.source_offset}".encode(), _topic_copy(d).to_json())
                for d in dead))
        except DeliveryError as exc:
            if not exc.permanent:
                raise  # retried with the whole batch
            # the broker will never take it (e.g. too large): Postgres holds the dead letter; say so loudly
            self.metrics.dlq_publish_failures.labels(self.group).inc(exc.failed)
            log.error("%s: %s; the dead letters are in the dead_letters table", self.group, exc)
