"""One configuration for all promotion gates, loadable from a dict or a YAML file, and the gate registry."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from trainer.gates.base import Clock, Gate
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

