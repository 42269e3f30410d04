"""The curation store in Postgres: ``samples``, ``annotators`` and ``curation_state`` (migration 0006).

A store serves one model: every read and write is scoped to its rows (``samples.model``, the feedback
joined to its predictions, its annotators and its ``curation_state`` row, named after the model).
One batch = one transaction that starts by locking the ``curation_state`` row, so two curators (even
without the advisory lock) never curate the same rows; the insert, the re-curated rows, the
annotators and the new watermark commit together. psycopg errors become :class:`CurationStoreError`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime
from typing import Any

import numpy as np
import psycopg
from psycopg.types.json import Jsonb

from curation.base import (
    Annotator,
    Backfill,
    BatchWrite,
    CurationStore,
    CursorState,
    Member,
    Neighbour,
    NewSample,
    Pending,
    StoredPair,
    StoredVerdict,
    Verdict,
)
from curation.config import AnnotatorsConfig
from curation.exceptions import CurationStoreError
from curation.scoring import trust

_PENDING = """
SELECT f.id, f.feedback_id, f.prediction_id, p.text,
       COALESCE(f.label, CASE WHEN f.thumbs = 'up' THEN f.predicted_label END),
       f.thumbs, f.predicted_label, COALESCE(f.probabilities, p.probabilities),
       f.user_id, p.domain, p.segment, f.ts, f.resolved_at, f.model_version, p.input,
       p.output, f.rating, f.correction, f.signal
  FROM feedback f
  JOIN predictions p ON p.prediction_id = f.prediction_id
 WHERE f.status = 'joined' AND f.model = %(model)s
   AND ({scope})
   AND NOT EXISTS (SELECT 1 FROM samples s WHERE s.id = f.id)
 ORDER BY f.id
 LIMIT %(limit)s
"""

_UNSCORED = """
SELECT s.id, s.feedback_id, s.prediction_id, s.text, s.label, s.thumbs, s.predicted_label,
       COALESCE(f.probabilities, p.probabilities), s.user_id, s.domain, s.segment, s.ts, f.resolved_at,
       s.model_version, s.input
  FROM samples s
  LEFT JOIN feedback f ON f.id = s.id AND f.feedback_id = s.feedback_id
  LEFT JOIN predictions p ON p.prediction_id = s.prediction_id
 WHERE s.curated_at IS NULL AND s.model = %s
 ORDER BY s.id
 LIMIT %s
"""

# The samples sharing a band key with the batch: one GIN probe per key. A LATERAL subquery fenced by ``OFFSET 0``
# with nothing but the key in it, so the index probe is the only plan that does not scan the table for every key.
# With the model's equality inside, a table whose statistics lag its growth (a backlog curated faster than
# autovacuum analyses it; a fresh deployment) had ``model = ..`` estimated at a few rows: the planner read every
# sample of the model once and tested each key against each of them (measured: 6,000 samples, 16,000 keys, 14.6 s,
# growing with the table; 0.08-0.12 s through the probes). ``lsh_bands && <thousands of keys>`` in one scan is
# planned as a scan of the table too. Exact copies of one text in one cluster add nothing to the comparison: one
# of each.
_NEIGHBOURS = """
SELECT DISTINCT ON (s.cluster_id, s.text_hash) s.id, s.cluster_id, s.text_hash, s.minhash, s.lsh_bands
  FROM unnest(%s::bigint[]) AS k(key)
  JOIN LATERAL (SELECT id, cluster_id, text_hash, minhash, lsh_bands, model FROM samples
                 WHERE lsh_bands @> ARRAY[k.key] OFFSET 0) s ON true
 WHERE s.model = %s
 ORDER BY s.cluster_id, s.text_hash, s.id
"""

_INSERT = """
INSERT INTO samples (id, feedback_id, prediction_id, text, label, status, weight, reasons, user_id, domain, segment,
                     ts, thumbs, predicted_label, model_version, disagreement, label_quality, label_issue,
                     suggested_label, trust, cluster_id, text_hash, minhash, lsh_bands, model, input, target, rating,
                     signal, curated_at)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s,
        %s, %s, %s, now())
