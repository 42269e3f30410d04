"""One configuration for all promotion gates (loadable from a dict or a YAML file), and one call per gate
for the trainer, taking its column-wise rows."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import pandas as pd
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from trainer.base import ModelKind
from trainer.gates.base import Clock, Gate, GateInput, Holdout, Verdict
from trainer.gates.behaviour import BehaviourConfig, BehaviourGate
from trainer.gates.evaluation import EvaluationConfig, EvaluationGate
from trainer.gates.exceptions import GateConfigError
from trainer.gates.quality import QualityConfig, QualityGate

GATES: tuple[type[Gate[Any]], ...] = (QualityGate, EvaluationGate, BehaviourGate)
"""Every gate class, in the order the trainer runs them; the conformance suite runs over each."""


class GatesConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    quality: QualityConfig = Field(default_factory=QualityConfig)
    evaluation: EvaluationConfig = Field(default_factory=EvaluationConfig)
    behaviour: BehaviourConfig = Field(default_factory=BehaviourConfig)

    @classmethod
    def from_mapping(cls, data: dict[str, Any] | None, source: str = "(mapping)") -> GatesConfig:
        try:
            return cls.model_validate(data or {})
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()[:5])
            raise GateConfigError(source, problems) from exc

    @classmethod
    def from_yaml(cls, path: Path) -> GatesConfig:
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
            raise GateConfigError(str(path), f"cannot be read as YAML: {exc}") from exc
        if data is not None and not isinstance(data, dict):
            raise GateConfigError(str(path), f"expected a mapping at the top level, got {type(data).__name__}")
        return cls.from_mapping(data, str(path))


def build_gates(config: GatesConfig | None = None, *, clock: Clock = time.perf_counter) -> list[Gate[Any]]:
    """The three gates in the order the trainer runs them: data quality, evaluation, behaviour."""
    config = config or GatesConfig()
    return [QualityGate(config.quality, clock=clock), EvaluationGate(config.evaluation, clock=clock),
            BehaviourGate(config.behaviour, clock=clock)]


class Columns(Protocol):
    """Column-wise labelled rows (the trainer's ``Frame``): equal-length lists."""

    texts: list[str]
    labels: list[str]
    weights: list[float]
    slices: list[str | None]


UNSLICED = "(none)"


def training_frame(rows: Columns) -> pd.DataFrame:
    """The quality gate's frame (``text``, ``label``, ``weight``, ``segment``) from column-wise rows."""
    return pd.DataFrame({"text": rows.texts, "label": rows.labels, "weight": rows.weights,
                         "segment": rows.slices}, dtype=object).astype({"weight": float})


def holdout_of(rows: Columns | Holdout) -> Holdout:
    if isinstance(rows, Holdout):
        return rows
    slices = None if all(s is None for s in rows.slices) else [UNSLICED if s is None else s for s in rows.slices]
    return Holdout(rows.texts, rows.labels, slices)


# -- one call per gate, for the trainer: build the gate from the grouped config and check -----------------
def quality_gate(config: GatesConfig, training: Columns | pd.DataFrame, labels: Sequence[str] | None,
                 out_dir: Path | None = None) -> Verdict:
    frame = training if isinstance(training, pd.DataFrame) else training_frame(training)
    return QualityGate(config.quality).check(GateInput(
        training=frame, label_set=None if labels is None else tuple(labels), out_dir=out_dir))


def evaluation_gate(config: GatesConfig, candidate: ModelKind, champion: ModelKind | None,
                    holdout: Columns | Holdout, out_dir: Path | None = None) -> Verdict:
    return EvaluationGate(config.evaluation).check(GateInput(
        candidate=candidate, champion=champion, holdout=holdout_of(holdout), out_dir=out_dir))


def behaviour_gate(config: GatesConfig, candidate: ModelKind, out_dir: Path | None = None) -> Verdict:
    return BehaviourGate(config.behaviour).check(GateInput(candidate=candidate, out_dir=out_dir))
