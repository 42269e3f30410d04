"""A model kind's hyperparameter search space: for each constructor parameter worth tuning, the values to
try. A plain frozen description (no search library's types), so the kinds stay free of the tuner; the
trainer's :mod:`trainer.search` turns it into its sampler's calls."""

from __future__ import annotations

import math
from dataclasses import dataclass

from kinds.exceptions import KindError

Option = str | int | float | bool | None


@dataclass(frozen=True)
class FloatRange:
    """A float in ``[low, high]``; ``log``: sampled uniformly in log space (``low`` > 0)."""

    low: float
    high: float
    log: bool = False

    def __post_init__(self) -> None:
        _check_range(self.low, self.high, self.log)


@dataclass(frozen=True)
class IntRange:
    """An integer in ``[low, high]``; ``log``: sampled uniformly in log space (``low`` >= 1)."""

    low: int
    high: int
    log: bool = False

    def __post_init__(self) -> None:
        if not (isinstance(self.low, int) and isinstance(self.high, int)):
            raise KindError(f"an int range needs integer bounds, got [{self.low!r}, {self.high!r}]")
        _check_range(self.low, self.high, self.log)


@dataclass(frozen=True)
class Choice:
    """One of ``options`` (JSON scalars)."""

    options: tuple[Option, ...]

    def __post_init__(self) -> None:
        if not self.options or len(set(self.options)) != len(self.options):
            raise KindError(f"a choice needs distinct options, got {self.options!r}")


Dimension = FloatRange | IntRange | Choice


def _check_range(low: float, high: float, log: bool) -> None:
    if not (math.isfinite(low) and math.isfinite(high) and low < high):
        raise KindError(f"a range needs finite bounds with low < high, got [{low!r}, {high!r}]")
    if log and low <= 0:
        raise KindError(f"a log range needs low > 0, got {low!r}")
