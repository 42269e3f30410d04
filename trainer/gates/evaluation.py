"""Evaluation gate: candidate vs champion on the same holdout.

Criteria, in order (the reason names the first that fails): the weighted score (over accuracy,
macro-F1, 1 - ECE and/or the minimum per-class recall) improves by at least ``min_improvement``; the
improvement is significant (one-sided "candidate better" at ``alpha``: paired bootstrap over holdout rows
on the weighted score, or McNemar on per-row correctness); no slice with ``min_slice_size`` rows or more
loses more than ``slice_tolerance`` accuracy. Without a champion (the first model) the candidate passes
when its weighted score reaches ``absolute_floor`` (off by default).

A *refresh* (:attr:`GateInput.refresh`: the champion's own recipe retrained on more of the same stream)
is held to non-inferiority instead, when ``refresh_margin`` is set: no minimum improvement, and the test
is one-sided "candidate's score above the champion's minus ``refresh_margin``" at ``alpha``; the slice
check is the same. The next step of a learning curve is small: offline, the MiniLM head on the bench's
tweets stream gains +0.010 held-out accuracy from 200 to 400 labels. A superiority test on a few hundred
evaluation rows cannot see that, so under it a platform stops improving after its first promotion: in the
efficacy bench (movies->tweets, 2026-12-04) refits of the champion's recipe on 302 and 356 samples were
refused against the 199-sample champion (+0.009 at p 0.145, and -0.0002).

Rows the candidate trained on may join the holdout with its recipe's out-of-fold predictions
(:class:`~trainer.gates.base.CrossFitted`); rows the champion trained on too get the champion recipe's
out-of-fold predictions on the same folds. Both sides stay out of sample while every label the platform
collected counts as evidence, not only those that arrived after the champion was trained. The verdict
says how many rows were cross-fitted (and for the champion); rows marked ``current`` (recent traffic) get
their own accuracy figures.
"""

from __future__ import annotations

import contextlib
import hashlib
import time
import weakref
from collections.abc import Iterator, Sequence
from typing import Any, Literal, Self

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field, model_validator

from kinds.base import ModelKind
from tasks.features import Input
from trainer.exceptions import TrainerError
from trainer.gates._metrics import (
    Metric,
    RowStats,
    evaluate,
    mcnemar,
    metrics_from_sums,
    paired_bootstrap,
    row_stats,
)
from trainer.gates._private import jsonable
from trainer.gates.base import Clock, CrossFitted, Gate, GateInput, Holdout, Verdict, unusable_model

RuleMetric = Literal["accuracy", "macro_f1", "calibration", "min_recall", "failure_rate"]
LOWER_IS_BETTER = frozenset({"failure_rate"})


class MetricRule(BaseModel):
    """One more condition a candidate must meet against the champion, beyond the weighted score: e.g.
    ``{metric: accuracy, min_gain: 0.01}`` (at least one point better), ``{metric: failure_rate, min_gain:
    0.05, relative: true}`` (the failure rate falls by 5% of the champion's), ``{metric: accuracy,
    max_drop: 0.05}`` (never more than five points worse). A gain is candidate minus champion, or champion
    minus candidate for a metric where lower is better (``failure_rate``: the share of rows the model
    approves, i.e. does not predict as ``positive_label``, whose outcome was ``positive_label``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    metric: RuleMetric
    min_gain: float | None = None
    max_drop: float | None = Field(default=None, ge=0.0)
    relative: bool = False

    @model_validator(mode="after")
    def _one_bound(self) -> Self:
        if (self.min_gain is None) == (self.max_drop is None):
            raise ValueError(f"rule on {self.metric}: give exactly one of min_gain or max_drop")
        return self

    def describe(self) -> str:
        unit = "relative " if self.relative else ""
        if self.min_gain is not None:
            return f"{self.metric} {unit}gain >= {self.min_gain:g}"
        return f"{self.metric} {unit}drop <= {self.max_drop:g}"

    def check(self, candidate: float, champion: float) -> tuple[bool, float]:
        """(met, gain): the gain is absolute, or relative to the champion's value when ``relative``."""
        gain = champion - candidate if self.metric in LOWER_IS_BETTER else candidate - champion
        if self.relative:
            gain = gain / abs(champion) if champion else (0.0 if gain == 0 else float("inf") * np.sign(gain))
        if self.min_gain is not None:
            return gain >= self.min_gain - 1e-12, gain
        assert self.max_drop is not None
        return -gain <= self.max_drop + 1e-12, gain


