"""Single flight, the record of every training run (table ``training_runs``) and a run's result.

One Postgres session-level advisory lock per model name: whoever holds it is the only trainer of that
model anywhere; a crash closes the session and frees the lock. A run left ``running`` by a crashed
holder is settled by the next holder (it alone can know that nobody is running it): ``abandoned``, or
recorded as done when its version already holds an alias.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import psycopg

from core import db
from registry import ModelVersionInfo
from registry.requests import find_run, recent_runs
from schemas import ModelEvent
from trainer.data import Snapshot
from trainer.policy import Mode, Trigger

FINAL = ("promoted", "canary", "refused", "failed", "abandoned")


def lock_key(model_name: str) -> int:
    """The advisory lock key of the model's trainer."""
    return db.advisory_key(f"flywheel.trainer:{model_name}")


@contextmanager
def single_flight(conn: psycopg.Connection[tuple[Any, ...]], model_name: str) -> Iterator[bool]:
    """Yield True while holding the model's trainer lock, False when another session holds it."""
    with db.try_advisory_lock(conn, lock_key(model_name)) as held:
        yield held


@dataclass(frozen=True)
class RunResult:
    """What one call of the trainer came to; a refused or failed run is a result, not an error."""

    status: str  # skipped | busy | promoted | canary | refused | failed
    reason: str
    run_id: uuid.UUID | None = None
    mode: Mode | None = None
    version: ModelVersionInfo | None = None
    event: ModelEvent | None = None
    candidates: tuple[dict[str, Any], ...] = ()


@dataclass(frozen=True)
class LastAttempt:
    mode: str
    watermark: int
    sample_count: int
    status: str


class RunLog:
    """``training_runs`` rows; call only while holding the single-flight lock (autocommit connection)."""

    def __init__(self, conn: psycopg.Connection[tuple[Any, ...]], model_name: str) -> None:
        self.conn = conn
        self.model_name = model_name

    def stale(self) -> set[str]:
        """Run ids left ``running``: only the lock holder calls this, so nobody is running them."""
        rows = self.conn.execute("SELECT run_id FROM training_runs WHERE model_name = %s AND status = 'running'",
                                 (self.model_name,)).fetchall()
        return {str(r[0]) for r in rows}

    def abandon(self, run_ids: set[str]) -> None:
        if run_ids:
            self.conn.execute(
                "UPDATE training_runs SET status = 'abandoned', reason = 'the trainer holding it stopped', "
                "finished_at = now() WHERE run_id = ANY(%s::uuid[]) AND status = 'running'", (sorted(run_ids),))

    def last_attempt(self, modes: tuple[str, ...] = ("incremental", "full", "bootstrap")) -> LastAttempt | None:
        row = self.conn.execute(
            "SELECT mode, watermark, sample_count, status FROM training_runs WHERE model_name = %s "
            "AND mode = ANY(%s) AND status <> 'failed' AND status <> 'abandoned' ORDER BY id DESC LIMIT 1",
            (self.model_name, list(modes))).fetchone()
        return None if row is None else LastAttempt(row[0], int(row[1]), int(row[2]), row[3])

    def for_request(self, request_id: str) -> str | None:
        row = self.conn.execute("SELECT status FROM training_runs WHERE request_id = %s", (request_id,)).fetchone()
        return None if row is None else str(row[0])

    def failures(self, mode: Mode, snapshot: Snapshot) -> int:
        row = self.conn.execute(
            "SELECT count(*) FROM training_runs WHERE model_name = %s AND mode = %s AND watermark = %s "
            "AND sample_count = %s AND status IN ('failed', 'abandoned')",
            (self.model_name, mode, snapshot.watermark, snapshot.count)).fetchone()
        return int(row[0]) if row else 0

    def attempted(self, mode: Mode, snapshot: Snapshot) -> str | None:
        """The status of an earlier run on exactly this data in this mode, if any (replayed signals)."""
        row = self.conn.execute(
            "SELECT status FROM training_runs WHERE model_name = %s AND mode = %s AND watermark = %s "
            "AND sample_count = %s AND status <> 'failed' AND status <> 'abandoned' ORDER BY id DESC LIMIT 1",
            (self.model_name, mode, snapshot.watermark, snapshot.count)).fetchone()
        return None if row is None else str(row[0])

    def start(self, *, trigger: Trigger, mode: Mode, snapshot: Snapshot, parent: str | None,
              request_id: str | None = None) -> uuid.UUID:
        run_id = uuid.uuid4()
        self.conn.execute(
            "INSERT INTO training_runs (run_id, model_name, trigger, request_id, mode, status, watermark, "
            "sample_count, data_hash, parent_version) VALUES (%s, %s, %s, %s, %s, 'running', %s, %s, '', %s)",
            (run_id, self.model_name, trigger, request_id, mode, snapshot.watermark, snapshot.count, parent))
        return run_id

    def finish(self, run_id: uuid.UUID, *, status: str, reason: str, data_hash: str | None = None,
               trained_count: int | None = None,
               version: str | None = None, kind: str | None = None, candidates: list[dict[str, Any]] | None = None,
               mlflow_run_id: str | None = None) -> None:
        assert status in FINAL, status
        self.conn.execute(
            "UPDATE training_runs SET status = %s, reason = %s, data_hash = COALESCE(%s, data_hash), "
            "trained_count = COALESCE(%s, trained_count), version = %s, kind = %s, candidates = %s, "
            "mlflow_run_id = %s, finished_at = now(), "
            "duration_s = extract(epoch FROM now() - started_at) WHERE run_id = %s",
            (status, reason[:4000], data_hash, trained_count, version, kind, json.dumps(candidates or []),
             mlflow_run_id, run_id))

    def recent(self, limit: int = 20) -> list[dict[str, Any]]:
        return recent_runs(self.conn, self.model_name, limit)

    def find(self, ref: str) -> dict[str, Any] | None:
        """One run by its run id, or by the id of the retrain request that started it."""
        return find_run(self.conn, self.model_name, ref)
