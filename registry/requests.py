"""The record of admin requests (table ``admin_requests``) and the read side of training runs: what
serving pods and trainers share, so that a request queued by one pod is worked on by any trainer and
followed from any pod.

A pod :meth:`~AdminRequests.create`\\ s the row ``queued`` and publishes the ``RetrainRequest`` with the
same id; the trainer that takes it :meth:`~AdminRequests.claim`\\ s it (``queued`` -> ``running``, so a
replayed request finds it taken and is not worked on twice), may :meth:`~AdminRequests.release` it
(another trainer held the lock: back to ``queued``) and :meth:`~AdminRequests.finish`\\ es it (``done``
or ``failed``, with the outcome, the run id, a result and the error).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import psycopg
from psycopg.rows import dict_row

from schemas import RequestAction

Connect = Callable[..., psycopg.Connection[tuple[Any, ...]]]  # core.db.Connector: opens an autocommit connection
RequestStatus = Literal["queued", "running", "done", "failed"]
_RUN_COLUMNS = ("run_id, request_id, trigger, mode, status, watermark, sample_count, trained_count, "
                "parent_version, version, kind, reason, started_at, duration_s")
_REQUEST_COLUMNS = ("id, model_name, action, status, outcome, run_id, result, error, created_at, started_at, "
                    "finished_at")


@dataclass(frozen=True)
class Claim:
    """What :meth:`AdminRequests.claim` found: ``claimed`` (now ``running``, with its ``params``), ``taken``
    (another trainer has or had it) or ``unknown`` (no row: a request no pod recorded, e.g. the watchdog's)."""

    status: Literal["claimed", "taken", "unknown"]
    params: dict[str, Any] = field(default_factory=dict)


class AdminRequests:
    """``admin_requests`` rows of one model, through ``connect`` (a :class:`core.db.Connector`)."""

    def __init__(self, connect: Connect, model_name: str) -> None:
        self.connect = connect
        self.model_name = model_name

    def create(self, request_id: str, action: RequestAction, params: Mapping[str, Any] | None = None) -> None:
        """A ``queued`` row; a second create with the same id changes nothing."""
        with self.connect() as conn:
            conn.execute("INSERT INTO admin_requests (id, model_name, action, params) VALUES (%s, %s, %s, %s) "
                         "ON CONFLICT (id) DO NOTHING",
                         (request_id, self.model_name, action, json.dumps(dict(params or {}))))

    def claim(self, request_id: str) -> Claim:
        with self.connect() as conn:
            row = conn.execute("UPDATE admin_requests SET status = 'running', started_at = now() "
                               "WHERE id = %s AND status = 'queued' RETURNING params", (request_id,)).fetchone()
            if row is not None:
                return Claim("claimed", dict(row[0] or {}))
            found = conn.execute("SELECT 1 FROM admin_requests WHERE id = %s", (request_id,)).fetchone()
        return Claim("taken" if found else "unknown")

    def release(self, request_id: str) -> None:
        """Back to ``queued`` (the trainer lock was held elsewhere: the request is tried again)."""
        with self.connect() as conn:
            conn.execute("UPDATE admin_requests SET status = 'queued', started_at = NULL "
                         "WHERE id = %s AND status = 'running'", (request_id,))

    def finish(self, request_id: str, status: Literal["done", "failed"], *, outcome: str | None = None,
               run_id: uuid.UUID | None = None, result: Mapping[str, Any] | None = None,
               error: str | None = None) -> None:
        with self.connect() as conn:
            conn.execute(
                "UPDATE admin_requests SET status = %s, outcome = %s, run_id = %s, result = %s, error = %s, "
                "started_at = COALESCE(started_at, now()), finished_at = now() WHERE id = %s",
                (status, outcome, run_id, None if result is None else json.dumps(dict(result), default=str),
                 None if error is None else error[:4000], request_id))

    def find(self, ref: str) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
        """The request ``ref`` (if it is one) and the training run of it (``ref`` as a request id or a
        run id); ``(None, None)``: neither exists (yet)."""
        with self.connect() as conn:
            request = _rows(conn, f"SELECT {_REQUEST_COLUMNS} FROM admin_requests WHERE id = %s AND model_name = %s",
                            (ref, self.model_name))
            found = request[0] if request else None
            run_ref = str(found["run_id"]) if found and found["run_id"] else ref
            return found, find_run(conn, self.model_name, run_ref)


def find_run(conn: psycopg.Connection[tuple[Any, ...]], model_name: str, ref: str) -> dict[str, Any] | None:
    """One training run of ``model_name`` by its run id, or by the id of the request that started it."""
    found = _rows(conn, f"SELECT {_RUN_COLUMNS}, candidates, finished_at FROM training_runs "
                        "WHERE model_name = %s AND (run_id::text = %s OR request_id = %s) ORDER BY id DESC LIMIT 1",
                  (model_name, ref.lower(), ref))
    return found[0] if found else None


def recent_runs(conn: psycopg.Connection[tuple[Any, ...]], model_name: str, limit: int = 20) -> list[dict[str, Any]]:
    """The latest ``limit`` training runs of ``model_name``, newest first."""
    return _rows(conn, f"SELECT {_RUN_COLUMNS} FROM training_runs WHERE model_name = %s ORDER BY id DESC LIMIT %s",
                 (model_name, limit))


def _rows(conn: psycopg.Connection[tuple[Any, ...]], query: str, params: tuple[Any, ...]) -> list[dict[str, Any]]:
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(query, params).fetchall()
