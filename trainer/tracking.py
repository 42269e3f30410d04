"""What a run records in its MLflow run: its inputs, every gate's verdict with its files, and each
candidate's params and metrics."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from registry import RunHandle
from trainer.gates import Gate, Verdict
from trainer.selection import Candidate

__all__ = ["log_candidates", "log_later", "log_verdict"]


def log_verdict(ml: RunHandle, verdict: Verdict, prefix: str = "") -> None:
    """A gate's verdict in the MLflow run: a pass/fail metric, the verdict JSON and its files."""
    name = f"{prefix}{verdict.gate}"
    ml.log_metrics({f"gate.{name}.passed": 1.0 if verdict.passed else 0.0})
    ml.set_tags({f"gate.{name}": ("passed: " if verdict.passed else "failed: ") + verdict.reason[:4000]})
    ml.log_text(json.dumps(verdict.to_dict(), indent=2, sort_keys=True, default=str), f"gates/{name}.json")
    _log_files(ml, name, verdict.artifacts)


def log_later(ml: RunHandle, gate: Gate[Any], verdict: Verdict) -> None:
    """The files ``gate`` writes for ``verdict`` after deciding (the data docs it renders in the background),
    once they are written: call it before the MLflow run ends."""
    _log_files(ml, verdict.gate, gate.later_artifacts(verdict))


def _log_files(ml: RunHandle, name: str, artifacts: Mapping[str, Path]) -> None:
    for key, path in artifacts.items():
        if key == "data_docs" and path.is_file():  # a static site: index.html and its assets beside it
            ml.log_artifacts(path.parent, f"gates/{name}/data_docs")
        elif path.is_file():
            ml.log_artifact(path, f"gates/{name}")


def log_candidates(ml: RunHandle, candidates: Sequence[Candidate], seconds: float) -> None:
    """Every candidate's verdicts (``<name>.<gate>``), params and metrics, and the run's ``duration_s``."""
    for c in candidates:
        for v in c.verdicts:
            log_verdict(ml, v, prefix=f"{c.name}.")
    params: dict[str, Any] = {f"{c.name}.{k}": v for c in candidates for k, v in sorted(c.model.params.items())}
    ml.log_params(params)
    ml.log_metrics({f"{c.name}.{k}": v for c in candidates for k, v in c.metrics().items()})
    ml.log_metrics({"duration_s": seconds})
