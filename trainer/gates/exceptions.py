"""Errors of the ``trainer.gates`` package. A gate reports bad evidence as a failing verdict; these are
for broken configuration (a gate cannot even be built) and for third-party failures outside the data."""

from __future__ import annotations

from pathlib import Path

from trainer.exceptions import TrainerError


class GateError(TrainerError):
    """Base of the gates' errors."""


class GateConfigError(GateError):
    """A gates configuration (YAML or dict) does not validate; ``source`` names where it came from."""

    def __init__(self, source: str, detail: str) -> None:
        super().__init__(f"invalid gates configuration {source}: {detail}")
        self.source = source
        self.detail = detail


class BehaviourSuiteError(GateError):
    """The behavioural test file cannot be read or does not validate; ``path`` names it."""

    def __init__(self, path: Path, detail: str) -> None:
        super().__init__(f"behavioural test file {path}: {detail}")
        self.path = path
        self.detail = detail


class ArtifactWriteError(GateError):
    """A gate could not write its report files under ``path`` (disk full, permissions, ...)."""

    def __init__(self, path: Path, detail: str) -> None:
        super().__init__(f"cannot write gate artifacts under {path}: {detail}")
        self.path = path
        self.detail = detail