def _default_weights() -> dict[Metric, float]:
    return {"accuracy": 0.4, "macro_f1": 0.4, "calibration": 0.2}


class EvaluationConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    metric_weights: dict[Metric, float] = Field(default_factory=_default_weights)
    min_improvement: float = 0.005
    test: Literal["bootstrap", "mcnemar"] = "bootstrap"
    alpha: float = Field(default=0.05, gt=0.0, lt=1.0)
    n_resamples: int = Field(default=1000, ge=1)
    seed: int = 0
    mcnemar_exact_below: int = Field(default=25, ge=0)  # discordant pairs below which McNemar is exact
    min_slice_size: int = Field(default=50, ge=1)
    slice_tolerance: float = Field(default=0.02, ge=0.0)
    absolute_floor: float | None = None  # weighted score a first model (no champion) must reach
    refresh_margin: float | None = Field(default=0.02, gt=0.0, lt=1.0)  # None: refreshes must improve too
    calibration_bins: int = Field(default=10, ge=1)
    rules: tuple[MetricRule, ...] = Field(
        default=(), description="Conditions on single metrics, all of which must hold too (see MetricRule).")
    positive_label: str | None = Field(
        default=None, description="The class failure_rate watches (e.g. `failed`); the model spec's by default.")

    @model_validator(mode="after")
    def _weights_are_usable(self) -> Self:
        if any(w < 0 for w in self.metric_weights.values()) or sum(self.metric_weights.values()) <= 0:
            raise ValueError(f"metric_weights must be non-negative with a positive sum: {self.metric_weights}")
        return self


