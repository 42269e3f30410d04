"""The tasks Flywheel knows, by name: text-classification, tabular-classification and text-generation."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from schemas.events import (
    FeedbackEventV2,
    GenerationInput,
    GenerationOutput,
    TabularInput,
    TaskInput,
    TaskOutput,
    TextInput,
)
from schemas.reasons import Reason
from tasks.base import StoredInput, Task
from tasks.exceptions import InputRejected, SpecError
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


class TextGeneration(Task):
    """A prompt (with optional context and persona) in, a generated text out (the NPC dialogue model, a
    chatbot). Judged by thumbs, a 1-5 rating, a corrected response (a new reference) and interaction
    signals; it has no label set."""

    name: ClassVar[str] = "text-generation"
    default_kinds: ClassVar[tuple[str, ...]] = ("smollm2-lora",)

    def check_input(self, spec: ModelSpec, value: TaskInput) -> StoredInput:
        if not isinstance(value, GenerationInput):
            raise self.mismatch(spec, value)
        return StoredInput(None, value.model_dump(exclude_none=True))

    def check_output(self, spec: ModelSpec, value: TaskOutput) -> TaskOutput:
        if not isinstance(value, GenerationOutput):
            raise self.mismatch(spec, value)
        return value

    def check_feedback(self, spec: ModelSpec, event: FeedbackEventV2) -> None:
        if event.label is not None:
            raise InputRejected(Reason.FEEDBACK_WRONG_FOR_TASK,
                                f"model {spec.name!r} is a text-generation model: it takes thumbs, a rating, a "
                                "correction or a signal, not a label")

    def model_input(self, text: str | None, data: Mapping[str, Any] | None) -> Input:
        """The stored prompt document (``prompt``, ``context``, ``persona``) as a mapping."""
        return {k: v for k, v in (data or {}).items() if k in ("prompt", "context", "persona")}


TASKS: dict[str, Task] = {t.name: t for t in (TextClassification(), TabularClassification(), TextGeneration())}


def task_of(spec: ModelSpec) -> Task:
    try:
        return TASKS[spec.task]
    except KeyError:
        raise SpecError(f"model {spec.name!r}: unknown task {spec.task!r}; known: {sorted(TASKS)}") from None
