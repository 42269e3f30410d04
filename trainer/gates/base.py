"""The promotion-gate contract: every gate takes the same :class:`GateInput` and returns a
:class:`Verdict`. A gate never raises on degenerate evidence (an empty frame, one class, no champion,
an unfitted model): it fails with a reason instead, so the trainer can record why a candidate stopped.

Constructor parameters are the whole configuration: a frozen pydantic config plus an injected clock
(:class:`FakeClock` makes timings, hence verdicts, reproducible in tests).
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Generic, TypeVar

import pandas as pd
from pydantic import BaseModel

from kinds.base import ModelKind
from tasks import FeatureSchema, Input
from trainer.gates.exceptions import ArtifactWriteError

Clock = Callable[[], float]
"""Seconds from an arbitrary origin (``time.perf_counter`` in production)."""

C = TypeVar("C", bound=BaseModel)


@dataclass(frozen=True)
class Verdict:
    """What a gate decided. ``reason`` is one human-readable line with the numbers behind the decision;
    ``details`` is JSON-serialisable; ``artifacts`` names the files the gate wrote."""

    gate: str
    passed: bool
    reason: str
    details: dict[str, Any] = field(default_factory=dict)
    artifacts: dict[str, Path] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"gate": self.gate, "passed": self.passed, "reason": self.reason, "details": self.details,
                "artifacts": {name: str(path) for name, path in sorted(self.artifacts.items())}}


@dataclass(frozen=True)
class CrossFitted:
    """Out-of-fold predictions of a model's *recipe* for holdout rows the model itself trained on: row
    ``rows[i]`` was predicted ``labels[i]`` with top-class probability ``confidence[i]`` by a model trained
    that model's way on everything but that row's fold. With the candidate's recipe on the rows it trained
    on (and the champion's recipe on the rows the champion trained on, the same folds), both sides of the
    comparison stay out of sample: a cross-validated comparison of the two ways of training."""

    rows: Sequence[int]
    labels: Sequence[str]
    confidence: Sequence[float]
    folds: int

    def __len__(self) -> int:
        return len(self.rows)


@dataclass(frozen=True)
class Holdout:
    """Labelled evaluation rows; ``slices`` (optional) gives each row's slice value, e.g. its domain;
    ``weights`` (optional, positive) each row's importance in the overall metrics and their significance
    test (e.g. recent traffic weighted up to its share of what the model will serve). Per-slice checks
    count rows unweighted. ``current`` (optional) marks rows drawn from current traffic (recent feedback):
    the verdict reports both models' accuracy on them apart. ``cross_fitted`` (optional) replaces the
    candidate's own predictions on the rows it trained on by its recipe's out-of-fold ones;
    ``champion_cross_fitted`` (optional) does the same for the champion on the rows *it* trained on."""

    inputs: Sequence[Input]
    labels: Sequence[str]
    slices: Sequence[str] | None = None
    weights: Sequence[float] | None = None
    current: Sequence[bool] | None = None
    cross_fitted: CrossFitted | None = None
    champion_cross_fitted: CrossFitted | None = None

    def __len__(self) -> int:
        return len(self.inputs)


@dataclass(frozen=True, eq=False)
class GateInput:
    """Everything a gate may look at; each gate uses what it needs and fails if that is missing.

    ``label_set`` is the label set the training data must stay inside; it defaults to the candidate's
    (or, failing that, the champion's) labels once either is fitted. ``refresh``: the candidate is the
    champion's own recipe (kind, params, corpus weight, full refit) trained on more of the same stream.
    """

    candidate: ModelKind | None = None
    champion: ModelKind | None = None
    training: pd.DataFrame | None = None
    holdout: Holdout | None = None
    label_set: tuple[str, ...] | None = None
    features: FeatureSchema | None = None  # a tabular model's schema: the quality gate checks each feature
    out_dir: Path | None = None
    refresh: bool = False

    @property
    def labels(self) -> tuple[str, ...] | None:
        if self.label_set is not None:
            return self.label_set
        for model in (self.candidate, self.champion):
            if model is not None and model.fitted:
                return model.labels
        return None


class Gate(ABC, Generic[C]):
    """A promotion check. Subclasses set ``name`` and implement :meth:`check`."""

    name: ClassVar[str]

    def __init__(self, config: C, *, clock: Clock = time.perf_counter) -> None:
        self.config = config
        self.clock = clock

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.config!r})"

    @abstractmethod
    def check(self, inputs: GateInput) -> Verdict:
        """Decide on ``inputs``; write artifacts under ``inputs.out_dir / name`` when it is given."""

    def later_artifacts(self, verdict: Verdict) -> dict[str, Path]:
        """Files of ``verdict`` this gate writes after deciding (off the run's critical path), once they are
        written (blocks until then); by name, as :attr:`Verdict.artifacts`. Default: none."""
        return {}

    # -- helpers for subclasses ----------------------------------------------------------------
    def verdict(self, passed: bool, reason: str, details: dict[str, Any] | None = None,
                artifacts: dict[str, Path] | None = None) -> Verdict:
        return Verdict(gate=self.name, passed=passed, reason=" ".join(reason.split()),
                       details=details or {}, artifacts=artifacts or {})

    def fail(self, reason: str, **details: Any) -> Verdict:
        return self.verdict(False, reason, details)

    def artifact_dir(self, inputs: GateInput) -> Path | None:
        if inputs.out_dir is None:
            return None
        directory = inputs.out_dir / self.name
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ArtifactWriteError(directory, str(exc)) from exc
        return directory


def unusable_model(model: ModelKind | None, role: str) -> str | None:
    """Why ``model`` cannot be asked for predictions, or None when it can."""
    if model is None:
        return f"no {role} model was given"
    if not model.fitted:
        return f"the {role} model {model!r} is not fitted"
    return None


class FakeClock:
    """A clock for tests: every reading advances by ``step`` seconds, so timings are reproducible."""

    def __init__(self, step: float = 0.001) -> None:
        self.step = step
        self.now = 0.0

    def __call__(self) -> float:
        self.now += self.step
        return self.now
