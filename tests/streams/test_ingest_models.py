"""Schema version 2 at ingest, on the real broker and Postgres: two models (a text and a tabular one)
in one platform; every event checked against its own model's spec; a tabular event breaking its schema
is dead-lettered with the precise reason while the text model's events keep landing."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any

import psycopg

from core.kafka import KafkaConnection
from core.settings import FlywheelSettings
from tasks import ModelStore, parse_spec
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

AUTOMATION = {
    "name": "automation", "task": "tabular-classification", "labels": ["failed", "succeeded"],
    "positive_label": "failed",
    "features": [
        {"name": "duration_s", "type": "numeric", "min": 0, "max": 86400},
        {"name": "os", "type": "categorical", "categories": ["linux", "windows"]},
        {"name": "retried", "type": "boolean", "required": False},
    ],
}
SENTIMENT = {"name": "sentiment", "task": "text-classification", "labels": ["negative", "neutral", "positive"]}


def declare(db_url: str, *docs: dict[str, Any]) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        for doc in docs:
            ModelStore(conn).put(parse_spec(doc), source="test")


def v2_prediction(pid: str, features: object, *, model: str = "automation", label: str = "succeeded",
                  probabilities: dict[str, float] | None = None, **kw: object) -> bytes:
    event: dict[str, object] = {
        "type": "prediction", "schema_version": 2, "prediction_id": pid, "model": model, "model_version": "1.0.0",
        "input": {"features": features} if not isinstance(features, str) else {"text": features},
        "output": {"label": label, "probabilities": probabilities or {"failed": 0.2, "succeeded": 0.8}},
        "latency_ms": 1.5, "ts": datetime.now(UTC).isoformat(), **kw}
    return json.dumps(event).encode()


def v2_feedback(pid: str, label: str, *, model: str = "automation", fid: str | None = None) -> bytes:
    return json.dumps({"type": "feedback", "schema_version": 2, "feedback_id": fid or str(uuid.uuid4()),
                       "prediction_id": pid, "model": model, "label": label, "source": "outcomes",
                       "ts": datetime.now(UTC).isoformat()}).encode()


GOOD = {"duration_s": 12.5, "os": "linux", "retried": False}


def test_two_models_land_side_by_side_and_a_bad_tabular_row_is_dead_lettered_with_its_reason(
    settings: FlywheelSettings, kafka_conn: KafkaConnection, db_url: str
) -> None:
    declare(db_url, AUTOMATION, SENTIMENT)
    create_topics(settings, kafka_conn)
    t = settings.topics
    p = producer(kafka_conn)
    bad = {
        "feature_missing": {"os": "linux"},
        "feature_wrong_type": {**GOOD, "duration_s": "12"},
        "feature_out_of_range": {**GOOD, "duration_s": -1},
        "feature_unknown_category": {**GOOD, "os": "plan9"},
        "feature_unknown": {**GOOD, "cpu": 3},
    }
    text_preds = [prediction() for _ in range(5)]
    with running_ingest(settings):
        produce(p, t.predictions, [
            (b"a1", v2_prediction("a1", GOOD)),
            (b"a2", v2_prediction("a2", {"duration_s": 3, "os": "windows"})),  # optional feature absent
            *[(r.encode(), v2_prediction(f"bad-{r}", row)) for r, row in bad.items()],
            (b"u", v2_prediction("u", GOOD, model="nobody")),
            (b"m", v2_prediction("m", "a text for a tabular model")),
            (b"l", v2_prediction("l", GOOD, label="maybe", probabilities={"maybe": 1.0})),
            (b"huge", v2_prediction("huge", {**GOOD, "duration_s": 10**400})),  # beyond every float
            *[(e.prediction_id.encode(), e.to_json()) for e in text_preds],
        ])
        produce(p, t.feedback, [
            (b"a1", v2_feedback("a1", "failed")),
            (b"a2", v2_feedback("a2", "excellent")),  # not a label of this model
            (b"x", v2_feedback("a2", "positive", model="sentiment")),  # names another model: never joins a2
            *[(e.prediction_id.encode(), feedback(e.prediction_id).to_json()) for e in text_preds],
        ])
        wait_until(lambda: count(db_url, "SELECT count(*) FROM dead_letters") == 10, what="10 dead letters")
        wait_until(lambda: count(db_url, "SELECT count(*) FROM feedback WHERE status = 'joined'") == 6,
                   what="6 joined feedback")
    with psycopg.connect(db_url) as conn:
        reasons = dict(conn.execute("SELECT convert_from(original_key, 'UTF8'), reason FROM dead_letters").fetchall())
        details = dict(conn.execute("SELECT reason, detail FROM dead_letters").fetchall())
        landed = conn.execute("SELECT prediction_id, model, text, input FROM predictions WHERE model = 'automation' "
                              "ORDER BY prediction_id").fetchall()
        joined = conn.execute("SELECT model, count(*) FROM feedback WHERE status = 'joined' GROUP BY model "
                              "ORDER BY model").fetchall()
        pending = conn.execute("SELECT prediction_id, model FROM feedback WHERE status = 'pending'").fetchall()
    assert reasons == {**{r: r for r in bad}, "u": "unknown_model", "m": "task_mismatch", "l": "label_not_in_set",
                       "a2": "label_not_in_set", "huge": "feature_out_of_range"}
    assert details["feature_missing"] == "required feature 'duration_s' is missing"
    assert details["feature_unknown_category"] == "feature 'os' = 'plan9' is not one of ['linux', 'windows']"
    assert "'nobody'" in details["unknown_model"]
    assert landed == [("a1", "automation", None, {"features": GOOD}),
                      ("a2", "automation", None, {"features": {"duration_s": 3, "os": "windows", "retried": None}})]
    assert joined == [("automation", 1), ("sentiment", 5)]
    assert pending == [("a2", "sentiment")]
    assert count(db_url, "SELECT count(*) FROM predictions WHERE model = 'sentiment'") == 5


def test_a_model_declared_after_ingest_started_is_known_to_the_next_record(
    settings: FlywheelSettings, kafka_conn: KafkaConnection, db_url: str
) -> None:
    create_topics(settings, kafka_conn)
    p = producer(kafka_conn)
    with running_ingest(settings):
        produce(p, settings.topics.predictions, [(b"a0", v2_prediction("a0", GOOD))])
        wait_until(lambda: count(db_url, "SELECT count(*) FROM dead_letters WHERE reason = 'unknown_model'") == 1,
                   what="unknown model dead-lettered")
        declare(db_url, AUTOMATION)
        produce(p, settings.topics.predictions, [(b"a1", v2_prediction("a1", GOOD))])
        wait_until(lambda: count(db_url, "SELECT count(*) FROM predictions") == 1, what="a1 landed")
