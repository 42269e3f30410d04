"""A pod hosting two models on the real broker, Postgres and MLflow store: the default text model and a
declared tabular one, each with a registered champion announced on the models topic. ``/v1/models`` lists
both; each model's routes take its task's body (features checked against the schema, 422 naming the
feature), publish its events (version 2 for features) and hot-swap on their own; ``FLYWHEEL_SERVE_MODELS``
restricts what a pod hosts."""

from __future__ import annotations

import json
import random
import time
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from core.db import session_connector
from core.exceptions import ConfigError
from core.settings import FlywheelSettings
from flywheel import models
from flywheel.lifecycle import Lifecycle, lifecycle
from kinds.base import Resources
from kinds.embeddings import Embedder, MemoryEmbeddingCache
from serving import create_app
from serving.pod import Pod
from streams.kafka import admin, create_topics
from tasks import ModelSpec, parse_spec
from tests.fakes import HashingEncoder
from tests.flywheel.test_many_models import AUTOMATION, automation_rows
from tests.trainer.lifecycle_helpers import rows
from trainer.config import PromotionConfig, TrainerConfig
from trainer.data import CorpusRow

from .conftest import read_topic

GOOD = {"load": 12.5, "os": "linux", "retried": False}
TEXT_ONLY = {"text": "a lovely film"}


@pytest.fixture
def spec(settings: FlywheelSettings, db_url: str) -> ModelSpec:
    with session_connector(db_url)() as conn:
        models.declare(conn, settings)
        models.create(conn, parse_spec(AUTOMATION))
    return parse_spec(AUTOMATION)


@pytest.fixture
def pair(settings: FlywheelSettings, db_url: str, spec: ModelSpec) -> Iterator[tuple[Lifecycle, Lifecycle]]:
    """Each model's lifecycle, each with a bootstrapped champion (announced on the models topic)."""
    resources = Resources(embedder=Embedder(HashingEncoder(), MemoryEmbeddingCache()))
    kafka = settings.kafka_connection()
    create_topics(admin(kafka), settings.topics.all(), 1)
    with lifecycle(settings, kafka, db_url, TrainerConfig(promotion=PromotionConfig(mode="direct")),
                   resources=resources) as text, \
            lifecycle(settings, kafka, db_url, resources=resources, spec=spec) as tabular:
        assert text.trainer.bootstrap(rows("vader_movies")[:400], source="movies", kind="tfidf-logreg"
                                      ).status == "promoted"
        boot = tabular.trainer.bootstrap(automation_rows(400, drifted=False, seed=1), source="history",
                                         kind="lightgbm")
        assert boot.status == "promoted", boot.reason
        yield text, tabular


@pytest.fixture
def client(settings: FlywheelSettings, db_url: str, pair: tuple[Lifecycle, Lifecycle]) -> Iterator[TestClient]:
    with TestClient(create_app(settings, database_url=db_url), raise_server_exceptions=False) as found:
        yield found


def pod(client: TestClient) -> Pod:
    found: Pod = client.app.state.pod  # type: ignore[attr-defined]
    return found


def refused(client: TestClient, path: str, body: object, status: int, *needles: str) -> dict[str, Any]:
    response = client.post(path, json=body)
    assert response.status_code == status, (path, body, response.status_code, response.text)
    payload: dict[str, Any] = response.json()
    assert set(payload) == {"error", "detail"}, payload
    for needle in needles:
        assert needle in payload["detail"], (body, needle, payload)
    return payload


