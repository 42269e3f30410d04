"""Broker + a fresh, migrated database for one benchmark run (cleaned up afterwards)."""

from __future__ import annotations

import contextlib
import os
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
from psycopg import sql

from flywheel import migrate
from flywheel.stack import EmbeddedBroker, EmbeddedPostgres

LOCAL_PG = "postgresql://postgres@127.0.0.1:5432/postgres"


@contextlib.contextmanager
def bench_stack(broker: str | None = "memory") -> Iterator[tuple[str, str]]:
    """Yield (bootstrap, database_url): FLYWHEEL_KAFKA_BOOTSTRAP or the embedded broker (``broker``:
    memory, durable or durable+fsync storage; None = no broker, bootstrap ""), and a new database on
    FLYWHEEL_DATABASE_URL's server, the local Postgres, or pgserver."""
    with contextlib.ExitStack() as stack:
        bootstrap = os.environ.get("FLYWHEEL_KAFKA_BOOTSTRAP") or ""
        if not bootstrap and broker is not None:
            durable = broker.startswith("durable")
            embedded = EmbeddedBroker(storage_dir=Path(tempfile.mkdtemp()) / "broker" if durable else None,
                                      fsync=broker == "durable+fsync")
            bootstrap = embedded.start()
            stack.callback(embedded.stop)
        admin_url = os.environ.get("FLYWHEEL_DATABASE_URL") or LOCAL_PG
        try:
            psycopg.connect(admin_url, connect_timeout=2).close()
        except psycopg.OperationalError:
            pgserver = EmbeddedPostgres(Path(tempfile.mkdtemp()) / "pg")
            admin_url = pgserver.start()
            stack.callback(pgserver.stop)
        name = f"flywheel_bench_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))

        def drop() -> None:
            with psycopg.connect(admin_url, autocommit=True) as conn:
                conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))

        stack.callback(drop)
        info = psycopg.conninfo.conninfo_to_dict(admin_url)
        info["dbname"] = name
        url = psycopg.conninfo.make_conninfo(**info)  # type: ignore[arg-type]
        migrate.upgrade(url)
        yield bootstrap, url
