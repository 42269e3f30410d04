"""Semantic versions of registered models, computed from the parent (a pure function, no I/O).

Relative to the parent: a different model kind or label set is a **major** bump (callers must not
assume the outputs are comparable); a full retrain or a bootstrap is **minor**; an incremental
update is **patch**. The first model is ``1.0.0``; a model without a parent while others exist starts
a new major line. A bump never reuses a version already taken: it moves to the next free one.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal, Self

Mode = Literal["bootstrap", "incremental", "full"]
Bump = Literal["major", "minor", "patch"]

_PATTERN = re.compile(r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)$")


@dataclass(frozen=True, order=True, slots=True)
class Semver:
    major: int
    minor: int
    patch: int

    @classmethod
    def parse(cls, text: str) -> Self:
        match = _PATTERN.match(text)
        if match is None:
            raise ValueError(f"not a MAJOR.MINOR.PATCH version: {text!r}")
        return cls(*(int(part) for part in match.groups()))

    @staticmethod
    def is_semver(text: str) -> bool:
        return _PATTERN.match(text) is not None

    def __str__(self) -> str:
        return f"{self.major}.{self.minor}.{self.patch}"


@dataclass(frozen=True, slots=True)
class Parent:
    """What the bump rule needs to know about the parent version."""

    semver: Semver
    kind: str
    labels: Sequence[str]


def bump_for(parent: Parent, kind: str, labels: Sequence[str], mode: Mode) -> Bump:
    if kind != parent.kind or set(labels) != set(parent.labels):
        return "major"
    return "patch" if mode == "incremental" else "minor"


def next_semver(parent: Parent | None, kind: str, labels: Sequence[str], mode: Mode,
                taken: Iterable[Semver] = ()) -> Semver:
    """The version of a new model trained from ``parent`` (``None``: no parent)."""
    taken = set(taken)
    if parent is None:
        return Semver(max((v.major for v in taken), default=0) + 1, 0, 0)
    bump = bump_for(parent, kind, labels, mode)
    p = parent.semver
    if bump == "major":
        return Semver(max([p.major, *(v.major for v in taken)]) + 1, 0, 0)
    if bump == "minor":
        return Semver(p.major, max([p.minor, *(v.minor for v in taken if v.major == p.major)]) + 1, 0)
    patches = (v.patch for v in taken if (v.major, v.minor) == (p.major, p.minor))
    return Semver(p.major, p.minor, max([p.patch, *patches]) + 1)
