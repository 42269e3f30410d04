"""Model specs in Postgres (``models``, migration 0009), and the in-memory catalog a processor reads.

psycopg errors are not translated here: callers run inside their own transaction and retry policy
(the ingest sink retries a batch on an outage; the CLI reports it)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from tasks.spec import ModelSpec, parse_spec


class ModelStore:
    """Reads and writes of the ``models`` table on one connection."""

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self.conn = conn

    def put(self, spec: ModelSpec, *, source: str, replace: bool = True) -> bool:
        """Store ``spec``; True when it was new or changed. With ``replace`` False an existing spec of
        that name is kept as it is (the default model is declared that way at every start)."""
        conflict = ("DO UPDATE SET task = EXCLUDED.task, spec = EXCLUDED.spec, source = EXCLUDED.source, "
                    "updated_at = now() WHERE models.spec IS DISTINCT FROM EXCLUDED.spec") if replace else "DO NOTHING"
        cur = self.conn.execute(
            f"INSERT INTO models (name, task, spec, source) VALUES (%s, %s, %s, %s) ON CONFLICT (name) {conflict}",
            (spec.name, spec.task, Jsonb(spec.to_document()), source))
        return cur.rowcount > 0

    def get(self, name: str) -> ModelSpec | None:
        row = self.conn.execute("SELECT spec FROM models WHERE name = %s", (name,)).fetchone()
        return None if row is None else parse_spec(row[0], f"models[{name}]")

    def all(self) -> list[ModelSpec]:
        rows = self.conn.execute("SELECT name, spec FROM models ORDER BY name").fetchall()
        return [parse_spec(spec, f"models[{name}]") for name, spec in rows]

    def sources(self) -> dict[str, tuple[str, Any]]:
        """name -> (source, updated_at), for ``flywheel models list``."""
        return {r[0]: (r[1], r[2]) for r in self.conn.execute("SELECT name, source, updated_at FROM models")}


class ModelCatalog:
    """The declared models as one process sees them: read again from Postgres when older than
    ``max_age_s`` (a changed spec) and whenever asked for a name it does not hold, so a model created a
    moment ago is known to the next record that names it. :meth:`lookup` asks once per name per batch."""

    def __init__(self, *, max_age_s: float = 30.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_age_s = max_age_s
        self.clock = clock
        self._specs: dict[str, ModelSpec] = {}
        self._loaded_at: float | None = None

    def get(self, conn: psycopg.Connection[Any], name: str) -> ModelSpec | None:
        stale = self._loaded_at is None or self.clock() - self._loaded_at >= self.max_age_s
        if stale or name not in self._specs:
            self.refresh(conn)
        return self._specs.get(name)

    def lookup(self, conn: psycopg.Connection[Any]) -> Callable[[str], ModelSpec | None]:
        """A ``name -> spec`` function for one batch: each name is read from Postgres at most once, so a
        batch of many records naming an unknown model costs one query, not one per record."""
        seen: dict[str, ModelSpec | None] = {}

        def spec(name: str) -> ModelSpec | None:
            if name not in seen:
                seen[name] = self.get(conn, name)
            return seen[name]

        return spec

    def refresh(self, conn: psycopg.Connection[Any]) -> None:
        self._specs = {spec.name: spec for spec in ModelStore(conn).all()}
        self._loaded_at = self.clock()

    def cached(self) -> dict[str, ModelSpec]:
        return dict(self._specs)
