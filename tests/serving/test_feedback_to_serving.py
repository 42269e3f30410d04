"""Data-to-deploy measured by the platform itself, end to end on the real broker, Postgres and MLflow store:
the trainer records what a retrained version learnt from, two pods serve it, and each feedback event is
observed once in ``flywheel_feedback_to_serving_seconds`` (summed over the pods), also after a restart."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from core import db
from core.settings import FlywheelSettings
from flywheel.lifecycle import Lifecycle, lifecycle
from registry.deploys import summaries
from serving import create_app
from tests.trainer.lifecycle_helpers import land_feedback, rows
from trainer.config import PolicyConfig, PromotionConfig, TrainerConfig

from .conftest import bootstrap_champion, services

FEEDBACK_TS = datetime(2026, 11, 22, 0, 0, 1, tzinfo=UTC)  # the event time land_feedback gives every answer


@pytest.fixture
def lc(settings: FlywheelSettings, db_url: str) -> Iterator[Lifecycle]:
    config = TrainerConfig(policy=PolicyConfig(incremental_threshold=200, full_threshold=1500, replay_size=400),
                           promotion=PromotionConfig(mode="direct"))
    with lifecycle(settings, settings.kafka_connection(), db_url, config) as found:
        yield found


def observed(client: TestClient) -> float:
    value = services(client).metrics.registry.get_sample_value(
        "flywheel_feedback_to_serving_seconds_count", {"model": "sentiment"})
    return value or 0.0


def serve_until_recorded(client: TestClient, version: str, n: int = 20) -> None:
    runtime = services(client).runtime
    assert runtime.wait_live(version, 60), f"pod never served version {version}"
    for i in range(n):
        answer = client.post("/predict", json={"text": f"a fine day {i}", "user_id": f"u{i}"})
        assert answer.status_code == 200 and answer.json()["version"] == version, answer.text
    first = services(client).first_serves
    assert first is not None
    first.wait()


def test_each_feedback_event_is_observed_once_by_the_pod_that_served_its_version_first(
        lc: Lifecycle, settings: FlywheelSettings, db_url: str, tmp_path: Path) -> None:
    champion = bootstrap_champion(lc)
    with TestClient(create_app(settings, database_url=db_url)) as pod_a, \
            TestClient(create_app(settings, database_url=db_url)) as pod_b:
        for pod in (pod_a, pod_b):
            serve_until_recorded(pod, champion.version, 3)  # the bootstrap version: trained on no feedback
        land_feedback(db_url, rows("vader_movies")[400:6400])
        result = lc.trainer.maybe_train("signal")
        assert result.status == "promoted" and result.version is not None, result.reason
        version = result.version.version
        with db.connect(db_url, autocommit=True) as conn:
            trained = conn.execute("SELECT count(*) FROM version_feedback WHERE model = 'sentiment' AND version = %s",
                                   (version,)).fetchone()
            samples = conn.execute("SELECT count(*) FROM samples WHERE model = 'sentiment' AND status = 'accepted' "
                                   "AND NOT " + _holdout(lc)).fetchone()
        assert trained is not None and samples is not None and trained[0] == samples[0] > 4000
        # both pods serve the new version at once
        threads = [threading.Thread(target=serve_until_recorded, args=(pod, version)) for pod in (pod_a, pod_b)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert observed(pod_a) + observed(pod_b) == trained[0]  # summed over the pods: each event once
        assert {observed(pod_a), observed(pod_b)} == {0.0, trained[0]}
        text = (pod_a if observed(pod_a) else pod_b).get("/metrics").text
        assert 'flywheel_feedback_to_serving_seconds_bucket{le="604800.0",model="sentiment"}' in text
        with db.connect(db_url, autocommit=True) as conn:
            first = conn.execute("SELECT served_at, feedback FROM version_first_served WHERE model = 'sentiment' "
                                 "AND version = %s", (version,)).fetchall()
            spread = conn.execute("SELECT min(seconds), max(seconds), count(*) FROM feedback_served").fetchone()
            found = summaries(conn)["sentiment"]
        assert len(first) == 1 and first[0][1] == trained[0]
        expected = (first[0][0] - FEEDBACK_TS).total_seconds()
        assert spread is not None and spread[0] == pytest.approx(expected) == spread[1] and spread[2] == trained[0]
        assert found.events == trained[0] and found.p50_s == pytest.approx(expected) and found.versions == 1
    with TestClient(create_app(settings, database_url=db_url)) as restarted:  # a pod restart counts nothing again
        serve_until_recorded(restarted, version, 5)
        assert observed(restarted) == 0.0
    with db.connect(db_url, autocommit=True) as conn:
        assert summaries(conn)["sentiment"].events == trained[0]


def _holdout(lc: Lifecycle) -> str:
    from trainer.data import holdout_predicate

    return holdout_predicate(lc.trainer.config.policy.holdout_percent)
