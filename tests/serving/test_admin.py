"""The admin routes over HTTP against the real registry, broker and Postgres: the token is required, every
action does what its CLI twin does, and bad requests get a 4xx naming the problem."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from core import db
from core.settings import FlywheelSettings
from flywheel.lifecycle import Lifecycle
from serving import create_app
from streams.kafka import admin, create_topics
from tests.trainer.lifecycle_helpers import rows
from trainer.service import TrainerService

from .conftest import bootstrap_champion, read_topic, register_version, services

TOKEN = "s3cret-admin-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
ADMIN_CALLS = [
    ("post", "/retrain", {}),
    ("post", "/evaluate", {}),
    ("post", "/models/1/promote", {}),
    ("post", "/models/rollback", {}),
    ("post", "/bootstrap", {"rows": [{"text": "good", "label": "positive"}, {"text": "bad", "label": "negative"}]}),
    ("get", "/training/abc", None),
]


@pytest.fixture
def admin_settings(settings: FlywheelSettings) -> FlywheelSettings:
    return settings.model_copy(update={"admin_token": SecretStr(TOKEN)})


@pytest.fixture
def admin_client(admin_settings: FlywheelSettings, db_url: str) -> Iterator[TestClient]:
    with TestClient(create_app(admin_settings, database_url=db_url), raise_server_exceptions=False) as client:
        yield client


def call(client: TestClient, method: str, path: str, body: object, headers: dict[str, str] | None = None
         ) -> tuple[int, dict[str, str], dict[str, object]]:
    response = client.request(method.upper(), path, json=body, headers=headers)
    return response.status_code, dict(response.headers), response.json()


def test_admin_routes_are_off_without_a_configured_token(app_client: TestClient) -> None:
    for method, path, body in ADMIN_CALLS:
        status, _headers, payload = call(app_client, method, path, body, AUTH)
        assert status == 403 and payload["error"] == "admin_disabled", (path, payload)
        assert "FLYWHEEL_ADMIN_TOKEN" in str(payload["detail"])


def test_admin_routes_refuse_a_missing_or_wrong_token(admin_client: TestClient) -> None:
    wrong = [None, {"Authorization": "Bearer nope"}, {"Authorization": f"Basic {TOKEN}"},
             {"Authorization": TOKEN}, {"Authorization": f"Bearer {TOKEN}x"}]
    for method, path, body in ADMIN_CALLS:
        for headers in wrong:
            status, got, payload = call(admin_client, method, path, body, headers)
            assert status == 401 and payload["error"] == "unauthorized", (path, headers, payload)
            assert got.get("www-authenticate") == "Bearer"
    # the public routes need no token
    assert admin_client.get("/health").status_code == 200
    schema = admin_client.get("/openapi.json").json()
    assert "HTTPBearer" in schema["components"]["securitySchemes"]
    assert schema["paths"]["/retrain"]["post"]["security"] == [{"HTTPBearer": []}]
    assert "security" not in schema["paths"]["/predict"]["post"]


def poll(client: TestClient, ref: str, until: set[str], timeout: float = 90.0) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    while True:
        response = client.get(f"/training/{ref}", headers=AUTH)
        assert response.status_code == 200, response.text
        found: dict[str, object] = response.json()
        if found["status"] in until:
            return found
        assert time.monotonic() < deadline, f"training {ref} still {found['status']}"
        time.sleep(0.1)


@contextlib.contextmanager
def trainer_running(lc: Lifecycle, settings: FlywheelSettings, name: str) -> Iterator[TrainerService]:
    """A trainer consumer (its own group) on the pod's topics and database, as `flywheel up` runs one."""
    topics = settings.topics
    create_topics(admin(settings.kafka_connection()), topics.all(), settings.topic_partitions)
    service = TrainerService(lc.trainer, lc.config, kafka=settings.kafka_connection(),
                             group=f"trainer-{name}-{topics.prefix}", signal_topics=[topics.landed, topics.curated],
                             request_topic=topics.retrain)
    stop = threading.Event()
    thread = threading.Thread(target=service.run, args=(stop,), daemon=True)
    thread.start()
    try:
        yield service
    finally:
        stop.set()
        thread.join(30)
    assert not thread.is_alive()


