"""Two processor instances in one group share the partitions; one leaves (SIGTERM) and one is killed
while records stream in; the survivors take over: nothing lost, nothing duplicated."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import psycopg
import pytest

from core.kafka import KafkaConnection
from core.settings import FlywheelSettings
from tests.streams.helpers import count, create_topics, wait_until
from tests.streams.stream_load import build, stream
from tests.streams.test_crash_safety import assert_exactly_once, processor_env, start_processor


def _owners(db_url: str) -> int:
    """How many distinct partitions have committed at least one batch."""
    return count(db_url, "SELECT count(*) FROM stream_offsets WHERE next_offset > 0")


@pytest.mark.slow
def test_two_instances_share_partitions_and_survive_rebalances(
    settings: FlywheelSettings, kafka_conn: KafkaConnection, db_url: str, tmp_path: Path
) -> None:
    create_topics(settings, kafka_conn)
    records, exp = build(12_000, seed=21)
    env = processor_env(settings, FLYWHEEL_BATCH_MAX_RECORDS="300")
    log_a, log_b, log_c = (tmp_path / f"{n}.log" for n in "abc")
    a = start_processor(env, log_a)
    b = start_processor(env, log_b)
    producer = stream(kafka_conn, settings.topics, records, seconds=15)
    try:
        wait_until(lambda: _owners(db_url) == 2 * settings.topic_partitions, timeout=60,
                   what="all partitions of both topics committed")
        time.sleep(3)
        both = _assignments(log_a), _assignments(log_b)
        assert all(both), f"both instances should own partitions: {both}"
        a.send_signal(signal.SIGTERM)  # graceful leave mid-stream
        assert a.wait(30) == 0
        c = start_processor(env, log_c)  # joins; then b dies hard
        time.sleep(4)
        b.send_signal(signal.SIGKILL)
        b.wait(10)
        producer.join(120)
        wait_until(lambda: count(db_url, "SELECT coalesce(sum(next_offset), 0) FROM stream_offsets") == exp.records,
                   timeout=120, what="every record committed")
        c.send_signal(signal.SIGTERM)
        assert c.wait(30) == 0
    finally:
        for proc in (a, b):
            if proc.poll() is None:
                proc.kill()
    assert_exactly_once(db_url, f"{settings.topic_prefix}-ingest", exp)
    with psycopg.connect(db_url) as conn:
        assert conn.execute("SELECT count(*) FROM feedback WHERE status = 'pending'").fetchone() == (0,)


def _assignments(log: Path) -> bool:
    return "assigned [(" in log.read_text()
