"""A model declared once: its name, its task and what the task needs (labels; for a tabular task the
feature schema), which kinds may train it, and its training policy, gates and promotion (the trainer
config's YAML mapping, checked by the trainer when the spec is created). Specs come from YAML
(``FLYWHEEL_MODELS_CONFIG``) or ``flywheel models create`` and live in Postgres (``models``)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, Self

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from tasks.exceptions import SpecError
from tasks.features import FeatureSchema

TaskName = Literal["text-classification", "tabular-classification", "text-generation"]
CLASSIFICATION_TASKS = frozenset({"text-classification", "tabular-classification"})
ModelName = Annotated[str, Field(pattern=r"^[A-Za-z0-9._-]{1,100}$")]
Label = Annotated[str, Field(min_length=1, max_length=200)]


class ModelSpec(BaseModel):
    """One model of the platform. ``training`` is a trainer config mapping (``policy``, ``gates``,
    ``promotion``; docs/training.md); empty = the platform's defaults."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: ModelName
    task: TaskName
    labels: tuple[Label, ...] = Field(
        default=(), max_length=1000, description="A classifier's label set (at least 2); a generator has none.")
    positive_label: Label | None = Field(
        default=None, description="The class a rate rule watches (e.g. `failed`: a failure-rate reduction).")
    features: FeatureSchema | None = None
    kinds: tuple[str, ...] | None = Field(
        default=None, description="Kinds that may train it; unset = the training policy's (or the task's default).")
    training: dict[str, Any] = Field(default_factory=dict)
    description: Annotated[str, Field(max_length=2000)] = ""

    @model_validator(mode="before")
    @classmethod
    def _features_as_list(cls, data: Any) -> Any:
        if isinstance(data, Mapping) and isinstance(data.get("features"), list):
            return {**data, "features": {"features": data["features"]}}
        return data

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.task in CLASSIFICATION_TASKS and len(self.labels) < 2:
            raise ValueError(f"a {self.task} model needs at least 2 labels")
        if self.task not in CLASSIFICATION_TASKS and self.labels:
            raise ValueError(f"a {self.task} model takes no labels")
        if len(set(self.labels)) != len(self.labels):
            raise ValueError("labels repeat")
        if self.positive_label is not None and self.positive_label not in self.labels:
            raise ValueError(f"positive_label {self.positive_label!r} is not one of the labels {list(self.labels)}")
        if self.task == "tabular-classification" and self.features is None:
            raise ValueError("a tabular-classification model needs its features")
        if self.task != "tabular-classification" and self.features is not None:
            raise ValueError(f"a {self.task} model takes no features")
        return self

    def to_document(self) -> dict[str, Any]:
        """The spec as the JSON/YAML document it was declared with (features as a list)."""
        doc = self.model_dump(mode="json", exclude_none=True)
        if self.features is not None:
            doc["features"] = self.features.to_params()
        return doc


def parse_spec(document: object, source: str = "model spec") -> ModelSpec:
    """A :class:`ModelSpec` from a mapping, or :class:`SpecError` listing every problem."""
    try:
        return ModelSpec.model_validate(document)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or '<spec>'}: {e['msg']}"
                             for e in exc.errors(include_url=False)[:10])
        raise SpecError(f"{source}: {problems}") from None


def load_specs(path: Path) -> list[ModelSpec]:
    """The models of a YAML file: ``models: [spec, ...]``; names must be unique."""
    try:
        document = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise SpecError(f"{path}: cannot read the models config: {exc}") from exc
    if not isinstance(document, dict) or set(document) - {"models"} or not isinstance(document.get("models"), list):
        raise SpecError(f"{path}: expected a mapping with one key, `models`, holding a list of model specs")
    specs = [parse_spec(item, f"{path}: models[{i}]") for i, item in enumerate(document["models"])]
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise SpecError(f"{path}: model names repeat: {sorted({n for n in names if names.count(n) > 1})}")
    return specs
