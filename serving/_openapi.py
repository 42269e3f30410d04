"""The served OpenAPI document states the limits the routes enforce, so that a client (or schemathesis)
built from it sends nothing the server refuses and expects every answer it gets: limits that depend on
settings (the label set, ``max_text_chars``) and rules the routes check themselves (a text with something
besides whitespace, a known model kind, exactly one of label and thumbs, at least one judgement of a
model's feedback), and the 400 that any operation
with a body answers to bytes that are not JSON."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI

from core.settings import FlywheelSettings
from kinds.catalog import KINDS

NOT_BLANK = r"\S"  # what the routes' ``text.strip()`` check needs: one character that is not whitespace
# component -> property -> the constraints to declare; "labels" and "max_text_chars" come from settings
_DECLARED: dict[str, dict[str, dict[str, object]]] = {
    "PredictCreate": {"text": {"minLength": 1, "pattern": NOT_BLANK, "maxLength": "max_text_chars"}},
    "CorpusRowCreate": {"text": {"maxLength": "max_text_chars", "allOf": [{"pattern": NOT_BLANK}]},
                        "label": {"enum": "labels"}},
    "FeedbackCreate": {"label": {"enum": "labels"}},
    "ReviewLabelCreate": {"label": {"enum": "labels"}},
    "BootstrapCreate": {"kind": {"enum": sorted(KINDS)}},
}
# FeedbackCreate: a label (one of the set) or thumbs, never both, never neither (null is unset)
_LABEL_OR_THUMBS = {"oneOf": [{"required": ["label"], "properties": {"label": {"type": "string"}}},
                              {"required": ["thumbs"], "properties": {"thumbs": {"type": "string"}}}]}

# ModelFeedbackCreate: at least one judgement (which ones a model takes is its task's: 422 naming the field),
# label and thumbs never both
_SOME_JUDGEMENT = {
    "anyOf": [{"required": [name], "properties": {name: {"type": kind}}}
              for name, kind in (("label", "string"), ("thumbs", "string"), ("rating", "integer"),
                                 ("correction", "string"), ("signal", "string"))],
    "not": {"required": ["label", "thumbs"],
            "properties": {"label": {"type": "string"}, "thumbs": {"type": "string"}}}}


def install_openapi(app: FastAPI, settings: FlywheelSettings) -> None:
    """Wrap ``app.openapi`` so that the document it builds (once) declares the limits."""
    build: Callable[[], dict[str, Any]] = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = declare_limits(build(), settings)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def declare_limits(schema: dict[str, Any], settings: FlywheelSettings) -> dict[str, Any]:
    values = {"labels": list(settings.labels), "max_text_chars": settings.max_text_chars}
    components = schema.get("components", {}).get("schemas", {})
    for component, properties in _DECLARED.items():
        for name, constraints in properties.items():
            prop = components.get(component, {}).get("properties", {}).get(name)
            if prop is None:
                continue
            target = next((b for b in prop.get("anyOf", []) if b.get("type") == "string"), prop)
            target.update({k: values.get(v, v) if isinstance(v, str) else v for k, v in constraints.items()})
    if "FeedbackCreate" in components:
        components["FeedbackCreate"].update(_LABEL_OR_THUMBS)
    if "ModelFeedbackCreate" in components:
        components["ModelFeedbackCreate"].update(_SOME_JUDGEMENT)
    error = {"description": "The body is not JSON (or not UTF-8)",
             "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorPublic"}}}}
    for operations in schema.get("paths", {}).values():
        for operation in operations.values():
            if isinstance(operation, dict) and "requestBody" in operation:
                operation.setdefault("responses", {}).setdefault("400", error)
    return schema