def test_a_pod_serves_a_text_and_a_tabular_model_each_with_its_own_body_events_and_swaps(
        settings: FlywheelSettings, client: TestClient, pair: tuple[Lifecycle, Lifecycle]) -> None:
    text, tabular = pair
    text_champion, tabular_champion = text.registry.champion(), tabular.registry.champion()
    hosted = pod(client).hosted
    assert set(hosted) == {"sentiment", "automation"}
    assert hosted["sentiment"].runtime.wait_live(text_champion.version, 60)
    assert hosted["automation"].runtime.wait_live(tabular_champion.version, 60)

    listed = {m["model"]: m for m in client.get("/v1/models").json()["models"]}
    assert set(listed) == {"sentiment", "automation"}
    assert (listed["sentiment"]["task"], listed["sentiment"]["labels"], listed["sentiment"]["features"],
            listed["sentiment"]["default"]) == ("text-classification", list(settings.labels), None, True)
    auto = listed["automation"]
    assert (auto["task"], auto["labels"], auto["default"], auto["ready"]) == (
        "tabular-classification", ["failed", "succeeded"], False, True)
    assert [f["name"] for f in auto["features"]] == ["load", "os", "retried"]
    assert auto["features"][1]["categories"] == ["linux", "windows", "macos"]
    assert auto["champion"]["version"] == tabular_champion.version and auto["champion"]["kind"] == "lightgbm"
    assert listed["sentiment"]["champion"]["version"] == text_champion.version
    detail = client.get("/v1/models/automation").json()
    assert detail["model"] == "automation" and detail["aliases"]["champion"] == tabular_champion.version

    # the tabular model: a label of its own, a version 2 event with the normalised features
    one = client.post("/v1/models/automation/predict",
                      json={"features": {"load": 91.0, "os": "windows"}, "user_id": "u1", "segment": "nightly"})
    assert one.status_code == 200, one.text
    served = one.json()
    assert served["label"] in ("failed", "succeeded") and served["model"] == "automation"
    assert served["version"] == tabular_champion.version and set(served["probabilities"]) == {"failed", "succeeded"}
    batch = client.post("/v1/models/automation/predict/batch",
                        json={"items": [{"features": {**GOOD, "load": float(i * 20)}} for i in range(4)]})
    assert batch.status_code == 200, batch.text
    assert len(batch.json()["predictions"]) == 4
    assert {p["label"] for p in batch.json()["predictions"]} <= {"failed", "succeeded"}

    # the text model under its name, and the legacy routes: the default model, version 1 events
    named = client.post("/v1/models/sentiment/predict", json=TEXT_ONLY).json()
    legacy = client.post("/predict", json={"text": "dull and far too long"}).json()
    assert named["model"] == legacy["model"] == "sentiment" and legacy["version"] == text_champion.version
    assert named["label"] in settings.labels and legacy["label"] in settings.labels
    legacy_batch = client.post("/predict/batch", json={"items": [TEXT_ONLY, TEXT_ONLY]}).json()
    assert [p["model"] for p in legacy_batch["predictions"]] == ["sentiment", "sentiment"]

    records = [json.loads(v) for v in read_topic(settings.kafka_connection(), settings.topics.predictions, 9)]
    events = {e["prediction_id"]: e for e in records}
    assert len(events) == 9
    event = events[served["prediction_id"]]
    assert (event["schema_version"], event["model"], event["model_version"], event["variant"]) == (
        2, "automation", tabular_champion.version, "champion")
    assert event["input"] == {"features": {"load": 91.0, "os": "windows", "retried": None}}
    assert event["output"]["label"] == served["label"] and event["segment"] == "nightly"
    assert event["output"]["probabilities"] == pytest.approx(served["probabilities"])
    for p in batch.json()["predictions"]:
        assert events[p["prediction_id"]]["schema_version"] == 2
    for p in (named, legacy, *legacy_batch["predictions"]):
        e = events[p["prediction_id"]]
        assert e.get("schema_version", 1) == 1 and e["model"] == "sentiment" and e["text"]

    # every broken feature is a 422 naming it; a body of the other task is a 422; an unknown model a 404
    path = "/v1/models/automation/predict"
    refused(client, path, {"features": {"os": "linux"}}, 422, "'load'", "feature_missing")
    refused(client, path, {"features": {**GOOD, "load": "12"}}, 422, "'load'", "feature_wrong_type")
    refused(client, path, {"features": {**GOOD, "retried": "yes"}}, 422, "'retried'", "feature_wrong_type")
    refused(client, path, {"features": {**GOOD, "load": 100.5}}, 422, "'load'", "feature_out_of_range")
    refused(client, path, {"features": {**GOOD, "load": 10**400}}, 422, "'load'", "feature_out_of_range")
    refused(client, path, {"features": {**GOOD, "os": None}}, 422, "'os'", "feature_missing")
    refused(client, path, {"features": {**GOOD, "os": "plan9"}}, 422, "'os'", "feature_unknown_category")
    refused(client, path, {"features": {**GOOD, "cpu": 3}}, 422, "cpu", "feature_unknown")
    refused(client, path, TEXT_ONLY, 422, "text", "tabular-classification", "features")
    refused(client, path, {"features": GOOD, "text": "both"}, 422)
    refused(client, "/v1/models/sentiment/predict", {"features": GOOD}, 422, "features", "text-classification")
    refused(client, "/v1/models/automation/predict/batch", {"items": [{"features": GOOD}, {"features": {}}]}, 422,
            "items.1.features", "'load'")
    refused(client, "/v1/models/automation/predict/batch", {"items": [{"features": GOOD}, TEXT_ONLY]}, 422,
            "items.1.text")
    refused(client, "/v1/models/sentiment/predict/batch", {"items": [TEXT_ONLY, {"text": " "}]}, 422,
            "items.1.text")
    refused(client, "/v1/models/nobody/predict", {"features": GOOD}, 404, "nobody", "automation")
    refused(client, "/v1/models/nobody/feedback", {"prediction_id": "p", "label": "failed"}, 404, "nobody")
    assert client.get("/v1/models/nobody").status_code == 404

    # feedback for a named model: a version 2 event naming it, a label of its own set only
    fed = client.post("/v1/models/automation/feedback",
                      json={"prediction_id": served["prediction_id"], "label": "failed", "user_id": "ops"})
    assert fed.status_code == 202, fed.text
    refused(client, "/v1/models/automation/feedback", {"prediction_id": served["prediction_id"],
                                                       "label": "positive"}, 422, "'positive'", "automation")
    refused(client, "/v1/models/sentiment/feedback", {"prediction_id": "p", "label": "failed"}, 422, "'failed'")
    legacy_fed = client.post("/feedback", json={"prediction_id": legacy["prediction_id"], "label": "negative"})
    assert legacy_fed.status_code == 202
    refused(client, "/feedback", {"prediction_id": "p", "label": "failed"}, 422, "'failed'")
    feedback = {e["feedback_id"]: e for e in map(json.loads, read_topic(
        settings.kafka_connection(), settings.topics.feedback, 2))}
    assert set(feedback) == {fed.json()["feedback_id"], legacy_fed.json()["feedback_id"]}
    v2 = feedback[fed.json()["feedback_id"]]
    assert (v2["schema_version"], v2["model"], v2["prediction_id"], v2["label"], v2["source"]) == (
        2, "automation", served["prediction_id"], "failed", "serving")
    v1 = feedback[legacy_fed.json()["feedback_id"]]
    assert v1.get("schema_version", 1) == 1 and v1["prediction_id"] == legacy["prediction_id"]

    # a new tabular champion swaps the tabular model only
    text_runtime, tabular_runtime = hosted["sentiment"].runtime, hosted["automation"].runtime
    text_generation = text_runtime.deployment.generation
    again = tabular.trainer.bootstrap(automation_rows(400, drifted=True, seed=5), source="history v2",
                                      kind="lightgbm", force=True)
    assert again.status == "promoted" and again.event is not None, again.reason
    assert again.event.version != tabular_champion.version
    assert tabular_runtime.wait_live(again.event.version, 60)
    after = client.post(path, json={"features": GOOD}).json()
    assert after["version"] == again.event.version
    assert client.post("/predict", json=TEXT_ONLY).json()["version"] == text_champion.version
    assert text_runtime.deployment.generation == text_generation
    assert text_runtime.deployment.champion is not None
    assert text_runtime.deployment.champion.version == text_champion.version
    listed = {m["model"]: m for m in client.get("/v1/models").json()["models"]}
    assert listed["automation"]["champion"]["version"] == again.event.version
    assert listed["sentiment"]["champion"]["version"] == text_champion.version

    metrics = client.get("/metrics").text  # the default model's versions as before, another model's by name
    assert f'flywheel_serving_predictions_total{{variant="champion",version="{text_champion.version}"}} 5.0' in metrics
    assert (f'flywheel_serving_predictions_total{{variant="champion",version="automation:{tabular_champion.version}"}}'
            ' 5.0') in metrics
    assert 'flywheel_serving_request_seconds_count{route="/v1/models/{name}/predict",variant="champion"} 3.0' in metrics
    assert 'flywheel_serving_request_seconds_count{route="/v1/models/{name}/predict/batch",variant="none"}' in metrics


