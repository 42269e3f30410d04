"""The API end to end: readiness, predictions and feedback on the real topics, and bad input."""

from __future__ import annotations

import json
import time

import pytest
from fastapi.testclient import TestClient

from core.settings import FlywheelSettings
from flywheel.lifecycle import Lifecycle

from .conftest import bootstrap_champion, read_topic, services


def test_ready_only_after_the_champion_loads_then_predict_batch_and_feedback_land(
        lc: Lifecycle, app_client: TestClient, settings: FlywheelSettings) -> None:
    assert app_client.get("/health").json() == {"status": "alive"}
    response = app_client.get("/ready")
    assert response.status_code == 503 and response.json()["error"] == "not_ready"
    response = app_client.post("/predict", json={"text": "fine"})
    assert response.status_code == 503 and set(response.json()) == {"error", "detail"}

    lc.announcer.producer.send_all(settings.topics.models, [(None, b"not json"), (b"sentiment", b"{}")])
    info = bootstrap_champion(lc)  # its promote event follows the two bad records
    assert services(app_client).runtime.wait_live(info.version, 30)
    assert app_client.get("/ready").status_code == 200

    one = app_client.post("/predict", json={"text": "I loved this movie", "user_id": "u1", "domain": "movies"}).json()
    assert one["label"] in settings.labels and one["variant"] == "champion" and one["version"] == info.version
    assert len(one["prediction_id"]) == 32 and abs(sum(one["probabilities"].values()) - 1) < 1e-6
    batch = app_client.post("/predict/batch", json={"items": [{"text": f"text {i}"} for i in range(5)]}).json()
    assert len(batch["predictions"]) == 5 and {p["version"] for p in batch["predictions"]} == {info.version}

    response = app_client.post("/feedback", json={"prediction_id": one["prediction_id"], "label": "positive"})
    assert response.status_code == 202
    thumbs = app_client.post("/feedback", json={"prediction_id": one["prediction_id"], "thumbs": "up"})
    assert thumbs.status_code == 202

    kafka_conn = settings.kafka_connection()
    feedback = [json.loads(v) for v in read_topic(kafka_conn, settings.topics.feedback, 2)]
    assert {f["feedback_id"] for f in feedback} == {response.json()["feedback_id"], thumbs.json()["feedback_id"]}
    assert {f["prediction_id"] for f in feedback} == {one["prediction_id"]}
    records = read_topic(kafka_conn, settings.topics.predictions, 6)
    predictions = {e["prediction_id"]: e for e in map(json.loads, records)}
    served = [one, *batch["predictions"]]
    assert set(predictions) == {p["prediction_id"] for p in served}
    for p in served:
        event = predictions[p["prediction_id"]]
        assert (event["variant"], event["model_version"], event["label"]) == ("champion", info.version, p["label"])
    assert predictions[one["prediction_id"]]["domain"] == "movies"  # the slice travels with the event

    timings = []
    for i in range(200):
        started = time.perf_counter()
        assert app_client.post("/predict", json={"text": f"timing {i}"}).status_code == 200
        timings.append((time.perf_counter() - started) * 1000)
    timings.sort()
    print(f"sequential /predict via TestClient: p50 {timings[100]:.2f} ms, p99 {timings[198]:.2f} ms")

    models = app_client.get("/models").json()
    assert models["aliases"] == {"champion": info.version}
    assert models["deployment"]["champion"]["version"] == info.version and models["deployment"]["last_error"] is None
    metrics = app_client.get("/metrics").text
    assert f'flywheel_serving_predictions_total{{variant="champion",version="{info.version}"}} 206.0' in metrics
    assert 'flywheel_serving_request_seconds_count{route="/predict",variant="champion"} 201.0' in metrics
    assert "flywheel_serving_bad_model_events_total 2.0" in metrics


BAD = [
    ("/predict", {"text": ""}, "text"),
    ("/predict", {"text": "   "}, "text"),
    ("/predict", {"text": "x" * 5001}, "max_text_chars"),
    ("/predict", {}, "text"),
    ("/predict", {"text": 3}, "text"),
    ("/predict", {"text": "ok", "extra": 1}, "extra"),
    ("/predict", "not an object", ""),
    ("/predict/batch", {"items": []}, "items"),
    ("/predict/batch", {"items": [{"text": "ok"}] * 65}, "items"),
    ("/predict/batch", {"items": [{"text": "ok"}, {"text": ""}]}, "items.1.text"),
    ("/feedback", {"prediction_id": "p", "label": "great"}, "label"),
    ("/feedback", {"prediction_id": "p"}, "exactly one"),
    ("/feedback", {"prediction_id": "p", "label": "positive", "thumbs": "up"}, "exactly one"),
    ("/feedback", {"prediction_id": "p", "thumbs": "sideways"}, "thumbs"),
    ("/feedback", {"prediction_id": "", "thumbs": "up"}, "prediction_id"),
]


@pytest.mark.usefixtures("champion")
def test_bad_input_is_a_4xx_with_error_and_detail(app_client: TestClient, champion: object) -> None:
    assert services(app_client).runtime.wait_for(lambda d, _e: d.ready, 30)
    for path, body, needle in BAD:
        response = app_client.post(path, json=body)
        assert 400 <= response.status_code < 500, (path, body, response.status_code, response.text)
        payload = response.json()
        assert set(payload) == {"error", "detail"} and needle in payload["detail"], (path, body, payload)
    raw = app_client.post("/predict", content=b"{not json", headers={"content-type": "application/json"})
    assert raw.status_code == 422 and raw.json()["error"] == "invalid_request"
    missing = app_client.get("/nope")
    assert missing.status_code == 404 and set(missing.json()) == {"error", "detail"}
    assert app_client.get("/docs").status_code == 200
