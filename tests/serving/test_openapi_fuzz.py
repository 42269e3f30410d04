"""schemathesis against the served OpenAPI document, with a champion live and the admin token given: no
generated request (valid or not) gets a 5xx, and every refusal is an ``{error, detail}`` body. Each operation
draws from schemathesis's positive (schema-valid) and negative (schema-violating) cases alike, so both the
served path and the refusal path are exercised on every run, not only when valid cases happen to break a
rule the schema does not state."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

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
from serving import create_app

from .conftest import bootstrap_champion, services

TOKEN = "fuzz-token"
EXAMPLES = 40  # per operation


@pytest.fixture
def live_app(settings: FlywheelSettings, db_url: str, lc: Lifecycle) -> Iterator[FastAPI]:
    app = create_app(settings.model_copy(update={"admin_token": SecretStr(TOKEN)}), database_url=db_url)
    with TestClient(app, raise_server_exceptions=False) as client:
        info = bootstrap_champion(lc)
        assert services(client).runtime.wait_live(info.version, 30)
        yield app


def test_no_generated_request_gets_a_5xx(live_app: FastAPI) -> None:
    schema = schemathesis.openapi.from_asgi("/openapi.json", live_app)
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
