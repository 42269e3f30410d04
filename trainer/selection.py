"""A run's candidates and the choice among those that passed every gate."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from kinds.base import ModelKind
from trainer.config import PolicyConfig
from trainer.data import Frame
from trainer.frames import CrossFit, evaluation_set
from trainer.gates import Gate, GateInput, Verdict

__all__ = ["Candidate", "choose_candidate", "select_candidate"]

log = logging.getLogger(__name__)


@dataclass
class Candidate:
    """One trained model of a run and the gates' verdicts on it."""

    kind: str
    model: ModelKind
    train_seconds: float
    cross_fit_seconds: float = 0.0
    verdicts: list[Verdict] = field(default_factory=list)
    corpus_weight: float | None = None  # the corpus rows' training weight when not the policy's
    name: str = ""  # kind, or kind_corpus<weight> for a corpus-weight choice (MLflow-safe)
    cross: CrossFit | None = None  # its recipe's out-of-fold predictions (the evaluation's cross-fitted rows)
    selection: Verdict | None = None  # a corpus-weight choice judged against the policy's weight (select_candidate)
    skipped: str = ""  # why the gates after evaluation were not run on it (choose_candidate): not passed, not failed

    def __post_init__(self) -> None:
        self.name = self.name or (self.kind if self.corpus_weight is None
                                  else f"{self.kind}_corpus{self.corpus_weight:g}")

    @property
    def passed(self) -> bool:
        return bool(self.verdicts) and all(v.passed for v in self.verdicts) and not self.skipped

    @property
    def score(self) -> float:
        return float(self.evaluation.get("score", 0.0))

    @property
    def evaluation(self) -> dict[str, Any]:
        """The candidate's part of the evaluation verdict: ``metrics`` and the weighted ``score``."""
        for v in self.verdicts:
            if v.gate == "evaluation":
                found: dict[str, Any] = v.details.get("candidate") or {}
                return found
        return {}

    def metrics(self) -> dict[str, float]:
        """Flat metrics for MLflow; ``current_accuracy`` (accuracy on current traffic: recent reserved and
        cross-fitted feedback) is what the champion watchdog compares online accuracy with."""
        evaluation = self.evaluation
        flat = {f"holdout_{k}": float(v) for k, v in (evaluation.get("metrics") or {}).items()
                if isinstance(v, int | float)}
        current = evaluation.get("current") or {}
        if isinstance(current.get("accuracy"), int | float):
            flat["current_accuracy"] = float(current["accuracy"])
            flat["current_rows"] = float(current["rows"])
        return {**flat, "holdout_score": self.score, "train_seconds": self.train_seconds,
                "cross_fit_seconds": self.cross_fit_seconds}

    def summary(self) -> dict[str, Any]:
        out = {"kind": self.kind, "name": self.name, "train_seconds": round(self.train_seconds, 3),
               "passed": self.passed, "score": self.score,
               "verdicts": [{"gate": v.gate, "passed": v.passed, "reason": v.reason} for v in self.verdicts]}
        if self.selection is not None:
            out["selection"] = {"chosen": self.selection.passed, "reason": self.selection.reason}
        if self.skipped:
            out["skipped"] = self.skipped
        return out


def select_candidate(passing: Sequence[Candidate], holdout: Frame, evaluation: Gate[Any],
                     policy: PolicyConfig) -> Candidate:
    """Of the passing candidates (best score first), the one to register: the best, except that a
    corpus-weight choice replaces the same kind at the policy's corpus weight (when that one passed too)
    only if the evaluation gate, judging the two against each other on the same rows (both cross-fitted),
    finds it better; its verdict is kept as the choice's ``selection``. Two recipes of one kind score
    within noise of each other on a few hundred rows, and the higher of two noisy scores favours the
    noisier recipe: in the efficacy bench (movies->products, 2026-12-04) corpus weight 0.05 outscored 0.2
    (0.657 vs 0.645 on 2,521 rows, 323 cross-fitted) and served 0.600 on the held-out rows; the same
    samples trained at 0.2 serve 0.614-0.628 (docs/training.md)."""
    chosen = choose_candidate(passing, lambda c: True, holdout, evaluation, policy)
    assert chosen is not None  # every passing candidate behaves
    return chosen


def choose_candidate(ranked: Sequence[Candidate], behaves: Callable[[Candidate], bool], holdout: Frame,
                     evaluation: Gate[Any], policy: PolicyConfig) -> Candidate | None:
    """:func:`select_candidate` over the candidates that passed evaluation (``ranked``: best score first),
    asking ``behaves`` (the remaining gates, run on demand) only of those the choice reads: the best, then
    the next when it fails, and the same kind at the policy's corpus weight when the best is a corpus-weight
    choice. The same choice as running every gate on every candidate first, since the choice looks at no
    other candidate; None when none behaves (then every one was asked)."""
    best = next((c for c in ranked if behaves(c)), None)
    if best is None:
        return None
    default = next((c for c in ranked if c.kind == best.kind and c.corpus_weight is None and behaves(c)), None)
    if best.corpus_weight is None or default is None:
        return best
    cross = best.cross.against(default.cross) if best.cross is not None and default.cross is not None else None
    best.selection = evaluation.check(GateInput(candidate=best.model, champion=default.model,
                                                holdout=evaluation_set(holdout, policy, cross)))
    log.info("%s vs %s (the policy's corpus weight): %s", best.name, default.name, best.selection.reason)
    return best if best.selection.passed else default
