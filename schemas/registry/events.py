"""Flywheel's own event schemas in the registry: at start, every exported JSON Schema
(:mod:`schemas.jsonschema`) is registered under its subject, so Confluent-format producers can look up
(or validate against) ``flywheel.prediction.v2`` and the others without registering them first."""

from __future__ import annotations

import json
import logging

from schemas.jsonschema import json_schemas, subject
from schemas.registry.base import SchemaStore
from schemas.registry.compat import CompatibilityChecker
from schemas.registry.exceptions import SchemaRegistryError
from schemas.registry.model import Schema

log = logging.getLogger(__name__)


def register_event_schemas(store: SchemaStore) -> dict[str, int]:
    """Subject -> schema id of every event schema (registering an unchanged schema again is a no-op). A
    subject whose registered versions refuse the current schema is logged and left as it is."""
    checker = CompatibilityChecker()
    ids = {}
    for name, document in json_schemas().items():
        try:
            registered = store.register(subject(name), Schema(json.dumps(document, sort_keys=True)), checker)
        except SchemaRegistryError as exc:
            log.error("event schema %s not registered: %s", subject(name), exc)
            continue
        ids[subject(name)] = registered.schema_id
    return ids