def test_the_openapi_document_describes_each_task_body(client: TestClient) -> None:
    document = client.get("/openapi.json").json()
    body = document["paths"]["/v1/models/{name}/predict"]["post"]["requestBody"]["content"]["application/json"]
    refs = {s["$ref"].rsplit("/", 1)[1] for s in body["schema"]["anyOf"]}
    assert refs == {"PredictCreate", "TabularPredictCreate"}
    schemas = document["components"]["schemas"]
    assert "text" in schemas["PredictCreate"]["required"] and "features" in schemas["TabularPredictCreate"]["required"]
    items = schemas["ModelBatchCreate"]["properties"]["items"]["items"]["anyOf"]
    assert {s["$ref"].rsplit("/", 1)[1] for s in items} == refs
    assert {"404", "422"} <= set(document["paths"]["/v1/models/{name}/predict"]["post"]["responses"])
    assert "/v1/models/{name}/feedback" in document["paths"] and "/v1/models" in document["paths"]


CHURN = {"name": "churn", "task": "tabular-classification", "labels": ["stays", "leaves"],
         "features": [{"name": "tenure", "type": "numeric", "min": 0}]}


def test_serve_models_restricts_what_a_pod_hosts_and_an_undeclared_name_stops_it(
        settings: FlywheelSettings, db_url: str) -> None:
    with session_connector(db_url)() as conn:
        models.declare(conn, settings)
        models.create(conn, parse_spec(AUTOMATION))
        models.create(conn, parse_spec(CHURN))
    everything = create_app(settings, database_url=db_url, watch=False)
    with TestClient(everything, raise_server_exceptions=False) as client:
        assert {m["model"] for m in client.get("/v1/models").json()["models"]} == {"sentiment", "automation", "churn"}

    only = settings.model_copy(update={"serve_models": ("automation",)})
    with TestClient(create_app(only, database_url=db_url, watch=False), raise_server_exceptions=False) as client:
        listed = client.get("/v1/models").json()["models"]
        assert {m["model"] for m in listed} == {"sentiment", "automation"}  # the default model is always hosted
        assert all(not m["ready"] and m["champion"] is None for m in listed)
        refused(client, "/v1/models/churn/predict", {"features": {"tenure": 3}}, 404, "churn", "FLYWHEEL_SERVE_MODELS")
        refused(client, "/v1/models/automation/predict", {"features": GOOD}, 503, "automation")

    wrong = settings.model_copy(update={"serve_models": ("automation", "nobody")})
    with pytest.raises(ConfigError, match=r"FLYWHEEL_SERVE_MODELS names undeclared models \['nobody'\]"), \
            TestClient(create_app(wrong, database_url=db_url, watch=False)):
        pass


