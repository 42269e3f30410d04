"""The platform's models: the default text model (``FLYWHEEL_MODEL_NAME`` and ``FLYWHEEL_LABELS``: what
version 1 events mean), the models of ``FLYWHEEL_MODELS_CONFIG`` and those created with ``flywheel
models create``, all stored in Postgres (``models``). Each gets its own trainer config and settings view.

A spec is checked completely before it is stored: its training config parses, its kinds exist and can
train its task. The default model follows the settings unless a YAML file or the CLI declared it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import psycopg
from pydantic import ValidationError

from core.settings import FlywheelSettings
from kinds.catalog import GENERATORS, KINDS
from tasks import TASKS, ModelSpec, ModelStore, SpecError, load_specs
from trainer.config import TrainerConfig, load_trainer_config

SETTINGS_SOURCE = "settings"


def default_spec(settings: FlywheelSettings) -> ModelSpec:
    """The default text model, as the settings describe it (its training config: ``FLYWHEEL_TRAINER_CONFIG``)."""
    return ModelSpec(name=settings.model_name, task="text-classification", labels=settings.labels)


GENERATION_CANARY = 0.05  # a text-generation model's canary traffic unless its spec sets one


def check_spec(spec: ModelSpec) -> TrainerConfig:
    """The spec's trainer config, or :class:`SpecError` naming what is wrong (config, kinds, their task)."""
    try:
        config = TrainerConfig.model_validate(spec.training)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()[:5])
        raise SpecError(f"model {spec.name!r}: training: {problems}") from None
    kinds = spec.kinds or (config.policy.kinds if "kinds" in spec.training.get("policy", {})
                           else TASKS[spec.task].default_kinds)
    for kind in kinds:
        cls: type | None = KINDS.get(kind) or GENERATORS.get(kind)
        if cls is None:
            raise SpecError(f"model {spec.name!r}: unknown kind {kind!r}; known: {sorted([*KINDS, *GENERATORS])}")
        if spec.task not in getattr(cls, "tasks", frozenset({"text-classification"})):
            raise SpecError(f"model {spec.name!r}: kind {kind!r} cannot train a {spec.task} model")
    policy = config.policy.model_copy(update={"kinds": tuple(kinds)})
    evaluation = config.gates.evaluation
    if evaluation.positive_label is None and spec.positive_label is not None:
        evaluation = evaluation.model_copy(update={"positive_label": spec.positive_label})
    if evaluation.positive_label is not None and evaluation.positive_label not in spec.labels:
        raise SpecError(f"model {spec.name!r}: positive_label {evaluation.positive_label!r} is not a label")
    gates = config.gates.model_copy(update={"evaluation": evaluation})
    promotion = config.promotion
    if spec.task == "text-generation" and "canary_traffic" not in spec.training.get("promotion", {}):
        promotion = promotion.model_copy(update={"canary_traffic": GENERATION_CANARY})  # this task's default
    return config.model_copy(update={"policy": policy, "gates": gates, "promotion": promotion})


def trainer_config(spec: ModelSpec, settings: FlywheelSettings) -> TrainerConfig:
    """The trainer config of ``spec``: its own ``training``; for the default model without one, the file
    ``FLYWHEEL_TRAINER_CONFIG`` as before."""
    if spec.name == settings.model_name and not spec.training and spec.kinds is None:
        return load_trainer_config(settings.trainer_config)
    return check_spec(spec)


def settings_for(settings: FlywheelSettings, spec: ModelSpec) -> FlywheelSettings:
    """The settings as one model's processes see them (its name and labels)."""
    return settings.model_copy(update={"model_name": spec.name, "labels": spec.labels})


def declare(conn: psycopg.Connection[Any], settings: FlywheelSettings, *, config_file: Path | None = None
            ) -> list[ModelSpec]:
    """Store the default model (unless declared otherwise) and every model of ``config_file`` (default:
    ``FLYWHEEL_MODELS_CONFIG``); return every model now declared. Raises :class:`SpecError` before
    storing anything when a spec is invalid."""
    path = config_file if config_file is not None else settings.models_config
    specs = load_specs(path) if path is not None else []
    for spec in specs:
        check_spec(spec)
    store = ModelStore(conn)
    with conn.transaction():
        for spec in specs:
            store.put(spec, source="yaml")
        if settings.model_name not in {s.name for s in specs}:
            current = store.sources().get(settings.model_name)
            if current is None or current[0] == SETTINGS_SOURCE:
                store.put(default_spec(settings), source=SETTINGS_SOURCE)
    return store.all()


def create(conn: psycopg.Connection[Any], spec: ModelSpec, *, replace: bool = False) -> bool:
    """Store a spec from the CLI; refuses to change an existing model unless ``replace``."""
    return create_all(conn, [spec], replace=replace)[0]


def create_all(conn: psycopg.Connection[Any], specs: Sequence[ModelSpec], *, replace: bool = False) -> list[bool]:
    """Store the specs of one file, all or none: every spec is checked (and none may repeat a name)
    before the first is stored, and they are stored in one transaction; True for each new or changed."""
    names = [spec.name for spec in specs]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise SpecError(f"models {repeated} are declared more than once")
    for spec in specs:
        check_spec(spec)
    store = ModelStore(conn)
    with conn.transaction():
        return [_put(store, spec, replace) for spec in specs]


def _put(store: ModelStore, spec: ModelSpec, replace: bool) -> bool:
    existing = store.get(spec.name)
    if existing is not None and not replace:
        raise SpecError(f"model {spec.name!r} exists (task {existing.task}); pass --replace to change it")
    if existing is not None and existing.task != spec.task:
        raise SpecError(f"model {spec.name!r} is a {existing.task} model; its task cannot change "
                        f"(its samples are {existing.task} inputs): create a new model")
    return store.put(spec, source="cli")