def test_bootstrap_evaluate_promote_rollback_and_retrain_over_http(
        admin_client: TestClient, lc: Lifecycle, admin_settings: FlywheelSettings, tmp_path: Path,
        db_url: str) -> None:
    corpus = [{"text": r.text, "label": r.label, "domain": r.domain} for r in rows("vader_movies")[:400]]

    # bad bootstrap bodies: 4xx naming the problem, nothing trained
    bad_label = [*corpus[:3], {"text": "meh", "label": "sideways"}]
    status, _h, payload = call(admin_client, "post", "/bootstrap", {"rows": bad_label}, AUTH)
    assert status == 422 and "rows.3.label" in str(payload["detail"]) and "sideways" in str(payload["detail"])
    status, _h, payload = call(admin_client, "post", "/bootstrap", {"rows": corpus[:3], "kind": "svm"}, AUTH)
    assert status == 422 and "svm" in str(payload["detail"])
    blank = [*corpus[:3], {"text": "  ", "label": "positive"}]
    status, _h, payload = call(admin_client, "post", "/bootstrap", {"rows": blank}, AUTH)
    assert status == 422 and "rows.3.text" in str(payload["detail"])
    status, _h, payload = call(admin_client, "post", "/evaluate", {}, AUTH)
    assert status == 404 and payload["error"] == "not_found"  # no champion yet: nothing to evaluate

    # bootstrap: a request a trainer takes (the pod never trains), followed by its id until the run is recorded
    with trainer_running(lc, admin_settings, "first"):
        status, _h, job = call(admin_client, "post", "/bootstrap", {"rows": corpus, "source": "api-test"}, AUTH)
        assert status == 202 and job["status"] in {"queued", "running"}, job
        done = poll(admin_client, str(job["id"]), {"promoted", "failed"})
        assert done["status"] == "promoted" and done["mode"] == "bootstrap" and done["run_id"], done
        assert done["action"] == "bootstrap" and done["request_id"] == job["id"], done
        first = str(done["version"])
        assert services(admin_client).runtime.wait_live(first, 30)
        by_run = admin_client.get(f"/training/{done['run_id']}", headers=AUTH).json()
        assert by_run["version"] == first and by_run["candidates"][0]["kind"] == "tfidf-logreg"
        status, _h, payload = call(admin_client, "post", "/bootstrap", {"rows": corpus}, AUTH)
        assert status == 409 and "force=true" in str(payload["detail"])

        # evaluate: a request too; the gate verdicts of the champion are its result, read from any pod
        status, _h, queued = call(admin_client, "post", "/evaluate", None, AUTH)
        assert status == 202 and queued["status"] == "queued" and queued["version"] == first, queued
        evaluated = poll(admin_client, str(queued["id"]), {"done", "failed"})
        report = evaluated["evaluation"]
        assert evaluated["status"] == "done" and isinstance(report, dict), evaluated
        assert report["version"] == first, report
        assert {v["gate"] for v in report["verdicts"]} >= {"evaluation", "behaviour"}
        status, _h, payload = call(admin_client, "post", "/evaluate", {"version": "99.0.0"}, AUTH)
        assert status == 404 and "99.0.0" in str(payload["detail"])

    # promote a registered version, then roll back: each one event, and the pod follows
    second = register_version(lc, tmp_path, 400, c=0.5)
    status, _h, event = call(admin_client, "post", f"/models/{second.version}/promote", {"reason": "ops"}, AUTH)
    assert status == 200 and event["action"] == "promote" and event["version"] == second.version, event
    assert event["previous_version"] == first and event["reason"] == "ops"
    assert services(admin_client).runtime.wait_live(second.version, 30)
    assert admin_client.post("/predict", json={"text": "great"}).json()["version"] == second.version
    status, _h, event = call(admin_client, "post", "/models/rollback", None, AUTH)
    assert status == 200 and event["action"] == "rollback" and event["version"] == first, event
    assert services(admin_client).runtime.wait_live(first, 30)
    status, _h, payload = call(admin_client, "post", "/models/4242/promote", {}, AUTH)
    assert status == 404 and payload["error"] == "not_found"
    status, _h, payload = call(admin_client, "post", "/models/rollback", {"to": first}, AUTH)
    assert status == 409 and payload["error"] == "conflict"  # the champion is no rollback target
    kafka_conn = admin_settings.kafka_connection()
    actions = [json.loads(v)["action"] for v in read_topic(kafka_conn, admin_settings.topics.models, 3)]
    assert actions[-3:] == ["promote", "promote", "rollback"]

    # retrain: a request on the retrain topic; its id follows it from queued to the run a trainer makes
    status, _h, queued = call(admin_client, "post", "/retrain", {"mode": "full", "reason": "new data"}, AUTH)
    assert status == 202 and queued["status"] == "queued"
    request_id = str(queued["request_id"])
    assert admin_client.get(f"/training/{request_id}", headers=AUTH).json()["status"] == "queued"
    records = [json.loads(v) for v in read_topic(kafka_conn, admin_settings.topics.retrain, 3)]
    assert [r["action"] for r in records] == ["bootstrap", "evaluate", "retrain"]
    assert "rows" not in records[0]  # the corpus stays in Postgres
    record = records[-1]
    assert (record["request_id"], record["trigger"], record["mode"]) == (request_id, "admin", "full")
    # a trainer of a new group replays every request from the start: the bootstrap and the evaluation are
    # taken already (worked on once), the retrain runs
    with trainer_running(lc, admin_settings, "second"):
        run = poll(admin_client, request_id, {"promoted", "canary", "refused", "failed", "done"})
    found = lc.trainer.find_run(request_id)
    assert found is not None and run["run_id"] == str(found["run_id"]), run
    assert run["request_id"] == request_id and run["trigger"] == "admin" and run["mode"] == "full"
    with db.connect(db_url) as conn:
        rows_ = conn.execute("SELECT mode, count(*) FROM training_runs GROUP BY mode ORDER BY mode").fetchall()
    assert rows_ == [("bootstrap", 1), ("full", 1)], rows_
    again = admin_client.get(f"/training/{evaluated['id']}", headers=AUTH).json()
    assert again["finished_at"] == evaluated["finished_at"], (again, evaluated)
    status, _h, payload = call(admin_client, "get", "/training/no-such-run", None, AUTH)
    assert status == 404 and payload["error"] == "not_found"