"""


class PostgresCurationStore(CurationStore):
    """The store on one connection (autocommit: each ``batch()`` is an explicit transaction)."""

    def __init__(self, conn: psycopg.Connection[Any], annotators: AnnotatorsConfig, *, model: str) -> None:
        self.conn = conn
        self.config = annotators
        self.model = model

    @contextlib.contextmanager
    def batch(self) -> Iterator[None]:
        try:
            with self.conn.transaction():
                # a batch's statements are index lookups: compiling one (the neighbours' estimate passes
                # jit_above_cost) costs more than running it (measured: 0.2 vs 0.09 s for 16,000 band keys)
                self.conn.execute("SET LOCAL jit = off")
                yield
        except psycopg.Error as exc:
            raise CurationStoreError(_one_line(exc)) from exc

    def cursor(self) -> CursorState:
        row = self.conn.execute("SELECT watermark, resolved_cursor FROM curation_state WHERE name = %s FOR UPDATE",
                                (self.model,)).fetchone()
        if row is None:
            self.conn.execute("INSERT INTO curation_state (name, watermark) VALUES (%s, 0) ON CONFLICT DO NOTHING",
                              (self.model,))
            return self.cursor()
        return CursorState(int(row[0]), row[1])

    def pending(self, state: CursorState, since: datetime | None, limit: int, *, sweep: bool) -> list[Pending]:
        params: dict[str, object] = {"watermark": state.watermark, "since": since, "limit": limit,
                                     "model": self.model}
        if sweep:
            scope = "true"
        elif since is None:
            scope = "f.id > %(watermark)s"
        else:
            scope = "f.id > %(watermark)s OR f.resolved_at >= %(since)s"
        rows = self.conn.execute(_PENDING.format(scope=scope), params).fetchall()
        return [Pending(*r) for r in rows]

    def neighbours(self, bands: Iterable[int]) -> list[Neighbour]:
        keys = sorted(set(bands))
        if not keys:
            return []
        rows = self.conn.execute(_NEIGHBOURS, (keys, self.model)).fetchall()
        return [Neighbour(int(r[0]), int(r[1]), bytes(r[2]), _unpack(r[3]), tuple(r[4])) for r in rows]

    def recent_scores(self, window: int) -> list[tuple[str | None, str, float]]:
        rows = self.conn.execute(
            "SELECT COALESCE(domain, segment), label, label_quality FROM samples WHERE model = %s "
            "AND label_quality IS NOT NULL AND label IS NOT NULL ORDER BY id DESC LIMIT %s",
            (self.model, window)).fetchall()
        return [(r[0], str(r[1]), float(r[2])) for r in rows]

    def recent_inputs(self, window: int) -> list[dict[str, object]]:
        rows = self.conn.execute(
            "SELECT input FROM samples WHERE model = %s AND status = 'accepted' AND input IS NOT NULL "
            "ORDER BY id DESC LIMIT %s", (self.model, window)).fetchall()
        return [r[0] for r in rows if isinstance(r[0], dict)]

    def annotators(self, user_ids: Iterable[str]) -> dict[str, Annotator]:
        users = sorted(set(user_ids))
        if not users:
            return {}
        rows = self.conn.execute(
            "SELECT user_id, agree, disagree, labels, low_trust FROM annotators WHERE model = %s "
            "AND user_id = ANY(%s) ORDER BY user_id FOR UPDATE", (self.model, users)).fetchall()
        return {r[0]: Annotator(r[0], float(r[1]), float(r[2]), int(r[3]), bool(r[4])) for r in rows}

    def judged_annotators(self, min_labels: int) -> dict[str, Annotator]:
        rows = self.conn.execute("SELECT user_id, agree, disagree, labels, low_trust FROM annotators "
                                 "WHERE model = %s AND labels >= %s ORDER BY user_id",
                                 (self.model, min_labels)).fetchall()
        return {r[0]: Annotator(r[0], float(r[1]), float(r[2]), int(r[3]), bool(r[4])) for r in rows}

    def members(self, cluster_ids: Iterable[int]) -> list[StoredVerdict]:
        ids = sorted(set(cluster_ids))
        if not ids:
            return []
        rows = self.conn.execute(
            "SELECT id, cluster_id, user_id, label, text_hash, label_issue, reasons ? 'unknown_label', trust, "
            "status, weight, reasons FROM samples WHERE model = %s AND cluster_id = ANY(%s) ORDER BY id",
            (self.model, ids)).fetchall()
        return [StoredVerdict(Member(id=int(r[0]), user_id=r[2], label=r[3], text_hash=bytes(r[4] or b""),
                                     label_issue=bool(r[5]), unknown_label=bool(r[6]), trust=r[7]),
                              int(r[1]), Verdict(r[8], float(r[9]), tuple(r[10])))
                for r in rows]

    def pairs(self, cluster_ids: Iterable[int]) -> list[StoredPair]:
        ids = sorted(set(cluster_ids))
        if not ids:
            return []
        rows = self.conn.execute(
            "SELECT s.id, s.cluster_id, s.user_id, s.text_hash, s.trust, s.status, s.weight, s.reasons, f.rating, "
            "f.thumbs, f.signal, f.correction, p.output->>'text' FROM samples s "
            "LEFT JOIN feedback f ON f.id = s.id AND f.feedback_id = s.feedback_id "
            "LEFT JOIN predictions p ON p.prediction_id = s.prediction_id "
            "WHERE s.model = %s AND s.cluster_id = ANY(%s) ORDER BY s.id", (self.model, ids)).fetchall()
        return [StoredPair(int(r[0]), int(r[1]), r[2], bytes(r[3] or b""), r[4],
                           Verdict(r[5], float(r[6]), tuple(r[7])), r[8], r[9], r[10], r[11], r[12]) for r in rows]

    def clusters_of(self, user_ids: Iterable[str]) -> set[int]:
        users = sorted(set(user_ids))
        if not users:
            return set()
        rows = self.conn.execute("SELECT DISTINCT cluster_id FROM samples WHERE model = %s AND user_id = ANY(%s) "
                                 "AND cluster_id IS NOT NULL", (self.model, users)).fetchall()
        return {int(r[0]) for r in rows}

    def write(self, batch: BatchWrite) -> None:
        with self.conn.cursor() as cur:
            if batch.new:
                cur.executemany(_INSERT, [_insert_row(n, self.model) for n in batch.new])
            if batch.changed:
                cur.executemany(
                    "UPDATE samples SET status = %s, weight = %s, reasons = %s, landed_at = now() WHERE id = %s "
                    "AND model = %s",
                    [(v.status, v.weight, Jsonb(list(v.reasons)), i, self.model)
                     for i, v in sorted(batch.changed.items())])
            if batch.annotators:
                cur.executemany(
                    "INSERT INTO annotators (model, user_id, agree, disagree, labels, trust, low_trust) "
                    "VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT (model, user_id) DO UPDATE SET "
                    "agree = EXCLUDED.agree, "
                    "disagree = EXCLUDED.disagree, labels = EXCLUDED.labels, trust = EXCLUDED.trust, "
                    "low_trust = EXCLUDED.low_trust, updated_at = now()",
                    [(self.model, a.user_id, a.agree, a.disagree, a.labels, trust(a.agree, a.disagree, self.config),
                      a.low_trust) for a in sorted(batch.annotators, key=lambda a: a.user_id)])
            cur.execute("UPDATE curation_state SET watermark = GREATEST(watermark, %s), "
                        "resolved_cursor = GREATEST(resolved_cursor, %s), updated_at = now() WHERE name = %s",
                        (batch.watermark, batch.resolved_cursor, self.model))

    def unscored(self, limit: int) -> Sequence[Pending]:
        return [Pending(*r) for r in self.conn.execute(_UNSCORED, (self.model, limit)).fetchall()]

    def backfill(self, rows: Sequence[Backfill]) -> None:
        if not rows:
            return
        with self.conn.cursor() as cur:
            cur.executemany(
                "UPDATE samples SET text_hash = %s, minhash = %s, lsh_bands = %s, disagreement = %s, "
                "label_quality = %s, cluster_id = COALESCE(cluster_id, id), curated_at = now() WHERE id = %s",
                [(b.text_hash, _pack(b.minhash), list(b.bands), b.disagreement, b.self_confidence, b.id)
                 for b in rows])

    # -- reads for metrics -------------------------------------------------------------------------
    def lag(self) -> int:
        """Joined feedback above the watermark without a sample (late joins below it are not counted)."""
        try:
            row = self.conn.execute(
                "SELECT count(*) FROM feedback f WHERE f.status = 'joined' AND f.model = %s AND f.id > "
                "COALESCE((SELECT watermark FROM curation_state WHERE name = %s), 0) "
                "AND NOT EXISTS (SELECT 1 FROM samples s WHERE s.id = f.id)", (self.model, self.model)).fetchone()
        except psycopg.Error as exc:
            raise CurationStoreError(_one_line(exc)) from exc
        return int(row[0]) if row else 0


def _insert_row(n: NewSample, model: str) -> tuple[Any, ...]:
    p, v = n.pending, n.verdict
    return (p.id, p.feedback_id, p.prediction_id, p.text, p.label, v.status, v.weight, Jsonb(list(v.reasons)),
            p.user_id, p.domain, p.segment, p.ts, p.thumbs, p.predicted_label, p.model_version, n.disagreement,
            n.self_confidence, n.label_issue, n.suggested_label, n.trust, n.cluster_id, n.text_hash,
            _pack(n.minhash), list(n.bands), model, None if p.input is None else Jsonb(p.input), n.target, p.rating,
            p.signal)


def _pack(minhash: tuple[int, ...]) -> bytes:
    return np.asarray(minhash, dtype="<i4").tobytes()


def _unpack(raw: bytes) -> tuple[int, ...]:
    return tuple(int(v) for v in np.frombuffer(raw, dtype="<i4"))


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__