def test_admin_routes_act_on_the_model_they_name(settings: FlywheelSettings, db_url: str,
                                                  pair: tuple[Lifecycle, Lifecycle]) -> None:
    """``/v1/models/{name}/...`` admin routes: each action on the named model's registry, requests and
    events, never on the default model's; the unprefixed routes stay the default model's."""
    text, tabular = pair
    text_champion, first = text.registry.champion(), tabular.registry.champion()
    assert text_champion is not None and first is not None
    token = settings.model_copy(update={"admin_token": SecretStr("t0ken")})
    auth = {"Authorization": "Bearer t0ken"}
    with TestClient(create_app(token, database_url=db_url), raise_server_exceptions=False) as client:
        hosted = pod(client).hosted
        assert hosted["automation"].runtime.wait_live(first.version, 60)

        def post(path: str, body: object, status: int, *needles: str) -> dict[str, Any]:
            response = client.post(path, json=body, headers=auth)
            assert response.status_code == status, (path, response.status_code, response.text)
            payload: dict[str, Any] = response.json()
            for needle in needles:
                assert needle in payload["detail"], (path, needle, payload)
            return payload

        assert client.post("/v1/models/automation/retrain", json={}).status_code == 401  # the token first
        post("/v1/models/nobody/retrain", {}, 404, "nobody", "automation")
        post("/v1/models/automation/retrain", {"force_deploy": True}, 409, "automation", "tabular-classification")
        post("/v1/models/automation/bootstrap", {"rows": [{"text": "a", "label": "failed"}] * 2}, 409,
             "flywheel bootstrap --model automation")

        # retrain: the request names the model, on the topic and in its record; another model cannot see it
        queued = post("/v1/models/automation/retrain", {"mode": "full", "reason": "weekly"}, 202)
        named = post("/v1/models/sentiment/retrain", {"mode": "incremental"}, 202)
        records = {r["request_id"]: r for r in map(json.loads, read_topic(
            settings.kafka_connection(), settings.topics.retrain, 2))}
        assert records[queued["request_id"]]["model"] == "automation"
        assert records[queued["request_id"]]["mode"] == "full"
        assert records[named["request_id"]]["model"] == "sentiment"
        found = client.get(f"/v1/models/automation/training/{queued['request_id']}", headers=auth)
        assert found.status_code == 200 and found.json()["status"] == "queued", found.text
        assert client.get(f"/training/{queued['request_id']}", headers=auth).status_code == 404
        assert client.get(f"/v1/models/sentiment/training/{queued['request_id']}", headers=auth).status_code == 404
        assert client.get(f"/training/{named['request_id']}", headers=auth).status_code == 200

        evaluated = post("/v1/models/automation/evaluate", None, 202)
        assert evaluated["version"] == first.version

        # a second tabular champion, then rollback and promote by name: the tabular pod follows, the text
        # model's champion never moves
        again = tabular.trainer.bootstrap(automation_rows(400, drifted=True, seed=5), source="history v2",
                                          kind="lightgbm", force=True)
        assert again.status == "promoted" and again.event is not None, again.reason
        second = again.event.version
        assert hosted["automation"].runtime.wait_live(second, 60)
        back = post("/v1/models/automation/rollback", {"reason": "ops"}, 200)
        assert (back["action"], back["model"], back["version"], back["previous_version"]) == (
            "rollback", "automation", first.version, second)
        assert hosted["automation"].runtime.wait_live(first.version, 60)
        forward = post(f"/v1/models/automation/versions/{second}/promote", {"reason": "fixed"}, 200)
        assert (forward["action"], forward["model"], forward["version"]) == ("promote", "automation", second)
        assert hosted["automation"].runtime.wait_live(second, 60)
        post("/v1/models/automation/versions/4242/promote", {}, 404)
        assert tabular.registry.champion().version == second  # type: ignore[union-attr]
        assert text.registry.champion().version == text_champion.version  # type: ignore[union-attr]
        assert client.post("/predict", json=TEXT_ONLY).json()["version"] == text_champion.version

        # the review queue of the named model, with its own labels
        listed = client.get("/v1/models/automation/review/next", headers=auth)
        assert listed.status_code == 200 and listed.json()["items"] == [], listed.text
        post("/v1/models/automation/review/label", {"prediction_id": "p-1", "label": "positive"}, 422, "'positive'")
        post("/v1/models/automation/review/label", {"prediction_id": "p-1", "label": "failed"}, 404, "automation")

    schema = client.app.openapi()  # type: ignore[attr-defined]
    assert schema["paths"]["/v1/models/{name}/retrain"]["post"]["security"] == [{"HTTPBearer": []}]
    assert "/v1/models/{name}/versions/{version}/promote" in schema["paths"]


