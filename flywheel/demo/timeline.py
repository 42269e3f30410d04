"""What a replay records: each step (served version, correct or not, the static champion's answer), the
platform's decisions as markers, and the rolling views the report plots."""

from __future__ import annotations

import logging
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from flywheel.demo.options import DemoOptions

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Step:
    i: int
    t: float
    version: str
    semver: str
    variant: str
    live_correct: bool
    static_correct: bool
    feedback: str | None  # honest | noisy | poison
    feedback_id: str | None
    # a generator's step: the served answer's weighted BLEU/ROUGE-L-precision score against the reference,
    # the static champion's answer's, and the player's 1-5 rating
    score: float | None = None
    static_score: float | None = None
    rating: int | None = None


@dataclass(frozen=True)
class Marker:
    """A decision of the platform on the timeline (``i`` = the step it happened at)."""

    i: int
    t: float
    action: str  # promote | rollback | canary | retire | refused | failed
    semver: str
    reason: str
    traffic: float | None = None  # a canary's share of requests


@dataclass
class Timeline:
    options: DemoOptions
    drift_at: int | None = None  # the step where a known drift begins (marked on the report)
    started: float = field(default_factory=time.time)
    steps: list[Step] = field(default_factory=list)
    markers: list[Marker] = field(default_factory=list)
    runs: list[dict[str, Any]] = field(default_factory=list)
    figures: dict[str, Any] = field(default_factory=dict)
    failed_requests: int = 0

    def rolling(self, attr: str, window: int) -> list[float]:
        values: deque[bool] = deque(maxlen=window)
        out = []
        for step in self.steps:
            values.append(bool(getattr(step, attr)))
            out.append(sum(values) / len(values))
        return out

    def rolling_mean(self, attr: str, window: int) -> list[float | None]:
        """The mean of a numeric field over the last ``window`` steps that have it (None before any has)."""
        values: deque[float] = deque(maxlen=window)
        out: list[float | None] = []
        for step in self.steps:
            value = getattr(step, attr)
            if value is not None:
                values.append(float(value))
            out.append(sum(values) / len(values) if values else None)
        return out

    def step_at(self, when: float) -> int:
        """The index of the last step taken at or before ``when`` (a unix time)."""
        found = 0
        for step in self.steps:
            if self.started + step.t > when:
                break
            found = step.i
        return found