class EvaluationGate(Gate[EvaluationConfig]):
    name = "evaluation"

    def __init__(self, config: EvaluationConfig | None = None, *, clock: Clock = time.perf_counter) -> None:
        super().__init__(config or EvaluationConfig(), clock=clock)
        self._asked: list[tuple[weakref.ref[ModelKind], bytes, npt.NDArray[np.float64]]] | None = None

    def check(self, inputs: GateInput) -> Verdict:
        holdout, cfg = inputs.holdout, self.config
        problem = unusable_model(inputs.candidate, "candidate") or _holdout_problem(holdout)
        if problem is not None:
            return self.fail(problem)
        assert inputs.candidate is not None and holdout is not None
        classes = tuple(sorted(set(holdout.labels)))
        cand = self._stats(inputs.candidate, holdout, classes, holdout.cross_fitted)
        if isinstance(cand, str):
            return self.fail(f"candidate: {cand}")
        cand_eval = _with_current(evaluate(cand, cfg.metric_weights), cand, holdout)
        cand_score: float = cand_eval["score"]
        details: dict[str, Any] = {
            "rows": len(holdout), "effective_rows": _effective_rows(holdout), "weights": dict(cfg.metric_weights),
            "cross_fitted": _cross_fitted_details(holdout),
            "candidate": cand_eval,
            "criteria": {"min_improvement": cfg.min_improvement, "alpha": cfg.alpha,
                         "refresh_margin": cfg.refresh_margin,
                         "min_slice_size": cfg.min_slice_size, "slice_tolerance": cfg.slice_tolerance}}
        if inputs.champion is None:
            return self._first_model(cand_score, details)
        problem = unusable_model(inputs.champion, "champion")
        champ = problem or self._stats(inputs.champion, holdout, classes, holdout.champion_cross_fitted)
        if isinstance(champ, str):
            return self.fail(f"champion: {champ}", **jsonable(details))
        champ_eval = _with_current(evaluate(champ, cfg.metric_weights), champ, holdout)
        champ_score: float = champ_eval["score"]
        delta = cand_score - champ_score
        margin = cfg.refresh_margin if inputs.refresh else None
        p_value, test = self._significance(cand, champ, margin or 0.0)
        slices = _slice_table(holdout, cand.correct, champ.correct, cfg.min_slice_size, cfg.slice_tolerance)
        details.update(champion=champ_eval, delta=delta, p_value=p_value, test=test, slices=slices,
                       refresh=margin is not None)
        crossed = f", {len(holdout.cross_fitted)} cross-fitted" if holdout.cross_fitted else ""
        if holdout.champion_cross_fitted:
            crossed += f" ({len(holdout.champion_cross_fitted)} for the champion too)"
        scores = f"weighted score {cand_score:.4f} vs champion {champ_score:.4f} on {len(holdout)} rows{crossed}"
        regressed = [s for s in slices if s["regressed"]]
        rules = self._rules(cand, champ, details)
        broken = [r for r in rules if not r["met"]]
        if margin is not None:
            scores = f"refresh of the champion's recipe: {scores}"
        if margin is not None and p_value > cfg.alpha:
            reason = (f"{scores} ({delta:+.4f}) is not shown non-inferior within {margin:g}: {test['name']} "
                      f"one-sided p={p_value:.3g} > alpha {cfg.alpha:g}")
        elif margin is None and delta < cfg.min_improvement:
            reason = f"{scores}: improvement {delta:+.4f} is below the required {cfg.min_improvement:+.4f}"
        elif margin is None and p_value > cfg.alpha:
            reason = (f"{scores} ({delta:+.4f}) is not significant: {test['name']} one-sided "
                      f"p={p_value:.3g} > alpha {cfg.alpha:g}")
        elif broken:
            reason = f"{scores}: " + "; ".join(
                f"rule {r['rule']} not met ({r['metric']} {r['candidate']:.4f} vs champion {r['champion']:.4f}, "
                f"gain {r['gain']:+.4f})" for r in broken)
        elif regressed:
            s = regressed[0]
            reason = (f"slice {s['slice']!r} ({s['rows']} rows) regressed: candidate accuracy "
                      f"{s['candidate_accuracy']:.4f} vs champion {s['champion_accuracy']:.4f} "
                      f"({s['delta']:+.4f}, tolerance {cfg.slice_tolerance:g}); {len(regressed)} slice(s) regressed")
        else:
            checked = sum(1 for s in slices if s["checked"])
            shown = (f"({delta:+.4f}, non-inferior within {margin:g})" if margin is not None
                     else f"({delta:+.4f} >= {cfg.min_improvement:+.4f})")
            met = f", {len(rules)} metric rule(s) met" if rules else ""
            return self.verdict(True, f"{scores} {shown}, {test['name']} p={p_value:.3g} <= {cfg.alpha:g}, "
                                f"no regression on {checked} slice(s){met}", jsonable(details))
        return self.verdict(False, reason, jsonable(details))

    def _rules(self, cand: RowStats, champ: RowStats, details: dict[str, Any]) -> list[dict[str, Any]]:
        """Each configured rule's outcome (recorded in ``details["rules"]``)."""
        out = []
        for rule in self.config.rules:
            values = (self._metric(rule.metric, cand), self._metric(rule.metric, champ))
            met, gain = rule.check(*values)
            out.append({"rule": rule.describe(), "metric": rule.metric, "candidate": values[0],
                        "champion": values[1], "gain": gain, "met": met})
        if out:
            details["rules"] = out
        return out

    def _metric(self, metric: RuleMetric, stats: RowStats) -> float:
        if metric != "failure_rate":
            return float(metrics_from_sums(stats.features.sum(axis=0), stats.classes, stats.n_bins)[metric])
        positive = self.config.positive_label
        if positive is None or positive not in stats.classes:
            raise TrainerError(f"the failure_rate rule needs positive_label among the holdout's classes "
                               f"{list(stats.classes)}, got {positive!r}")
        sums = stats.features.sum(axis=0)
        k = stats.classes.index(positive)
        tp, predicted, true = (float(sums[1 + 3 * k + j]) for j in range(3))
        approved = float(sums[-1]) - predicted
        return (true - tp) / approved if approved > 0 else 0.0

    def _first_model(self, score: float, details: dict[str, Any]) -> Verdict:
        floor = self.config.absolute_floor
        details.update(champion=None, absolute_floor=floor)
        if floor is None:
            return self.verdict(True, f"first model (no champion); weighted score {score:.4f}, no floor set",
                                jsonable(details))
        passed = score >= floor
        return self.verdict(passed, f"first model (no champion): weighted score {score:.4f} "
                            f"{'>=' if passed else '<'} floor {floor:g}", jsonable(details))

    def _stats(self, model: ModelKind, holdout: Holdout, classes: tuple[str, ...],
               cross_fitted: CrossFitted | None = None) -> RowStats | str:
        # the rows whose prediction the cross-fitted one replaces are not predicted (a fifth of a full run's
        # holdout); a model asked the same rows again (the champion, once per candidate) answers from memory
        replaced = set(cross_fitted.rows) if cross_fitted is not None else set()
        rows = [i for i in range(len(holdout)) if i not in replaced]
        try:
            found = self._predict(model, [holdout.inputs[i] for i in rows]) if rows else None
        except TrainerError as exc:
            return f"predict_proba failed: {exc}"
        if found is not None and (found.shape != (len(rows), len(model.labels)) or not np.all(np.isfinite(found))):
            return f"predict_proba returned shape {found.shape} (or non-finite values) for {len(rows)} rows"
        proba = np.zeros((len(holdout), len(model.labels)), dtype=np.float64)
        if found is not None:
            proba[rows] = found
        predicted = [model.labels[i] for i in proba.argmax(axis=1)]
        confidence = proba.max(axis=1)
        if cross_fitted is not None:
            for row, label, conf in zip(cross_fitted.rows, cross_fitted.labels, cross_fitted.confidence,
                                        strict=True):
                predicted[row], confidence[row] = label, conf
        stats = row_stats(predicted, confidence, holdout.labels, classes, self.config.calibration_bins)
        if holdout.weights is None:
            return stats
        # every metric is a ratio of per-row feature sums, so weighting a row is scaling its features
        weights = np.asarray(holdout.weights, dtype=np.float64)
        return RowStats(stats.classes, stats.n_bins, stats.features * (weights / weights.mean())[:, None],
                        stats.correct)

    @contextlib.contextmanager
    def remembering(self) -> Iterator[None]:
        """Within the block, a model asked the same inputs again answers from memory: the models must not
        change inside it (a run judging its candidates against one champion: each asks it the same rows)."""
        self._asked = []
        try:
            yield
        finally:
            self._asked = None

    def _predict(self, model: ModelKind, inputs: list[Input]) -> npt.NDArray[np.float64]:
        """``model.predict_proba(inputs)``; inside :meth:`remembering`, remembered for the last few asked."""
        if self._asked is None:
            return np.asarray(model.predict_proba(inputs), dtype=np.float64)
        key = hashlib.sha256(repr(inputs).encode()).digest()
        for ref, digest, proba in self._asked:
            if ref() is model and digest == key:
                return proba
        proba = np.asarray(model.predict_proba(inputs), dtype=np.float64)
        self._asked = [*self._asked[-3:], (weakref.ref(model), key, proba)]
        return proba

    def _significance(self, cand: RowStats, champ: RowStats, margin: float = 0.0) -> tuple[float, dict[str, Any]]:
        """One-sided p-value of "candidate better" (``margin`` > 0: "not worse by ``margin`` or more")."""
        cfg = self.config
        noninferior = {"margin": margin} if margin > 0 else {}
        if cfg.test == "mcnemar":
            p, info = mcnemar(cand.correct, champ.correct, cfg.mcnemar_exact_below, margin)
            return p, {"name": "mcnemar", **noninferior, **info}
        p, deltas = paired_bootstrap(cand, champ, cfg.metric_weights, cfg.n_resamples, cfg.seed, margin=margin)
        low, high = np.percentile(deltas, [2.5, 97.5])
        return p, {"name": "bootstrap", "resamples": cfg.n_resamples, "seed": cfg.seed, **noninferior,
                   "delta_ci95": [float(low), float(high)]}


