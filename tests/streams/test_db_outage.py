"""Postgres unreachable for a while mid-stream: the processor backs off, stays alive, and resumes with
nothing lost and nothing duplicated."""

from __future__ import annotations

import time

import psycopg
import pytest
from pydantic import SecretStr

from core.kafka import KafkaConnection
from core.settings import FlywheelSettings
from tests.streams.helpers import count, create_topics, running_ingest, wait_until
from tests.streams.stream_load import build, stream
from tests.streams.test_crash_safety import assert_exactly_once
from tests.tcp_proxy import CuttableProxy

VIA_PROXY = "flywheel-via-proxy"  # application_name of the processor's sessions: tells them from the test's


def _target(db_url: str) -> tuple[str, int] | str:
    info = psycopg.conninfo.conninfo_to_dict(db_url)
    host = str(info.get("host") or "/var/run/postgresql")
    port = int(info.get("port") or 5432)
    return f"{host}/.s.PGSQL.{port}" if host.startswith("/") else (host, port)


def _sessions_via_proxy(db_url: str) -> int:
    """Server sessions the processor opened through the proxy (still alive on the Postgres side)."""
    return count(db_url, "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                         "AND application_name = %s", VIA_PROXY)


def test_postgres_outage_mid_stream_loses_nothing(
    settings: FlywheelSettings, kafka_conn: KafkaConnection, db_url: str
) -> None:
    create_topics(settings, kafka_conn)
    proxy = CuttableProxy(_target(db_url)).start()
    info = psycopg.conninfo.conninfo_to_dict(db_url)
    info.update(host="127.0.0.1", port=proxy.port, application_name=VIA_PROXY)
    via_proxy = settings.model_copy(update={
        "database_url": SecretStr(psycopg.conninfo.make_conninfo(**info)), "batch_max_records": 500,
        "db_retry_max_s": 1.0})
    records, exp = build(6000, seed=3)
    try:
        with running_ingest(via_proxy) as runner:
            producer = stream(kafka_conn, settings.topics, records, seconds=8)
            wait_until(lambda: count(db_url, "SELECT count(*) FROM predictions") > 500, what="first rows")
            proxy.cut()
            # A COMMIT the proxy forwarded just before the cut still completes on the server after it,
            # although its client only sees the connection reset. Sample once every session opened
            # through the proxy has ended: its transaction is then committed or rolled back for good,
            # and no new one can start (the proxy refuses connections).
            wait_until(lambda: _sessions_via_proxy(db_url) == 0, timeout=30,
                       what="the processor's Postgres sessions to end after the cut")
            at_cut = count(db_url, "SELECT coalesce(sum(next_offset), 0) FROM stream_offsets")
            time.sleep(6)  # records keep arriving in Kafka while Postgres is unreachable
            assert count(db_url, "SELECT coalesce(sum(next_offset), 0) FROM stream_offsets") == at_cut
            retries = runner.metrics.db_retries.labels(runner.group)._value.get()
            assert retries >= 2, "the processor should have retried while Postgres was down"
            proxy.restore()
            producer.join(60)
            wait_until(lambda: count(db_url, "SELECT coalesce(sum(next_offset), 0) FROM stream_offsets")
                       == exp.records, timeout=90, what="every record committed after the outage")
    finally:
        proxy.stop()
    assert at_cut < exp.records
    assert_exactly_once(db_url, f"{settings.topic_prefix}-ingest", exp)


@pytest.mark.parametrize("n", [1])
def test_processor_starts_while_postgres_is_down(
    settings: FlywheelSettings, kafka_conn: KafkaConnection, db_url: str, n: int
) -> None:
    """Assignment needs the stored offsets: it waits for Postgres instead of guessing."""
    create_topics(settings, kafka_conn)
    proxy = CuttableProxy(_target(db_url)).start()
    proxy.cut()
    info = psycopg.conninfo.conninfo_to_dict(db_url)
    info.update(host="127.0.0.1", port=proxy.port)
    via_proxy = settings.model_copy(update={"database_url": SecretStr(psycopg.conninfo.make_conninfo(**info)),
                                            "db_retry_max_s": 0.5})
    records, exp = build(500 * n, seed=4)
    try:
        with running_ingest(via_proxy):
            stream(kafka_conn, settings.topics, records, seconds=1).join(30)
            time.sleep(4)
            assert count(db_url, "SELECT count(*) FROM predictions") == 0
            proxy.restore()
            wait_until(lambda: count(db_url, "SELECT coalesce(sum(next_offset), 0) FROM stream_offsets")
                       == exp.records, timeout=60, what="records committed once Postgres is back")
    finally:
        proxy.stop()
    assert_exactly_once(db_url, f"{settings.topic_prefix}-ingest", exp)
