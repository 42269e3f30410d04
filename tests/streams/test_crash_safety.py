"""kill -9 the ingest processor (a real subprocess) at random moments while 50k+ events stream in:
after restarts the tables hold exactly the unique valid events, 0 lost, 0 duplicated, and the
exactly-once counters agree with what was produced."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest

from core.kafka import KafkaConnection
from core.settings import FlywheelSettings
from tests.streams.helpers import count, create_topics, wait_until
from tests.streams.stream_load import build, stream

KILLS = 6


def _committed(db_url: str) -> int:
    return count(db_url, "SELECT coalesce(sum(next_offset), 0) FROM stream_offsets")


def processor_env(settings: FlywheelSettings, **extra: str) -> dict[str, str]:
    assert settings.kafka_bootstrap and settings.database_url
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLYWHEEL_")}
    env.update(
        FLYWHEEL_KAFKA_BOOTSTRAP=settings.kafka_bootstrap,
        FLYWHEEL_DATABASE_URL=settings.database_url.get_secret_value(),
        FLYWHEEL_TOPIC_PREFIX=settings.topic_prefix,
        FLYWHEEL_DATA_DIR=str(settings.data_dir),
        FLYWHEEL_METRICS_PORT="0",
        FLYWHEEL_BATCH_MAX_RECORDS="1000",
        FLYWHEEL_BATCH_MAX_WAIT_MS="50",
        FLYWHEEL_SESSION_TIMEOUT_MS="3000",
        FLYWHEEL_ORPHAN_TIMEOUT_S="3600",
    )
    env.update(extra)
    return env


def start_processor(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen([sys.executable, "-m", "flywheel", "process", "ingest"], env=env,
                                stdout=out, stderr=subprocess.STDOUT)


def assert_exactly_once(db_url: str, group: str, exp: object) -> None:
    from tests.streams.stream_load import Expected

    assert isinstance(exp, Expected)
    with psycopg.connect(db_url) as conn:
        preds = {r[0] for r in conn.execute("SELECT prediction_id FROM predictions")}
        fbs = [r[0] for r in conn.execute("SELECT feedback_id FROM feedback")]
        dead = conn.execute(
            'SELECT count(*), count(DISTINCT (topic, partition, "offset")) FROM dead_letters').fetchone()
        counters = dict(
            conn.execute("SELECT name, value FROM stream_counters WHERE group_id = %s", (group,)).fetchall())
    assert preds == exp.predictions, f"lost {len(exp.predictions - preds)}, extra {len(preds - exp.predictions)}"
    assert len(fbs) == len(set(fbs)), "duplicated feedback rows"
    assert set(fbs) == exp.feedback, f"lost {len(exp.feedback - set(fbs))}, extra {len(set(fbs) - exp.feedback)}"
    assert dead == (exp.invalid, exp.invalid)
    consumed = sum(v for k, v in counters.items() if k.startswith("consumed:"))
    assert consumed == exp.records, "exactly-once counters disagree with what was produced"
    assert counters["landed:prediction"] == len(exp.predictions)
    assert counters["landed:feedback"] == len(exp.feedback)


@pytest.mark.slow
def test_kill_9_at_random_moments_loses_and_duplicates_nothing(
    settings: FlywheelSettings, kafka_conn: KafkaConnection, db_url: str, tmp_path: Path
) -> None:
    create_topics(settings, kafka_conn)
    records, exp = build(26_000, seed=11)
    assert exp.records >= 50_000
    # each restart needs ~7 s to rejoin the group (the killed member must time out first): the stream
    # must outlast all the kills, so that every kill hits a processor in the middle of the stream
    producer_thread = stream(kafka_conn, settings.topics, records, seconds=KILLS * 9)
    env = processor_env(settings)
    log = tmp_path / "processor.log"
    rng = random.Random(5)
    committed_at_kill: list[int] = []
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for _ in range(KILLS):
            before = _committed(db_url)
            proc = start_processor(env, log)
            procs.append(proc)
            # kill at a random moment once this process is committing (not while it still joins the group)
            wait_until(lambda b=before: _committed(db_url) > b, timeout=60, what="the restarted processor to commit")
            time.sleep(rng.uniform(0.0, 0.4))
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
            committed_at_kill.append(_committed(db_url))
        producer_thread.join(120)
        proc = start_processor(env, log)
        procs.append(proc)
        wait_until(lambda: _committed(db_url) == exp.records, timeout=180, what="all committed after the kills")
        wait_until(lambda: log.read_text().count("assigned [(") > KILLS, timeout=30, what="final processor assigned")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0, log.read_text()[-3000:]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait(10)
    # every kill hit a processor that was committing, before the stream was complete
    assert committed_at_kill[-1] < exp.records and len(set(committed_at_kill)) == KILLS, committed_at_kill
    print("committed offsets at each kill:", committed_at_kill, "of", exp.records)
    assert_exactly_once(db_url, f"{settings.topic_prefix}-ingest", exp)
