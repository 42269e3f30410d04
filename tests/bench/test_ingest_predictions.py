"""bench/ingest.py --predictions: the prediction each feedback event judges is produced before it, both topics
are landed at once on the real broker and Postgres, and the landing ends only when every feedback event is
joined to its prediction (some land first and wait as pending)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from bench.ingest import done_when, landed_rate, make_events, predictions_for, produce
from core.settings import FlywheelSettings
from streams import kafka

pytestmark = pytest.mark.timeout(180)
ROOT = Path(__file__).resolve().parents[2]


def test_one_prediction_for_each_judged_prediction_and_the_counters_that_end_the_landing() -> None:
    values, unique = make_events(500, seed=3)
    preds = predictions_for(values)
    events = [json.loads(v) for _, v in preds]
    judged = {json.loads(v)["prediction_id"] for _, v in values if v.endswith(b"}")}
    assert len(preds) == len(judged) and {e["prediction_id"] for e in events} == judged  # resends judge one
    assert all(e["type"] == "prediction" and abs(sum(e["probabilities"].values()) - 1) < 1e-9 for e in events)
    done = done_when(len(unique), len(preds))
    assert not done({"landed:feedback": len(unique), "landed:prediction": len(preds), "joined": len(unique) - 1})
    assert done({"landed:feedback": len(unique), "landed:prediction": len(preds), "joined": len(unique)})
    assert done_when(len(unique), 0)({"landed:feedback": len(unique)})  # without predictions: as before


def test_feedback_and_its_predictions_land_joined_once(kafka_bootstrap: str, db_url: str, topic_prefix: str) -> None:
    settings = FlywheelSettings(kafka_bootstrap=kafka_bootstrap, database_url=db_url, topic_prefix=topic_prefix,
                                batch_max_records=500, sink_writers=2, metrics_port=0, orphan_timeout_s=3600)
    conn = settings.kafka_connection()
    kafka.create_topics(kafka.admin(conn), settings.topics.all(), settings.topic_partitions)
    values, unique = make_events(3000, seed=7)
    preds = predictions_for(values)
    produce(conn, settings.topics.predictions, preds)
    produce(conn, settings.topics.feedback, values)

    rate, _, cpu = landed_rate(settings, conn, db_url, len(unique), len(preds))

    with psycopg.connect(db_url) as db:
        statuses = dict(db.execute("SELECT status, count(*) FROM feedback GROUP BY status").fetchall())
        ids = [r[0] for r in db.execute("SELECT feedback_id FROM feedback")]
        landed = db.execute("SELECT count(*), count(DISTINCT prediction_id) FROM predictions").fetchone()
    assert set(ids) == unique and len(ids) == len(unique)  # nothing lost, nothing twice
    assert statuses == {"joined": len(unique)}  # every one joined, whichever landed first
    assert landed == (len(preds), len(preds))
    assert rate > 0 and cpu["process"] > 0 and cpu["postgres"] > 0


def test_the_late_predictions_are_timed_alone_and_join_every_waiting_feedback(kafka_bootstrap: str,
                                                                              pg_admin_url: str) -> None:
    """``--predictions late``: the feedback lands pending first; the predictions' landing is timed and joins it all."""
    env = {**os.environ, "FLYWHEEL_KAFKA_BOOTSTRAP": kafka_bootstrap, "FLYWHEEL_DATABASE_URL": pg_admin_url,
           "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-m", "bench.ingest", "--predictions", "late", "--events", "2000",
                           "--batch", "500"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=170)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["late"] is True and result["predictions"] > 1900
    assert result["lost"] == 0 and result["duplicated"] == 0 and result["unjoined"] == 0
    assert result["landed_per_s"] > 0 and result["raw_per_s"] > 0
    assert "predictions after it landed" in done.stdout
