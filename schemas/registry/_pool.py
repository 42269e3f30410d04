"""A few reusable autocommit psycopg connections, with psycopg's errors translated to :class:`SchemaStoreError`."""

from __future__ import annotations

import queue
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
from psycopg import pq

from core import db
from core.exceptions import DatabaseUnavailable
from schemas.registry.exceptions import SchemaStoreError


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


class ConnectionPool:
    """Hands out connections (opened lazily) and keeps up to ``max_idle`` of the healthy ones."""

    def __init__(self, url: str, *, max_idle: int = 4, connect_timeout: int = 5) -> None:
        self._url = url
        self._connect_timeout = connect_timeout
        self._idle: queue.LifoQueue[psycopg.Connection] = queue.LifoQueue(maxsize=max_idle)

    @contextmanager
    def connection(self) -> Iterator[psycopg.Connection]:
        """A connection in autocommit mode; use ``conn.transaction()`` for atomic work. Raises
        :class:`SchemaStoreError` for any database failure."""
        try:
            conn = self._idle.get_nowait()
        except queue.Empty:
            conn = self._open()
        try:
            yield conn
        except psycopg.Error as exc:
            raise SchemaStoreError(_one_line(exc)) from exc
        finally:
            self._release(conn)

    def close(self) -> None:
        while True:
            try:
                self._idle.get_nowait().close()
            except queue.Empty:
                return

    def _open(self) -> psycopg.Connection:
        try:
            return db.connect(self._url, autocommit=True, connect_timeout=self._connect_timeout)
        except DatabaseUnavailable as exc:
            raise SchemaStoreError(str(exc), retry_after=exc.retry_after) from exc

    def _release(self, conn: psycopg.Connection) -> None:
        if conn.closed or conn.info.transaction_status != pq.TransactionStatus.IDLE:
            conn.close()
            return
        try:
            self._idle.put_nowait(conn)
        except queue.Full:
            conn.close()
