"""Data-to-deploy: the time from a feedback event (its event time) to the first prediction served by a
model version trained on it, per model; tables of migration 0012.

The trainer and the serving pods share it through Postgres, so it stays true with several pods, several
models and restarts:

- the trainer, once a version is registered and before its aliases move, records which samples it trained
  on that no served version had trained on yet (:func:`record_trained`);
- the pod that serves a version first wins one row per model and version (:func:`record_first_serve`); in
  the same transaction each of that version's samples gets its one ``feedback_served`` row (a sample another
  version already deployed keeps its earlier row), and only the winner gets the seconds back to observe in
  its histogram. A pod that restarts, or a second pod, finds the row and observes nothing.

Two pods that serve a new version within milliseconds of each other: the first to commit wins, so the
recorded serve time may be a few milliseconds after the true first prediction.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg

from registry.exceptions import DeployRecordError

__all__ = ["DeploySummary", "forget_version", "record_first_serve", "record_trained", "summaries"]

Conn = psycopg.Connection[tuple[Any, ...]]


def record_trained(conn: Conn, model: str, version: str, sample_ids: Sequence[int]) -> int:
    """Record the feedback samples (ids > 0; corpus rows are not feedback) ``version`` trained on that no
    served version had trained on yet; how many. One statement: atomic on an autocommit connection."""
    ids = sorted({int(i) for i in sample_ids if i > 0})
    if not ids:
        return 0
    try:
        cur = conn.execute(
            "INSERT INTO version_feedback (model, version, sample_id, ts) "
            "SELECT s.model, %s, s.id, s.ts FROM samples s WHERE s.model = %s AND s.id = ANY(%s) "
            "AND NOT EXISTS (SELECT 1 FROM feedback_served d WHERE d.model = s.model AND d.sample_id = s.id) "
            "ON CONFLICT DO NOTHING", (version, model, ids))
    except psycopg.Error as exc:
        raise DeployRecordError(model, version, f"cannot record the trained feedback: {exc}") from exc
    return cur.rowcount


def record_first_serve(conn: Conn, model: str, version: str, served_at: datetime, pod: str = ""
                       ) -> list[float] | None:
    """Record that ``version`` of ``model`` served its first prediction at ``served_at``. ``None`` when
    that was recorded before (another pod, or this one before a restart); else the data-to-deploy seconds
    of every feedback event this version was the first to deploy (to observe once, by the caller)."""
    try:
        return _first_serve(conn, model, version, served_at, pod)
    except psycopg.Error as exc:
        raise DeployRecordError(model, version, f"cannot record the first serve: {exc}") from exc


def _first_serve(conn: Conn, model: str, version: str, served_at: datetime, pod: str) -> list[float] | None:
    with conn.transaction():
        won = conn.execute(
            "INSERT INTO version_first_served (model, version, served_at, pod) VALUES (%s, %s, %s, %s) "
            "ON CONFLICT DO NOTHING RETURNING version", (model, version, served_at, pod)).fetchone()
        if won is None:
            return None
        rows = conn.execute(
            "INSERT INTO feedback_served (model, sample_id, ts, version, served_at, seconds) "
            "SELECT model, sample_id, ts, version, %s, GREATEST(0, extract(epoch FROM %s - ts)) "
            "FROM version_feedback WHERE model = %s AND version = %s ORDER BY sample_id "
            "ON CONFLICT DO NOTHING RETURNING seconds", (served_at, served_at, model, version)).fetchall()
        seconds = [float(r[0]) for r in rows]
        conn.execute("UPDATE version_first_served SET feedback = %s WHERE model = %s AND version = %s",
                     (len(seconds), model, version))
        conn.execute("DELETE FROM version_feedback WHERE model = %s AND version = %s", (model, version))
    return seconds


def forget_version(conn: Conn, model: str, version: str) -> None:
    """Drop what a version that was deleted before serving recorded (its number is never served)."""
    conn.execute("DELETE FROM version_feedback WHERE model = %s AND version = %s", (model, version))


@dataclass(frozen=True)
class DeploySummary:
    """One model's data-to-deploy figures, from ``feedback_served`` (the platform's own record)."""

    model: str
    events: int
    p50_s: float
    p95_s: float
    versions: int
    last_served_at: datetime | None


def summaries(conn: Conn, model: str | None = None) -> dict[str, DeploySummary]:
    """Data-to-deploy p50/p95 per model (one model with ``model``); models with no deployed feedback are
    absent."""
    where, params = ("WHERE model = %s", (model,)) if model is not None else ("", ())
    rows = conn.execute(
        "SELECT model, count(*), percentile_cont(0.5) WITHIN GROUP (ORDER BY seconds), "
        "percentile_cont(0.95) WITHIN GROUP (ORDER BY seconds), count(DISTINCT version), max(served_at) "
        f"FROM feedback_served {where} GROUP BY model ORDER BY model", params).fetchall()
    return {str(r[0]): DeploySummary(str(r[0]), int(r[1]), float(r[2]), float(r[3]), int(r[4]), r[5]) for r in rows}
