"""JSON Schema documents exported from the event models (what producers register and validate with)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from schemas.base import Event
from schemas.events import (
    Curated,
    DeadLetter,
    FeedbackEvent,
    FeedbackEventV2,
    Landed,
    ModelEvent,
    PredictionEvent,
    PredictionEventV2,
    RetrainRequest,
)

EXPORTED: dict[str, type[Event]] = {
    "prediction.v1": PredictionEvent,
    "prediction.v2": PredictionEventV2,
    "feedback.v1": FeedbackEvent,
    "feedback.v2": FeedbackEventV2,
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


def subject(name: str) -> str:
    """The schema registry subject an exported schema is registered under at start (``flywheel.<name>``,
    e.g. ``flywheel.prediction.v2``: one subject per event type and version, so a version 2 never meets
    the compatibility check of version 1's)."""
    return f"flywheel.{name}"


def write_json_schemas(directory: Path) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, schema in json_schemas().items():
        path = directory / f"{name}.json"
        path.write_text(json.dumps(schema, indent=2, sort_keys=True) + "\n")
        paths.append(path)
    return paths
