"""The task contract: how a model's events are checked against its spec and how a stored sample
becomes a model input. A task is a small object with these hooks (river's ``base`` habit); ingest,
curation, the trainer and serving ask it instead of assuming text."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from schemas.events import ClassificationOutput, FeedbackEventV2, TaskInput, TaskOutput
from schemas.reasons import Reason
from tasks.exceptions import InputRejected
from tasks.features import Input
from tasks.spec import ModelSpec


@dataclass(frozen=True, slots=True)
class StoredInput:
    """An input as ingest stores it: ``text`` for text tasks (the ``text`` column, indexed and hashed as
    before), ``data`` (the ``input`` jsonb column) for every other task."""

    text: str | None
    data: dict[str, Any] | None


class Task(ABC):
    name: ClassVar[str]
    default_kinds: ClassVar[tuple[str, ...]]

    @abstractmethod
    def check_input(self, spec: ModelSpec, value: TaskInput) -> StoredInput:
        """The input to store, or :class:`InputRejected` (task mismatch, a feature violation...)."""

    def check_output(self, spec: ModelSpec, value: TaskOutput) -> TaskOutput:
        """The output, if it is a classification over the model's labels; else :class:`InputRejected`
        (a generating task overrides this)."""
        if not isinstance(value, ClassificationOutput):
            raise self.mismatch(spec, value)
        unknown = sorted(set(value.probabilities) - set(spec.labels))
        if unknown:
            raise InputRejected(Reason.LABEL_NOT_IN_SET,
                                f"probabilities name labels {unknown[:10]} that model {spec.name!r} does not "
                                f"have ({list(spec.labels)[:20]})")
        return value

    def check_feedback(self, spec: ModelSpec, event: FeedbackEventV2) -> None:
        """A classifier is judged by a label or thumbs: a rating, correction or interaction signal is
        another task's feedback (a generating task overrides this)."""
        extra = [name for name in ("rating", "correction", "signal") if getattr(event, name) is not None]
        if extra:
            raise InputRejected(Reason.FEEDBACK_WRONG_FOR_TASK,
                                f"model {spec.name!r} is a {spec.task} model: it takes a label or thumbs, not "
                                f"{', '.join(extra)}")
        if event.label is None and event.thumbs is None:
            raise InputRejected(Reason.FEEDBACK_WRONG_FOR_TASK,
                                f"model {spec.name!r} is a {spec.task} model: feedback needs a label or thumbs")
        self.check_label(spec, event.label)

    def check_label(self, spec: ModelSpec, label: str | None) -> None:
        """Feedback's label must be one of the model's."""
        if label is not None and label not in spec.labels:
            raise InputRejected(Reason.LABEL_NOT_IN_SET,
                                f"label {label[:200]!r} is not one of model {spec.name!r}'s {list(spec.labels)[:20]}")

    @abstractmethod
    def model_input(self, text: str | None, data: Mapping[str, Any] | None) -> Input:
        """A stored input as the model kinds take it."""

    def mismatch(self, spec: ModelSpec, value: object) -> InputRejected:
        return InputRejected(Reason.TASK_MISMATCH,
                             f"model {spec.name!r} is a {spec.task} model; got a {type(value).__name__}")
