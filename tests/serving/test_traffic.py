"""Canary split and stickiness, shadow traffic, and a broker outage on the publishing side."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path

from fastapi.testclient import TestClient

from core.kafka import KafkaConnection
from core.settings import FlywheelSettings
from flywheel.lifecycle import Lifecycle
from registry import ModelVersionInfo
from serving import FeedbackPublisher, PredictionPublisher, ServingMetrics, create_app
from serving.router import bucket

from .conftest import announce, read_topic, register_version, services, wait_for


def predict_users(client: TestClient, users: list[str]) -> Iterator[dict[str, object]]:
    for start in range(0, len(users), 64):
        body = {"items": [{"text": f"hello from {u}", "user_id": u} for u in users[start:start + 64]]}
        response = client.post("/predict/batch", json=body)
        assert response.status_code == 200, response.text
        yield from response.json()["predictions"]


def test_canary_gets_its_share_sticky_per_user(lc: Lifecycle, champion: ModelVersionInfo, app_client: TestClient,
                                               tmp_path: Path, settings: FlywheelSettings) -> None:
    runtime = services(app_client).runtime
    v2 = register_version(lc, tmp_path, 400)
    announce(lc, v2, "canary", 0.2)
    assert runtime.wait_for(lambda d, _e: d.canary is not None and d.canary.version == v2.version, 30)
    users = [f"user-{i}" for i in range(2000)]
    first = {p["prediction_id"]: p for p in predict_users(app_client, users)}
    variants = [p["variant"] for p in first.values()]
    share = variants.count("canary") / len(variants)
    assert 0.15 <= share <= 0.25, share
    assert {p["version"] for p in first.values() if p["variant"] == "canary"} == {v2.version}
    again = list(predict_users(app_client, users[:300]))
    assert [p["variant"] for p in again] == variants[:300]  # sticky
    assert app_client.get("/models").json()["deployment"]["canary_traffic"] == 0.2
    events = [json.loads(v) for v in read_topic(settings.kafka_connection(), settings.topics.predictions, 2300)]
    canary_events = [e for e in events if e["prediction_id"] in first and e["variant"] == "canary"]
    assert len(canary_events) == variants.count("canary")
    assert {e["model_version"] for e in canary_events} == {v2.version}


def test_shadow_never_changes_responses_and_is_published_as_shadow(
        lc: Lifecycle, champion: ModelVersionInfo, app_client: TestClient, tmp_path: Path,
        settings: FlywheelSettings) -> None:
    runtime = services(app_client).runtime
    assert runtime.wait_live(champion.version, 30)
    texts = [f"shadow check {i}: {'great' if i % 2 else 'awful'} service" for i in range(20)]
    before = [app_client.post("/predict", json={"text": t, "user_id": f"s{i}"}).json() for i, t in enumerate(texts)]
    v2 = register_version(lc, tmp_path, 400, c=0.1)
    announce(lc, v2, "canary", 0.0)  # traffic 0 = shadow
    assert runtime.wait_for(lambda d, _e: d.shadow is not None and d.shadow.version == v2.version, 30)
    assert runtime.deployment.canary is None
    after = [app_client.post("/predict", json={"text": t, "user_id": f"s{i}"}).json() for i, t in enumerate(texts)]
    for b, a in zip(before, after, strict=True):
        assert (a["label"], a["probabilities"], a["version"], a["variant"]) == (
            b["label"], b["probabilities"], b["version"], "champion")
    events = [json.loads(v) for v in read_topic(settings.kafka_connection(), settings.topics.predictions, 60)]
    shadows = {e["prediction_id"]: e for e in events if e["variant"] == "shadow"}
    assert set(shadows) == {f"{a['prediction_id']}-shadow" for a in after}
    assert {e["model_version"] for e in shadows.values()} == {v2.version}


def test_a_broker_outage_never_fails_predict_and_drops_are_counted(
        lc: Lifecycle, champion: ModelVersionInfo, settings: FlywheelSettings, db_url: str) -> None:
    with socket.socket() as sock:  # a port nobody listens on: the publisher's broker is "down"
        sock.bind(("127.0.0.1", 0))
        dead = KafkaConnection(bootstrap_servers=f"127.0.0.1:{sock.getsockname()[1]}")
    metrics = ServingMetrics()
    publisher = PredictionPublisher(dead, settings.topics, metrics, buffer_size=8, producer_queue=8,
                                    message_timeout_ms=2000, log_every_s=1.0)
    feedback = FeedbackPublisher(dead, settings.topics, queue_size=2, **{"message.timeout.ms": 1000})
    app = create_app(settings, database_url=db_url, publisher=publisher, feedback=feedback, metrics=metrics)
    with TestClient(app, raise_server_exceptions=False) as client:
        assert services(client).runtime.wait_live(champion.version, 30)
        for i in range(100):
            response = client.post("/predict", json={"text": f"outage {i}"})
            assert response.status_code == 200, response.text
        wait_for(lambda: _dropped(client) >= 80, "drops counted", 15)
        text = client.get("/metrics").text
        assert 'flywheel_serving_events_published_total 0.0' in text
        statuses = [client.post("/feedback", json={"prediction_id": f"p{i}", "thumbs": "up"}) for i in range(3)]
        assert [r.status_code for r in statuses] == [202, 202, 503]
        assert statuses[2].json()["error"] == "queue_full" and "feedback queue" in statuses[2].json()["detail"]


def _dropped(client: TestClient) -> float:
    total = 0.0
    for line in client.get("/metrics").text.splitlines():
        if line.startswith("flywheel_serving_events_dropped_total"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_bucket_is_stable_and_uniform() -> None:
    assert bucket("alice", "3") == bucket("alice", "3") != bucket("alice", "4")
    share = sum(bucket(f"u{i}", "7") < 0.3 for i in range(10_000)) / 10_000
    assert 0.28 < share < 0.32
