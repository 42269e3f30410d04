"""Promotion gates the trainer runs on every candidate model: data quality (Great Expectations),
evaluation against the champion, and the behavioural suite. ``GATES`` lists every gate class; the
conformance suite runs over it."""

from trainer.gates.base import Clock, CrossFitted, FakeClock, Gate, GateInput, Holdout, Verdict
from trainer.gates.behaviour import BehaviourConfig, BehaviourGate
from trainer.gates.config import GATES, GatesConfig, build_gates
from trainer.gates.evaluation import EvaluationConfig, EvaluationGate
from trainer.gates.exceptions import ArtifactWriteError, BehaviourSuiteError, GateConfigError, GateError
from trainer.gates.quality import QualityConfig, QualityGate
from trainer.gates.suite import BehaviourSuite, load_suite

__all__ = [
    "GATES",
    "ArtifactWriteError",
    "BehaviourConfig",
    "BehaviourGate",
    "BehaviourSuite",
    "BehaviourSuiteError",
    "Clock",
    "CrossFitted",
    "EvaluationConfig",
    "EvaluationGate",
    "FakeClock",
    "Gate",
    "GateConfigError",
    "GateError",
    "GateInput",
    "GatesConfig",
    "Holdout",
    "QualityConfig",
    "QualityGate",
    "Verdict",
    "build_gates",
    "load_suite",
]