def test_a_model_declared_while_the_pod_runs_is_hosted_without_a_restart(
        settings: FlywheelSettings, db_url: str, pair: tuple[Lifecycle, Lifecycle]) -> None:
    """``flywheel models create`` on a running platform: the pod hosts the new model at its next look
    (FLYWHEEL_MODELS_REFRESH_S), its routes and admin routes answer, and its first champion is swapped in."""
    refreshing = settings.model_copy(update={"models_refresh_s": 0.2, "admin_token": SecretStr("t0ken")})
    with TestClient(create_app(refreshing, database_url=db_url), raise_server_exceptions=False) as client:
        assert {m["model"] for m in client.get("/v1/models").json()["models"]} == {"sentiment", "automation"}
        refused(client, "/v1/models/churn/predict", {"features": {"tenure": 3}}, 404, "churn")
        with session_connector(db_url)() as conn:
            models.create(conn, parse_spec(CHURN))
        deadline = time.monotonic() + 30
        while "churn" not in pod(client).hosted:
            assert time.monotonic() < deadline, "the pod did not host the newly declared model"
            time.sleep(0.1)
        listed = {m["model"]: m for m in client.get("/v1/models").json()["models"]}
        assert listed["churn"]["task"] == "tabular-classification" and listed["churn"]["champion"] is None
        refused(client, "/v1/models/churn/predict", {"features": {"tenure": 3}}, 503, "churn")  # no champion yet
        refused(client, "/v1/models/churn/predict", {"features": {"tenure": -1}}, 422, "'tenure'")
        queue = client.get("/v1/models/churn/review/next", headers={"Authorization": "Bearer t0ken"})
        assert queue.status_code == 200 and queue.json()["items"] == [], queue.text  # its admin routes too

        # its first champion, trained by its own lifecycle, is announced and swapped in
        spec = parse_spec(CHURN)
        rng = random.Random(3)
        corpus = [CorpusRow({"tenure": t}, "leaves" if t < 12 else "stays", None)
                  for t in (round(rng.uniform(0, 48), 1) for _ in range(300))]
        with lifecycle(settings, settings.kafka_connection(), db_url, spec=spec) as churn:
            boot = churn.trainer.bootstrap(corpus, source="crm", kind="lightgbm")
            assert boot.status == "promoted" and boot.event is not None, boot.reason
        assert pod(client).get("churn").runtime.wait_live(boot.event.version, 60)
        served = client.post("/v1/models/churn/predict", json={"features": {"tenure": 2.0}})
        assert served.status_code == 200, served.text
        assert served.json()["label"] == "leaves" and served.json()["version"] == boot.event.version
        assert set(pod(client).hosted) == {"sentiment", "automation", "churn"}  # added once, not per look
