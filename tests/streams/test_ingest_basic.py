from __future__ import annotations

import psycopg
from confluent_kafka import Consumer

from core.kafka import KafkaConnection
from core.settings import FlywheelSettings
from tests.streams.helpers import (
    count,
    create_topics,
    feedback,
    prediction,
    produce,
    producer,
    running_ingest,
    wait_until,
)


def test_predictions_and_feedback_land_joined_and_deduplicated(
    settings: FlywheelSettings, kafka_conn: KafkaConnection, db_url: str
) -> None:
    create_topics(settings, kafka_conn)
    t = settings.topics
    p = producer(kafka_conn)
    preds = [prediction() for _ in range(20)]
    early = feedback(preds[0].prediction_id, "negative")  # arrives before its prediction
    produce(p, t.feedback, [(early.prediction_id.encode(), early.to_json())])
    with running_ingest(settings):
        wait_until(lambda: count(db_url, "SELECT count(*) FROM feedback WHERE status='pending'") == 1,
                   what="pending feedback")
        produce(p, t.predictions, [(e.prediction_id.encode(), e.to_json()) for e in preds])
        fbs = [feedback(e.prediction_id) for e in preds[1:]]
        resend = fbs[0]  # same feedback_id: idempotent
        same_content = feedback(fbs[1].prediction_id, fbs[1].label)  # new id, same prediction/user/label
        produce(p, t.feedback, [(f.prediction_id.encode(), f.to_json()) for f in [*fbs, resend, same_content]])
        wait_until(lambda: count(db_url, "SELECT count(*) FROM feedback WHERE status='joined'") == 20,
                   what="20 joined feedback rows")
    assert count(db_url, "SELECT count(*) FROM predictions") == 20
    assert count(db_url, "SELECT count(*) FROM feedback") == 20
    with psycopg.connect(db_url) as conn:
        row = conn.execute("SELECT model_version, predicted_label, variant, probabilities->>'positive' "
                           "FROM feedback WHERE feedback_id = %s", (early.feedback_id,)).fetchone()
        counters = dict(conn.execute("SELECT name, value FROM stream_counters").fetchall())
    assert row == ("1.0.0", "positive", "champion", "0.7")
    assert counters["duplicates:feedback"] == 2
    assert counters["landed:feedback"] == 20
    assert counters["landed:prediction"] == 20


def test_the_runner_builds_its_consumer_with_the_injected_factory(
    settings: FlywheelSettings, kafka_conn: KafkaConnection, db_url: str
) -> None:
    """The consumer is a visible collaborator: the factory gets the group config merged over the connection."""
    create_topics(settings, kafka_conn)
    configs: list[dict[str, object]] = []

    def factory(config: dict[str, object]) -> Consumer:
        configs.append(config)
        return Consumer(config)

    p = producer(kafka_conn)
    preds = [prediction() for _ in range(5)]
    produce(p, settings.topics.predictions, [(e.prediction_id.encode(), e.to_json()) for e in preds])
    with running_ingest(settings, consumer_factory=factory):
        wait_until(lambda: count(db_url, "SELECT count(*) FROM predictions") == 5, what="predictions landed")
    [config] = configs
    assert config["group.id"] == f"{settings.topic_prefix}-ingest"
    assert {k: config[k] for k in kafka_conn.client_config()} == kafka_conn.client_config()


def test_every_writer_is_connected_before_the_first_batch(
    settings: FlywheelSettings, kafka_conn: KafkaConnection, db_url: str
) -> None:
    """Each writer opens its session (and prepares its staging tables) when the runner starts, not when its
    first batch is already waiting: nothing has been produced here, yet every writer's backend is there."""
    create_topics(settings, kafka_conn)
    writers = settings.sink_writers
    with running_ingest(settings) as runner:
        wait_until(lambda: all(slot in runner._conns for slot in range(writers)), what="every writer connected")
        backends = count(db_url, "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                                 "AND pid <> pg_backend_pid()")
        assert runner.batches_committed == 0
    assert backends >= writers


def test_tune_interpreter_sets_the_gc_thresholds_and_the_switch_interval() -> None:
    import gc
    import sys

    from streams.runtime import SWITCH_INTERVAL_S, tune_interpreter

    thresholds, interval = gc.get_threshold(), sys.getswitchinterval()
    try:
        tune_interpreter()
        assert gc.get_threshold() == (50_000, 20, 100)
        assert sys.getswitchinterval() == SWITCH_INTERVAL_S
    finally:
        gc.unfreeze()
        gc.set_threshold(*thresholds)
        sys.setswitchinterval(interval)