def test_review_queue_over_http_publishes_the_label_as_feedback(
        admin_client: TestClient, admin_settings: FlywheelSettings, db_url: str) -> None:
    from tests.curation.test_review import land, p

    torn, sure = land(db_url, [("torn between", p(0.45, 0.1, 0.45), "champion"),
                               ("clearly bad", p(0.9, 0.05, 0.05), "champion")])
    assert admin_client.get("/review/next").status_code == 401
    items = admin_client.get("/review/next", params={"n": 5, "reviewer": "ann"}, headers=AUTH).json()["items"]
    assert [i["prediction_id"] for i in items] == [torn, sure] and items[0]["margin"] == 0.0
    assert admin_client.get("/review/next", params={"n": 0}, headers=AUTH).status_code == 422

    status, _h, payload = call(admin_client, "post", "/review/label",
                               {"prediction_id": torn, "label": "sideways"}, AUTH)
    assert status == 422 and "sideways" in str(payload["detail"])
    status, _h, payload = call(admin_client, "post", "/review/label",
                               {"prediction_id": "no-such", "label": "positive"}, AUTH)
    assert status == 404
    status, _h, sent = call(admin_client, "post", "/review/label",
                            {"prediction_id": torn, "label": "positive", "reviewer": "ann"}, AUTH)
    assert status == 202
    [record] = [json.loads(v) for v in read_topic(admin_settings.kafka_connection(),
                                                  admin_settings.topics.feedback, 1)]
    assert (record["feedback_id"], record["prediction_id"], record["label"], record["source"], record["user_id"]) == (
        sent["feedback_id"], torn, "positive", "review", "review:ann")


