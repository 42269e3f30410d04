"""When the trainer consumer trains (issue 18): a drift alert right after a run on the same samples is
skipped, one with new labels trains; labels below the threshold are trained on once the stream goes quiet.
Real broker, Postgres, MLflow store, the real trainer consumer and its policy."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from core import db
from core.settings import FlywheelSettings
from flywheel.lifecycle import Lifecycle, lifecycle
from registry.announce import now
from registry.requests import AdminRequests
from schemas import Landed, RetrainRequest
from streams.kafka import CheckedProducer, admin, create_topics, producer_config
from trainer.config import PolicyConfig, PromotionConfig, TrainerConfig
from trainer.gates import GatesConfig
from trainer.service import TrainerService

from .lifecycle_helpers import land_feedback, rows
from .test_lifecycle import wait_for

LENIENT = GatesConfig(evaluation={"slice_tolerance": 1.0, "min_improvement": -1.0, "alpha": 0.999999},
                      behaviour={"min_pass_rate": {"invariance": 0.0, "directional": 0.0, "mft": 0.0}})


def _runs(db_url: str) -> list[tuple[str, str, int]]:
    with db.connect(db_url) as conn:
        return [(r[0], r[1], int(r[2])) for r in conn.execute(
            "SELECT trigger, mode, sample_count FROM training_runs WHERE mode <> 'bootstrap' ORDER BY id").fetchall()]


@pytest.fixture
def every_full(settings: FlywheelSettings, registry_db_url: str) -> Iterator[Lifecycle]:
    """The demo's shape of policy: every retrain a full one, at 200 samples."""
    config = TrainerConfig(policy=PolicyConfig(incremental_threshold=200, full_threshold=200, holdout_percent=10),
                           gates=LENIENT, promotion=PromotionConfig(mode="direct"))
    with lifecycle(settings, settings.kafka_connection(), registry_db_url, config) as found:
        boot = found.trainer.bootstrap(rows("vader_movies")[:600], source="vader_movies.csv", kind="tfidf-logreg")
        assert boot.status == "promoted", boot.reason
        yield found


def test_a_drift_alert_on_the_samples_the_last_run_trained_on_is_skipped(
        every_full: Lifecycle, registry_db_url: str, settings: FlywheelSettings) -> None:
    lc = every_full
    land_feedback(registry_db_url, rows("vader_tweets")[:260])
    first = lc.trainer.maybe_train("signal")
    assert first.mode == "full", first.reason
    land_feedback(registry_db_url, rows("vader_tweets")[260:270])  # a few labels more, then the drift alert
    requests = AdminRequests(db.Connector(registry_db_url), lc.settings.model_name)
    service = TrainerService(lc.trainer, lc.config, kafka=settings.kafka_connection(), group="unused",
                             signal_topics=[], request_topic=settings.topics.retrain, requests=requests)
    drift = RetrainRequest(ts=now(), model="sentiment", mode="full", trigger="drift", reason="psi 0.4")
    assert service._handle(drift)
    [skipped] = [r for r in service.results if r.status == "skipped"]
    assert "drift_min_new 20: that run trained on this data already" in skipped.reason, skipped.reason
    assert [t for t, _, _ in _runs(registry_db_url)] == ["signal"]
    # with as many new labels as the policy asks for, the alert trains on them
    land_feedback(registry_db_url, rows("vader_tweets")[270:300])
    again = RetrainRequest(ts=now(), model="sentiment", mode="full", trigger="drift", reason="psi 0.5")
    assert service._handle(again)
    assert service.results[-1].mode == "full" and service.results[-1].status != "skipped", service.results[-1]
    runs = _runs(registry_db_url)
    assert [(t, m) for t, m, _ in runs] == [("signal", "full"), ("drift", "full")]
    assert runs[1][2] - runs[0][2] >= lc.config.policy.drift_min_new


def test_labels_below_the_threshold_are_trained_on_when_the_stream_goes_quiet(
        settings: FlywheelSettings, registry_db_url: str) -> None:
    config = TrainerConfig(policy=PolicyConfig(incremental_threshold=200, full_threshold=1500, quiet_after_s=3.0,
                                               quiet_min_samples=20, reconcile_interval_s=1.0),
                           gates=LENIENT, promotion=PromotionConfig(mode="direct"))
    kafka_conn = settings.kafka_connection()
    topics = settings.topics
    create_topics(admin(kafka_conn), topics.all(), 1)
    with lifecycle(settings, kafka_conn, registry_db_url, config) as lc:
        boot = lc.trainer.bootstrap(rows("vader_movies")[:400], source="vader_movies.csv", kind="tfidf-logreg")
        assert boot.status == "promoted", boot.reason
        service = TrainerService(lc.trainer, lc.config, kafka=kafka_conn, group=f"trainer-{topics.prefix}",
                                 signal_topics=[topics.landed, topics.curated], request_topic=topics.retrain)
        stop = threading.Event()
        thread = threading.Thread(target=service.run, args=(stop,), daemon=True)
        producer = CheckedProducer(producer_config(kafka_conn))
        thread.start()
        try:
            wait_for(lambda: any(r.status == "skipped" for r in service.results), "the first reconcile")
            land_feedback(registry_db_url, rows("vader_tweets")[:80])  # below the threshold of 200
            landed = Landed(ts=now(), group="ingest", feedback=80, joined=80)
            producer.send_all(topics.landed, [(b"g", landed.to_json())])
            sent = time.monotonic()  # the signal is consumed after this: the quiet spell ends 3 s later at least
            wait_for(lambda: any(r.mode is not None for r in service.results), "a run once the stream is quiet")
            assert time.monotonic() - sent >= 3.0
            time.sleep(4.0)  # a quiet spell asks once: reconciles go on, nothing else trains
        finally:
            stop.set()
            thread.join(30)
    assert not thread.is_alive()
    runs = _runs(registry_db_url)
    assert [(t, m) for t, m, _ in runs] == [("quiet", "incremental")], runs
    [quiet] = [r for r in service.results if r.mode is not None]
    assert "went quiet" in quiet.reason and quiet.status in ("promoted", "refused"), quiet.reason
