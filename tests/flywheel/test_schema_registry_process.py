"""``flywheel schema-registry``: the registry as its own process (as compose and Kubernetes run it), on the
platform database that ingest checks wire-format schema ids against."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from datetime import UTC, datetime

import httpx

from schemas import EventDecoder, EventRules, FeedbackEvent
from schemas.registry import PostgresSchemaStore


def test_the_registry_runs_as_its_own_process_and_ingest_sees_what_it_registers(db_url: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLYWHEEL_")}
    env.update(FLYWHEEL_DATABASE_URL=db_url, FLYWHEEL_SCHEMA_REGISTRY_PORT="0", FLYWHEEL_METRICS_HOST="127.0.0.1")
    proc = subprocess.Popen([sys.executable, "-m", "flywheel", "schema-registry"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        assert proc.stdout is not None
        lines = []
        for line in proc.stdout:
            lines.append(line)
            if "schema registry at" in line:
                break
        url = lines[-1].split("schema registry at", 1)[1].strip()
        assert url.startswith("http://127.0.0.1:"), lines
        schema = {"schema": json.dumps(FeedbackEvent.model_json_schema()), "schemaType": "JSON"}
        response = httpx.post(f"{url}/subjects/flywheel.feedback.v1-value/versions", json=schema,
                              headers={"Content-Type": "application/vnd.schemaregistry.v1+json"}, timeout=10)
        assert response.status_code == 200, response.text
        schema_id = response.json()["id"]

        event = FeedbackEvent(feedback_id="f", prediction_id="p", label="positive", ts=datetime.now(UTC))
        with PostgresSchemaStore(db_url) as ingest_side:  # as `flywheel process ingest` checks ids
            decoder = EventDecoder(FeedbackEvent, EventRules(frozenset({"positive"})), ingest_side.schema_exists)
            assert decoder.decode(b"\x00" + schema_id.to_bytes(4, "big") + event.to_json(), datetime.now(UTC)) == event
        nul = httpx.get(f"{url}/subjects/a%00b/versions", timeout=10)
        assert nul.status_code == 422 and nul.json()["error_code"] == 42208
    finally:
        proc.send_signal(signal.SIGTERM)
        rest, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, "".join(lines) + rest
    assert "stopped cleanly" in rest and "\x00" not in rest