def test_force_deploy_is_refused_for_a_classifier(admin_client: TestClient, admin_settings: FlywheelSettings) -> None:
    """A classifier deploys only past its gates: ``force_deploy`` is a 409 naming the task, nothing queued
    (a generator's force-deploy over HTTP: tests/trainer/test_generation_run.py); not a boolean: 422."""
    status, _h, payload = call(admin_client, "post", "/retrain", {"force_deploy": True}, AUTH)
    assert status == 409 and "text-generation" in str(payload["detail"]), payload
    status, _h, payload = call(admin_client, "post", "/retrain", {"force_deploy": 1}, AUTH)
    assert status == 422, payload
    status, _h, _payload = call(admin_client, "post", "/retrain", {"force_deploy": True}, None)
    assert status == 401


def test_nul_bytes_are_refused_at_the_door(admin_client: TestClient) -> None:
    """Found by schemathesis: Postgres text cannot hold NUL, so such input is a 422, never a 5xx."""
    for method, path, kwargs in [
        ("get", "/review/next", {"params": {"reviewer": "a\x00b"}}),
        ("get", "/training/a%00b", {}),
        ("post", "/models/1%00/promote", {"json": {}}),
        ("post", "/models/rollback", {"json": {"to": "1\x00"}}),
        ("post", "/review/label", {"json": {"prediction_id": "p\x00", "label": "positive"}}),
        ("post", "/retrain", {"json": {"reason": "drift\x00"}}),
    ]:
        response = admin_client.request(method.upper(), path, headers=AUTH, **kwargs)  # type: ignore[arg-type]
        assert response.status_code == 422, (path, response.text)
        assert response.json()["error"] == "invalid_request"


def _flip_a_byte(lc: Lifecycle, version: str) -> tuple[Path, bytes]:
    """One byte of ``version``'s stored weights flipped; returns the file and its original bytes."""
    stored = Path(lc.registry.fetch(version))
    weights = next(p for p in sorted(stored.iterdir()) if p.suffix == ".npz")
    data = weights.read_bytes()
    weights.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    return weights, data


def test_an_alias_never_moves_to_an_unverified_artifact_and_a_fresh_pod_falls_back(
        admin_client: TestClient, lc: Lifecycle, admin_settings: FlywheelSettings, db_url: str,
        tmp_path: Path) -> None:
    first = bootstrap_champion(lc)
    second = register_version(lc, tmp_path, 400, c=0.5)
    lc.promote(second.version, "better")
    assert services(admin_client).runtime.wait_live(second.version, 30)

    # rollback (or promotion) to a version whose weights changed: refused, the aliases stay
    weights, original = _flip_a_byte(lc, first.version)
    for path, body in [("/models/rollback", None), ("/models/rollback", {"to": first.version}),
                       (f"/models/{first.version}/promote", {})]:
        status, _h, payload = call(admin_client, "post", path, body, AUTH)
        assert status == 409 and payload["error"] == "conflict", (path, payload)
        assert "fails verification" in str(payload["detail"]) and str(tmp_path) not in str(payload["detail"])
    assert lc.registry.aliases()["champion"] == second.version
    weights.write_bytes(original)

    # the champion's bytes change after its promotion: a fresh pod falls back to the champion before it
    _flip_a_byte(lc, second.version)
    with TestClient(create_app(admin_settings, database_url=db_url), raise_server_exceptions=False) as fresh:
        runtime = services(fresh).runtime
        assert runtime.wait_for(lambda d, _e: d.champion is not None, 30)
        assert runtime.deployment.champion is not None and runtime.deployment.champion.version == first.version
        ready = fresh.get("/ready")
        assert ready.status_code == 200 and ready.json()["status"] == "degraded", ready.text
        assert f"in place of the announced champion {second.version}" in ready.json()["detail"]
        assert "flywheel_serving_champion_fallback 1.0" in fresh.get("/metrics").text
        assert fresh.post("/predict", json={"text": "great"}).json()["version"] == first.version
        models = fresh.get("/models")
        deployment = models.json()["deployment"]
        assert deployment["fallback_for"] == second.version and deployment["last_error"]["version"] == second.version
        assert "sha256" in deployment["last_error"]["detail"]
        assert str(tmp_path) not in models.text and "file://" not in models.text, models.text
    assert services(admin_client).runtime.deployment.champion.version == second.version  # type: ignore[union-attr]
    assert admin_client.get("/ready").json()["status"] == "ready"


