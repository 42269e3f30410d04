"""schemathesis against the served OpenAPI document, with a champion live and the admin token given: no
generated request (valid or not) gets a 5xx, and every refusal is an ``{error, detail}`` body. Each operation
draws from schemathesis's positive (schema-valid) and negative (schema-violating) cases alike, so both the
served path and the refusal path are exercised on every run, not only when valid cases happen to break a
rule the schema does not state."""

from __future__ import annotations

import contextlib
import importlib
import pkgutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import SecretStr
from schemathesis.generation import GenerationMode

from core.settings import FlywheelSettings
from flywheel.lifecycle import Lifecycle
from flywheel.stack import free_port
from serving import create_app, serve

from .conftest import bootstrap_champion, services

TOKEN = "fuzz-token"
EXAMPLES = 40  # per operation
CLI_EXAMPLES = 30  # per operation and phase


@pytest.fixture(scope="module", autouse=True)
def _schemathesis_imported() -> None:
    """schemathesis imports most of itself lazily, on the first schema, strategy and call, and pytest
    rewrites those modules' asserts (schemathesis is a pytest plugin), i.e. compiles them. CPython 3.11's
    AST validator keeps its recursion depth in shared state, so a compile racing another thread's (the live
    app's threads import lazily too) can fail with "SystemError: AST constructor recursion depth mismatch"
    (seen once in the suite). Importing them all here, before any app thread runs, avoids it."""
    for module in pkgutil.walk_packages(schemathesis.__path__, "schemathesis."):
        with contextlib.suppress(ImportError):  # an extra this venv does not install
            importlib.import_module(module.name)


@pytest.fixture
def live_app(settings: FlywheelSettings, db_url: str, lc: Lifecycle) -> Iterator[FastAPI]:
    app = create_app(settings.model_copy(update={"admin_token": SecretStr(TOKEN)}), database_url=db_url)
    with TestClient(app, raise_server_exceptions=False) as client:
        info = bootstrap_champion(lc)
        assert services(client).runtime.wait_live(info.version, 30)
        yield app


def test_no_generated_request_gets_a_5xx(live_app: FastAPI) -> None:
    schema = schemathesis.openapi.from_asgi("/openapi.json", live_app)
    # schemathesis runs the app's lifespan again, in its own event loop: a second set of services whose
    # runtime loads the champion by itself. Fuzz once that one is ready, or an early /predict is a 503.
    ready = schema["/ready"]["GET"]
    deadline = time.monotonic() + 60
    while ready.Case().call().status_code != 200:
        assert time.monotonic() < deadline, "the app started by schemathesis never became ready"
        time.sleep(0.2)
    operations = [result.ok() for result in schema.get_all_operations()]
    labels = {op.label for op in operations}
    assert {"POST /predict", "POST /feedback", "POST /retrain", "POST /bootstrap", "GET /training/{job_id}",
            "POST /models/{version}/promote", "POST /models/rollback", "POST /evaluate"} <= labels, labels
    seen: dict[str, set[int]] = {}
    failures: list[str] = []

    def fuzz(op: Any) -> None:
        @given(case=st.one_of(op.as_strategy(GenerationMode.POSITIVE), op.as_strategy(GenerationMode.NEGATIVE)),
               with_token=st.booleans())
        @settings(max_examples=EXAMPLES, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck))
        def run(case: schemathesis.Case, with_token: bool) -> None:
            headers = {"Authorization": f"Bearer {TOKEN}"} if with_token else None
            response = case.call(headers=headers)
            seen.setdefault(op.label, set()).add(response.status_code)
            if response.status_code >= 500:
                failures.append(f"{op.label} -> {response.status_code}: {response.text[:300]} "
                                f"(body {case.body!r:.200}, path {case.path_parameters})")
            elif response.status_code >= 400:
                assert set(response.json()) == {"error", "detail"}, (op.label, response.text)

        run()

    for op in operations:
        fuzz(op)

    assert not failures, "\n".join(failures)
    print({label: sorted(codes) for label, codes in sorted(seen.items())})
    assert 401 in seen["POST /retrain"] and 422 in seen["POST /predict"] and 200 in seen["POST /predict"]


@pytest.fixture
def served(settings: FlywheelSettings, db_url: str, lc: Lifecycle) -> Iterator[str]:
    """The app under uvicorn (as a pod runs it) on a free port, with a champion live: its base URL."""
    port = free_port()
    admin_settings = settings.model_copy(update={"admin_token": SecretStr(TOKEN)})
    app = create_app(admin_settings, database_url=db_url)
    stop = threading.Event()
    thread = threading.Thread(target=serve, args=(admin_settings, stop), kwargs={"port": port, "app": app},
                              daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    try:
        info = bootstrap_champion(lc)
        deadline = time.monotonic() + 60
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/ready", timeout=2).status_code == 200:
                    break
            assert time.monotonic() < deadline, "the served app never became ready"
            time.sleep(0.2)
        assert services_of(app).runtime.wait_live(info.version, 30)
        yield url
    finally:
        stop.set()
        thread.join(30)


def services_of(app: FastAPI) -> Any:
    return app.state.services


def test_schemathesis_with_all_checks_reports_nothing(served: str, tmp_path: Path) -> None:
    """The command a user runs against a pod: every phase (examples, coverage, fuzzing, stateful) and every
    check (schema conformance, status codes, negative data rejected, positive data accepted, unsupported
    methods answered 405 with ``Allow``, ignored auth, ...), with the admin token."""
    st_bin = Path(sys.executable).with_name("schemathesis")
    result = subprocess.run(
        [str(st_bin), "run", f"{served}/openapi.json", "--checks", "all", "--max-examples", str(CLI_EXAMPLES),
         "-H", f"Authorization: Bearer {TOKEN}", "--workers", "1", "--seed", "1", "--suppress-health-check", "all"],
        capture_output=True, text=True, timeout=1200, cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-20000:] + result.stderr[-3000:]


def test_the_document_declares_what_the_routes_enforce(app_client: TestClient, settings: FlywheelSettings) -> None:
    """What schemathesis found: limits the routes checked but the document did not state, a 400 it did not
    list, and 405s without ``Allow``."""
    schema = app_client.get("/openapi.json").json()
    components = schema["components"]["schemas"]
    text = components["PredictCreate"]["properties"]["text"]
    assert (text["minLength"], text["pattern"], text["maxLength"]) == (1, r"\S", settings.max_text_chars)
    assert components["CorpusRowCreate"]["properties"]["label"]["enum"] == list(settings.labels)
    assert components["ReviewLabelCreate"]["properties"]["label"]["enum"] == list(settings.labels)
    label = components["FeedbackCreate"]["properties"]["label"]["anyOf"][0]
    assert label["enum"] == list(settings.labels) and len(components["FeedbackCreate"]["oneOf"]) == 2
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            if "requestBody" in operation:
                assert "400" in operation["responses"], (method, path)
    not_json = app_client.post("/predict", content=b"\xff{", headers={"Content-Type": "application/json"})
    assert not_json.status_code in (400, 422) and set(not_json.json()) == {"error", "detail"}
    for method, path in [("TRACE", "/predict"), ("DELETE", "/models"), ("PUT", "/health"), ("PATCH", "/ready")]:
        response = app_client.request(method, path)
        assert response.status_code == 405 and response.headers["allow"], (method, path, response.headers)
        assert set(response.json()) == {"error", "detail"}
