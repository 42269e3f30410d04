"""Retrying through outages with capped exponential back-off: the one loop the processor runtime uses,
for its writers (a batch commit) and for its control thread (offsets on assignment).

Which errors are outages: Postgres unreachable or its connection lost, a transient SQLSTATE, a DLQ
delivery the broker may still accept. Everything else (a bad statement, a record Postgres refuses, a
permanent delivery error) is raised at once: retrying would loop forever.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TypeVar

import psycopg

from core.exceptions import DatabaseUnavailable
from streams.exceptions import DeliveryError

T = TypeVar("T")

OUTAGES = (DatabaseUnavailable, psycopg.OperationalError, psycopg.InterfaceError, DeliveryError)
# SQLSTATE classes worth retrying: connection (08), rollback/deadlock (40), resources (53), operator
# intervention (57P: shutdown, cannot connect now). Others (e.g. 54 program limit, 57014 statement
# timeout) are about the statement or the record: retrying would loop forever.
_TRANSIENT_SQLSTATES = ("08", "40", "53", "57P")


def is_outage(exc: BaseException) -> bool:
    if isinstance(exc, DeliveryError):
        return not exc.permanent
    if isinstance(exc, psycopg.Error):
        state = exc.sqlstate
        return state is None or state.startswith(_TRANSIENT_SQLSTATES)
    return isinstance(exc, DatabaseUnavailable)


class Abandoned(Exception):
    """The work was given up (a rebalance, or a stop while the outage lasts); nothing of it was written."""


@dataclass(frozen=True)
class Backoff:
    """Delays of ``initial_s``, doubling up to ``max_s``."""

    initial_s: float
    max_s: float

    def delays(self) -> Iterator[float]:
        delay = self.initial_s
        while True:
            yield delay
            delay = min(delay * 2, self.max_s)


def _never() -> bool:
    return False


def retrying(attempt: Callable[[], T], backoff: Backoff, *, wait: Callable[[float], bool],
             on_outage: Callable[[BaseException], None], abandoned: Callable[[], bool] = _never) -> T:
    """``attempt()`` until it succeeds. After an outage, ``on_outage(exc)`` (reset the connection, count,
    log) and ``wait(delay)``; :class:`Abandoned` when ``wait`` returns True (stopping) or ``abandoned()``
    says the work is no longer wanted (checked before every attempt and after every wait)."""
    for delay in backoff.delays():
        if abandoned():
            raise Abandoned
        try:
            return attempt()
        except OUTAGES as exc:
            if not is_outage(exc):
                raise
            on_outage(exc)
        if wait(delay) or abandoned():
            raise Abandoned
    raise AssertionError("Backoff.delays() never ends")
