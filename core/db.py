"""Postgres access: connections (psycopg 3), advisory locks, the SQLAlchemy form of a URL. Schema
migrations are the app's (:mod:`flywheel.migrate`).

Callers get :class:`DatabaseUnavailable` instead of psycopg's errors when the server cannot be reached.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict

from core.exceptions import DatabaseUnavailable

# For long-lived processor connections: notice a silently dead server or network in ~30 s instead of
# the kernel's ~15 min, and never let one statement or lock wait hang a writer forever.
_SESSION_TIMEOUTS: dict[str, Any] = {
    "keepalives": 1, "keepalives_idle": 10, "keepalives_interval": 5, "keepalives_count": 3,
    "tcp_user_timeout": 30_000,
    "options": "-c statement_timeout=120s -c lock_timeout=60s -c idle_in_transaction_session_timeout=300s",
}


def connect(url: str, *, autocommit: bool = False, connect_timeout: int = 5,
            session_timeouts: bool = False) -> psycopg.Connection:
    """Open a connection; translate 'cannot connect' into :class:`DatabaseUnavailable`."""
    extra: dict[str, Any] = _SESSION_TIMEOUTS if session_timeouts else {}
    try:
        return psycopg.connect(url, autocommit=autocommit, connect_timeout=connect_timeout, **extra)
    except psycopg.OperationalError as exc:
        raise DatabaseUnavailable(_one_line(exc)) from exc


class Connector:
    """The connection factory stages are given instead of a URL: ``connector()`` opens a connection
    (a context manager) to one database with one set of options. Built once at an entry point; tests
    pass one pointing at their own database. ``url`` is the conninfo it connects to (a secret: never log it)."""

    def __init__(self, url: str, *, connect_timeout: int = 5, session_timeouts: bool = False) -> None:
        self.url = url
        self.connect_timeout = connect_timeout
        self.session_timeouts = session_timeouts

    def __call__(self, *, autocommit: bool = True) -> psycopg.Connection:
        return connect(self.url, autocommit=autocommit, connect_timeout=self.connect_timeout,
                       session_timeouts=self.session_timeouts)

    def __repr__(self) -> str:  # the URL may hold a password
        return f"Connector(session_timeouts={self.session_timeouts})"


def session_connector(url: str) -> Connector:
    """The connection factory of a long-lived consumer (processors, curation): keepalives and statement,
    lock and idle-in-transaction time-outs, so a silently dead server is noticed in about 30 s."""
    return Connector(url, session_timeouts=True)


def advisory_key(name: str) -> int:
    """A stable signed 64-bit advisory lock key for ``name`` (e.g. ``flywheel.trainer:<model>``)."""
    digest = hashlib.sha256(name.encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


@contextlib.contextmanager
def try_advisory_lock(conn: psycopg.Connection[Any], key: int) -> Iterator[bool]:
    """Yield True while this session holds the lock ``key``, False when another session holds it. A
    session-level lock: it is released on exit, or by Postgres when the session dies."""
    row = conn.execute("SELECT pg_try_advisory_lock(%s)", (key,)).fetchone()
    held = bool(row and row[0])
    try:
        yield held
    finally:
        if held and not conn.closed:
            conn.execute("SELECT pg_advisory_unlock(%s)", (key,))


def sqlalchemy_url(url: str) -> str:
    """The same database as a SQLAlchemy URL using the psycopg 3 driver.

    Accepts a ``postgresql://`` URL or a libpq ``key=value`` string (unix-socket hosts included)."""
    from sqlalchemy.engine import URL  # only migrations and MLflow need it: a connection stays light

    info = {k: str(v) for k, v in conninfo_to_dict(url).items() if v is not None}
    host = info.pop("host", None)
    port = info.pop("port", None)
    query = dict(info)
    for key in ("user", "password", "dbname"):
        query.pop(key, None)
    tcp_host = host if host and not host.startswith("/") else None
    if host and tcp_host is None:
        query["host"] = host
    return URL.create(
        "postgresql+psycopg",
        username=info.get("user"),
        password=info.get("password"),
        host=tcp_host,
        port=int(port) if port and tcp_host else None,
        database=info.get("dbname"),
        query=query,
    ).render_as_string(hide_password=False)


def root_cause(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None)  # SQLAlchemy wraps the driver's error
    return _one_line(orig if isinstance(orig, BaseException) else exc)


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__
