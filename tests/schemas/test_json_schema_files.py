"""The committed JSON Schema files (schemas/json) are exactly what the models export."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema

from schemas.jsonschema import json_schemas

COMMITTED = Path(__file__).resolve().parents[2] / "schemas" / "json"


def test_committed_files_match_the_models() -> None:
    for name, schema in json_schemas().items():
        path = COMMITTED / f"{name}.json"
        assert path.exists(), f"run `flywheel schemas export schemas/json` ({path} missing)"
        assert json.loads(path.read_text()) == schema, f"{path} is stale: run `flywheel schemas export schemas/json`"


def test_schemas_are_valid_and_accept_a_real_event() -> None:
    from tests.streams.helpers import feedback, prediction

    schemas = json_schemas()
    for schema in schemas.values():
        jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.validate(json.loads(feedback("p1").to_json()), schemas["feedback.v1"])
    jsonschema.validate(json.loads(prediction().to_json()), schemas["prediction.v1"])


def test_version_2_events_validate_and_every_schema_registers_once() -> None:
    from schemas.registry import MemorySchemaStore, register_event_schemas
    from tests.streams.test_ingest_models import GOOD, v2_feedback, v2_prediction

    schemas = json_schemas()
    jsonschema.validate(json.loads(v2_prediction("p1", GOOD)), schemas["prediction.v2"])
    jsonschema.validate(json.loads(v2_prediction("p2", "a text", probabilities={"succeeded": 1.0})),
                        schemas["prediction.v2"])
    jsonschema.validate(json.loads(v2_feedback("p1", "failed")), schemas["feedback.v2"])
    store = MemorySchemaStore()
    first = register_event_schemas(store)
    assert sorted(first) == sorted(f"flywheel.{name}" for name in schemas)
    assert register_event_schemas(store) == first  # idempotent: the same ids
    assert all(len(store.versions(s)) == 1 for s in first)
