"""An always-valid sequential test: is the canary's online accuracy better or worse than the champion's?

Two one-sided sequential probability ratio tests (Sobel & Wald) on the difference of two Bernoulli
rates, in the normal approximation. With ``d`` = canary accuracy - champion accuracy and ``V`` its
variance at the pooled rate, the information is ``1/V`` and the log-likelihood ratio of "the canary is better by
``effect``" against "no difference" is ``(effect * d - effect**2 / 2) / V`` (and with ``-d`` for worse):
a Brownian motion with drift in information time, whatever the traffic split between the arms.

* ``better`` (verdict ``promote``) / ``worse`` (``rollback``) when that ratio reaches ``log(2 / alpha)``.
  Under equal rates each ``exp(LLR)`` is a nonnegative martingale, so by Ville's inequality either one
  *ever* reaching the bound has probability <= ``alpha`` however often (and however long) it is looked
  at: the test stays valid under continuous monitoring, and when the lower bound is ignored.
* ``equivalent`` when both ratios fall to Wald's lower bound ``log(beta / (1 - alpha / 2))``: a
  difference of ``effect`` is ruled out with error <= ``beta``; the verdict is ``on_equivalent``.
* Nothing is decided before both arms hold ``min_samples`` outcomes.

Pure: no I/O, no clock; :func:`decide` is called again on the cumulative counts at every look.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Verdict = Literal["promote", "rollback", "continue"]
Outcome = Literal["better", "worse", "equivalent", "undecided"]


@dataclass(frozen=True, slots=True)
class Counts:
    """Joined feedback of one arm: ``n`` judged predictions, ``correct`` of them right."""

    n: int
    correct: int

    def __post_init__(self) -> None:
        if not 0 <= self.correct <= self.n:
            raise ValueError(f"need 0 <= correct <= n, got correct={self.correct} n={self.n}")

    @property
    def accuracy(self) -> float:
        return self.correct / self.n if self.n else math.nan


class SequentialConfig(BaseModel):
    """The error rates, the smallest difference worth detecting, and the sample floor per arm."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    alpha: float = Field(default=0.05, gt=0.0, lt=1.0, description="P(declaring a winner | equal accuracy).")
    beta: float = Field(default=0.2, gt=0.0, lt=1.0, description="P(missing a difference of `effect`).")
    effect: float = Field(default=0.05, gt=0.0, lt=1.0, description="Minimum detectable accuracy difference.")
    min_samples: int = Field(default=200, ge=1, description="Judged predictions per arm before any decision.")
    on_equivalent: Verdict = Field(
        default="rollback", description="Verdict when a difference of `effect` is ruled out: the champion stays.")


@dataclass(frozen=True, slots=True)
class Decision:
    verdict: Verdict
    outcome: Outcome
    statistic: float  # log-likelihood ratio of the leading side (better when d >= 0, else worse)
    thresholds: tuple[float, float]  # (lower: equivalence, upper: a winner), on the log-likelihood ratio
    reason: str
    difference: float = math.nan  # canary accuracy - champion accuracy
    z: float = math.nan  # difference / its standard error


def thresholds(config: SequentialConfig) -> tuple[float, float]:
    """(lower, upper) bounds on the log-likelihood ratio."""
    side = config.alpha / 2
    return math.log(config.beta / (1 - side)), math.log(1 / side)


def decide(champion: Counts, canary: Counts, config: SequentialConfig) -> Decision:
    lower, upper = thresholds(config)
    floor = config.min_samples
    if champion.n < floor or canary.n < floor:
        return Decision("continue", "undecided", 0.0, (lower, upper),
                        f"too few samples: champion {champion.n}, canary {canary.n} (< {floor} per arm)")
    variance = _variance(champion, canary)
    d = canary.accuracy - champion.accuracy
    effect = config.effect
    llr_better = (effect * d - effect * effect / 2) / variance
    llr_worse = (-effect * d - effect * effect / 2) / variance
    leading = llr_better if d >= 0 else llr_worse
    z = d / math.sqrt(variance)
    facts = (f"canary {canary.accuracy:.4f} ({canary.correct}/{canary.n}) vs champion {champion.accuracy:.4f} "
             f"({champion.correct}/{champion.n}), difference {d:+.4f}, z {z:+.2f}")

    def made(verdict: Verdict, outcome: Outcome, why: str) -> Decision:
        return Decision(verdict, outcome, leading, (lower, upper), f"{why}: {facts}", d, z)

    if llr_better >= upper:
        return made("promote", "better", f"canary better (LLR {llr_better:.2f} >= {upper:.2f})")
    if llr_worse >= upper:
        return made("rollback", "worse", f"canary worse (LLR {llr_worse:.2f} >= {upper:.2f})")
    if max(llr_better, llr_worse) <= lower:
        return made(config.on_equivalent, "equivalent",
                    f"no difference of {effect} either way (LLR {max(llr_better, llr_worse):.2f} <= {lower:.2f})")
    return made("continue", "undecided", f"undecided (LLR {leading:.2f} in ({lower:.2f}, {upper:.2f}))")


def _variance(champion: Counts, canary: Counts) -> float:
    """Variance of the difference of the two means under a pooled rate (the null's): symmetric in the
    arms, so a small canary arm at a high rate does not look more certain than one at a low rate. The
    half-count shrink keeps 0% or 100% from giving a zero variance."""
    p = (champion.correct + canary.correct + 0.5) / (champion.n + canary.n + 1)
    return p * (1 - p) * (1 / champion.n + 1 / canary.n)
