"""bench/ingest.py --processes: the landing by separate `flywheel process ingest` processes of one group, on
the real broker and Postgres: every valid unique event lands once, the rate and CPU are measured from the
first assignment the processes log."""

from __future__ import annotations

import psycopg
import pytest

from bench.ingest import landed_rate_processes, make_events, produce
from core.settings import FlywheelSettings
from streams import kafka

pytestmark = pytest.mark.timeout(180)


@pytest.mark.parametrize("processes", [2])
def test_processes_land_every_event_once(kafka_bootstrap: str, db_url: str, topic_prefix: str, processes: int) -> None:
    settings = FlywheelSettings(kafka_bootstrap=kafka_bootstrap, database_url=db_url,
                                topic_prefix=topic_prefix, batch_max_records=500, sink_writers=2, metrics_port=0,
                                orphan_timeout_s=3600)
    conn = settings.kafka_connection()
    kafka.create_topics(kafka.admin(conn), settings.topics.all(), settings.topic_partitions)
    values, unique = make_events(3000, seed=7)
    produce(conn, settings.topics.feedback, values)

    rate, cpu, logs = landed_rate_processes(settings, db_url, len(unique), processes)

    with psycopg.connect(db_url) as db:
        ids = [r[0] for r in db.execute("SELECT feedback_id FROM feedback")]
        dead = db.execute("SELECT count(*) FROM dead_letters").fetchone()
    assert set(ids) == unique and len(ids) == len(unique)  # nothing lost, nothing twice
    assert dead is not None and dead[0] == len(set(values)) - len(unique)  # the invalid records (resends are exact)
    assert rate > 0
    assert cpu["process"] > 0 and cpu["postgres"] > 0
    assert len(logs) == processes and all("assigned" in log for log in logs)
