"""The tasks Flywheel knows, by name: text-classification and tabular-classification."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from schemas.events import TabularInput, TaskInput, TextInput
from tasks.base import StoredInput, Task
from tasks.exceptions import SpecError
from tasks.features import Input
from tasks.spec import ModelSpec


class TextClassification(Task):
    """A text in, one label of a fixed set out (the sentiment classifier)."""

    name: ClassVar[str] = "text-classification"
    default_kinds: ClassVar[tuple[str, ...]] = ("tfidf-logreg",)

    def check_input(self, spec: ModelSpec, value: TaskInput) -> StoredInput:
        if not isinstance(value, TextInput):
            raise self.mismatch(spec, value)
        return StoredInput(value.text, None)

    def model_input(self, text: str | None, data: Mapping[str, Any] | None) -> Input:
        return text or ""


class TabularClassification(Task):
    """A feature row in (checked against the model's feature schema), one label out (e.g. whether an
    automation will succeed)."""

    name: ClassVar[str] = "tabular-classification"
    default_kinds: ClassVar[tuple[str, ...]] = ("lightgbm",)

    def check_input(self, spec: ModelSpec, value: TaskInput) -> StoredInput:
        if not isinstance(value, TabularInput):
            raise self.mismatch(spec, value)
        assert spec.features is not None  # the spec's own check
        return StoredInput(None, {"features": spec.features.validate_row(value.features)})

    def model_input(self, text: str | None, data: Mapping[str, Any] | None) -> Input:
        features = (data or {}).get("features")
        return features if isinstance(features, Mapping) else {}


TASKS: dict[str, Task] = {t.name: t for t in (TextClassification(), TabularClassification())}


def task_of(spec: ModelSpec) -> Task:
    try:
        return TASKS[spec.task]
    except KeyError:
        raise SpecError(f"model {spec.name!r}: unknown task {spec.task!r}; known: {sorted(TASKS)}") from None