def test_admin_routes_authenticate_before_reading_the_body(admin_client: TestClient, app_client: TestClient) -> None:
    """An unauthenticated request with a body that is not JSON (or not the route's shape) gets its 401,
    or its 403 on a pod without admin routes: never a 400/422 about a body it had no right to send."""
    for method, path, _body in ADMIN_CALLS:
        for payload in (b"{not json", b'{"rows": 7, "mode": "sideways"}'):
            kwargs = {"content": payload, "headers": {"Content-Type": "application/json"}}
            response = admin_client.request(method.upper(), path, **kwargs)  # type: ignore[arg-type]
            assert response.status_code == 401 and response.json()["error"] == "unauthorized", (path, response.text)
            assert response.headers["www-authenticate"] == "Bearer"
            wrong = {"headers": {"Content-Type": "application/json", "Authorization": "Bearer nope"}}
            response = admin_client.request(method.upper(), path, content=payload, **wrong)  # type: ignore[arg-type]
            assert response.status_code == 401, (path, response.text)
            response = app_client.request(method.upper(), path, **kwargs)  # type: ignore[arg-type]
            assert response.status_code == 403 and response.json()["error"] == "admin_disabled", (path, response.text)
    # authenticated, the body is checked as before
    response = admin_client.post("/retrain", content=b"{not json", headers={**AUTH, "Content-Type": "application/json"})
    assert response.status_code in (400, 422), response.text


def test_versions_beyond_the_store_are_a_plain_404(admin_client: TestClient) -> None:
    """A version number past MLflow's 32-bit column made the store fail with its SQL in the answer (503)."""
    for method, path, body in [("post", "/models/99999999999999999999/promote", {}),
                               ("post", "/models/2147483648/promote", {}),
                               ("post", "/models/0/promote", {}),
                               ("post", "/models/\u00b2/promote", {}),
                               ("post", "/evaluate", {"version": "99999999999999999999"}),
                               ("post", "/models/rollback", {"to": "99999999999999999999"})]:
        status, _h, payload = call(admin_client, method, path, body, AUTH)
        assert status == 404 and payload["error"] == "not_found", (path, payload)
        text = json.dumps(payload).lower()
        assert not any(word in text for word in ("select", "sql", "parameters", "mlflow", "postgres")), payload


def test_training_records_show_no_paths_or_urls() -> None:
    """A failed run's error quotes the trainer's files (a tampered champion) and the database URL."""
    from datetime import UTC, datetime

    from serving.control import training_public

    error = ("TamperedArtifact: /var/lib/flywheel/mlartifacts/1/abc/artifacts/model-1/weights.npz: model 'm' "
             "version 3: missing; connecting to postgresql://flywheel:s3cret@postgres:5432/flywheel failed")
    request = {"id": "r1", "action": "retrain", "status": "failed", "outcome": "failed", "error": error,
               "result": None, "run_id": None, "created_at": datetime.now(UTC), "started_at": None,
               "finished_at": None}
    public = training_public("r1", request, None)
    assert public.error is not None and "weights.npz" in public.error and "version 3" in public.error
    for text in (public.error, public.reason):
        assert "/var/lib" not in text and "s3cret" not in text and "postgresql://" not in text, text
