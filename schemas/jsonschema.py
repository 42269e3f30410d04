"""JSON Schema documents exported from the event models (what producers register and validate with)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from schemas.base import Event
from schemas.events import Curated, DeadLetter, FeedbackEvent, Landed, ModelEvent, PredictionEvent, RetrainRequest

EXPORTED: dict[str, type[Event]] = {
    "prediction.v1": PredictionEvent,
    "feedback.v1": FeedbackEvent,
    "dead_letter.v1": DeadLetter,
    "landed.v1": Landed,
    "curated.v1": Curated,
    "model.v1": ModelEvent,
    "retrain_request.v1": RetrainRequest,
}


def json_schemas() -> dict[str, dict[str, Any]]:
    """Name -> JSON Schema (draft 2020-12, as pydantic generates it) for every event type."""
    out = {}
    for name, model in EXPORTED.items():
        schema = model.model_json_schema()
        schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
        schema["$id"] = f"flywheel:{name}"
        out[name] = schema
    return out


def write_json_schemas(directory: Path) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, schema in json_schemas().items():
        path = directory / f"{name}.json"
        path.write_text(json.dumps(schema, indent=2, sort_keys=True) + "\n")
        paths.append(path)
    return paths
