"""The runtime's one retry loop (streams/_retry.py), driven without a database: capped exponential
back-off, which errors are outages, and when work is abandoned."""

from __future__ import annotations

import itertools

import psycopg
import pytest

from core.exceptions import DatabaseUnavailable
from streams._retry import Abandoned, Backoff, is_outage, retrying
from streams.exceptions import DeliveryError


def test_backoff_doubles_up_to_its_cap() -> None:
    assert list(itertools.islice(Backoff(0.2, 5.0).delays(), 8)) == [0.2, 0.4, 0.8, 1.6, 3.2, 5.0, 5.0, 5.0]


def test_outages_are_retried_with_the_backoff_delays_until_success() -> None:
    waits: list[float] = []
    seen: list[BaseException] = []
    failures = iter([DatabaseUnavailable("down"), psycopg.OperationalError("lost"),
                     DeliveryError("dlq", "timed out", 1)])

    def attempt() -> str:
        error = next(failures, None)
        if error is not None:
            raise error
        return "committed"

    result = retrying(attempt, Backoff(1.0, 3.0), wait=lambda d: waits.append(d) or False, on_outage=seen.append)
    assert result == "committed" and waits == [1.0, 2.0, 3.0] and len(seen) == 3


@pytest.mark.parametrize("error", [
    DeliveryError("dlq", "too large", 1, permanent=True),
    psycopg.errors.ProgramLimitExceeded("row too big"),  # 54: about the record, not the server
    ValueError("a bug"),
])
def test_errors_that_are_not_outages_are_raised_at_once(error: Exception) -> None:
    def attempt() -> None:
        raise error

    with pytest.raises(type(error)):
        retrying(attempt, Backoff(0.1, 1.0), wait=lambda _d: pytest.fail("must not wait"),
                 on_outage=lambda _e: pytest.fail("not an outage"))


def test_transient_sqlstates_are_outages() -> None:
    assert is_outage(psycopg.errors.SerializationFailure("40001"))
    assert is_outage(psycopg.errors.AdminShutdown("57P01"))
    assert not is_outage(psycopg.errors.QueryCanceled("57014: statement timeout"))
    assert not is_outage(psycopg.errors.UniqueViolation("23505"))


def test_a_stop_during_the_wait_or_an_abandoned_batch_gives_up() -> None:
    def down() -> None:
        raise DatabaseUnavailable("down")

    with pytest.raises(Abandoned):  # stop requested while waiting out the outage
        retrying(down, Backoff(0.1, 1.0), wait=lambda _d: True, on_outage=lambda _e: None)
    attempts: list[int] = []
    with pytest.raises(Abandoned):  # a rebalance before the first attempt: nothing is tried
        retrying(lambda: attempts.append(1), Backoff(0.1, 1.0), wait=lambda _d: False,
                 on_outage=lambda _e: None, abandoned=lambda: True)
    assert attempts == []
    generation = iter([False, True])  # the rebalance happens during the first wait
    with pytest.raises(Abandoned):
        retrying(down, Backoff(0.1, 1.0), wait=lambda _d: False, on_outage=lambda _e: None,
                 abandoned=lambda: next(generation))