def _with_current(evaluation: dict[str, Any], stats: RowStats, holdout: Holdout) -> dict[str, Any]:
    """``evaluation`` plus ``current``: rows and unweighted accuracy on the rows from current traffic (what
    the champion watchdog later compares online accuracy with), when the holdout marks any."""
    if holdout.current is None or not any(holdout.current):
        return evaluation
    rows = np.asarray(holdout.current, dtype=bool)
    return {**evaluation, "current": {"rows": int(rows.sum()), "accuracy": float(stats.correct[rows].mean())}}


def _effective_rows(holdout: Holdout) -> float:
    """Kish's effective sample size of the row weights (= rows when unweighted)."""
    if holdout.weights is None:
        return float(len(holdout))
    w = np.asarray(holdout.weights, dtype=np.float64)
    return float(w.sum() ** 2 / (w ** 2).sum())


def _holdout_problem(holdout: Holdout | None) -> str | None:
    if holdout is None or len(holdout) == 0:
        return "no holdout rows to evaluate on"
    if len(holdout.labels) != len(holdout):
        return f"holdout has {len(holdout)} rows but {len(holdout.labels)} labels"
    if holdout.slices is not None and len(holdout.slices) != len(holdout):
        return f"holdout has {len(holdout)} rows but {len(holdout.slices)} slice values"
    if holdout.weights is not None:
        w = np.asarray(holdout.weights, dtype=np.float64)
        if w.shape != (len(holdout),) or not np.all(np.isfinite(w)) or np.any(w <= 0):
            return f"holdout weights must be {len(holdout)} positive finite numbers"
    if holdout.current is not None and len(holdout.current) != len(holdout):
        return f"holdout has {len(holdout)} rows but {len(holdout.current)} current-traffic marks"
    for side, cf in (("", holdout.cross_fitted), ("champion's ", holdout.champion_cross_fitted)):
        if cf is None:
            continue
        if not len(cf.rows) == len(cf.labels) == len(cf.confidence):
            return f"{side}cross-fitted predictions: rows, labels and confidences differ in length"
        if len(set(cf.rows)) != len(cf.rows) or any(not 0 <= r < len(holdout) for r in cf.rows):
            return f"{side}cross-fitted predictions name rows outside the holdout's {len(holdout)} (or twice)"
        if any(not 0.0 <= c <= 1.0 for c in cf.confidence):
            return f"{side}cross-fitted confidences must lie within [0, 1]"
    return None


def _cross_fitted_details(holdout: Holdout) -> dict[str, Any] | None:
    cf, champion = holdout.cross_fitted, holdout.champion_cross_fitted
    either = cf or champion
    if either is None:
        return None
    details: dict[str, Any] = {"rows": len(cf) if cf else 0, "folds": either.folds}
    if champion is not None:
        details["champion_rows"] = len(champion)
    return details


def _slice_table(holdout: Holdout, cand: np.ndarray, champ: np.ndarray, min_size: int,
                 tolerance: float) -> list[dict[str, Any]]:
    if holdout.slices is None:
        return []
    values: Sequence[str] = [str(v) for v in holdout.slices]
    column = np.asarray(values, dtype=object)
    table = []
    for value in sorted(set(values)):
        rows = column == value
        n = int(rows.sum())
        cand_acc, champ_acc = float(cand[rows].mean()), float(champ[rows].mean())
        checked = n >= min_size
        table.append({"slice": value, "rows": n, "candidate_accuracy": cand_acc, "champion_accuracy": champ_acc,
                      "delta": cand_acc - champ_acc, "checked": checked,
                      "regressed": checked and champ_acc - cand_acc > tolerance + 1e-12})
    return table
