"""Hyperparameter search: an Optuna TPE study over a kind's :data:`~kinds.ModelKind.search_space`, each
trial scored by k-fold cross-validation on the rows given.

The rows given are training rows only. The caller never passes the rows a candidate is evaluated on
(the holdout of the evaluation gate, the rows it cross-fits): a search that saw them would pick the
parameters that fit the evaluation, and the gate would then overrate the candidate.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import optuna

from kinds.base import ModelKind
from kinds.exceptions import KindError
from kinds.search_space import Choice, Dimension, FloatRange, IntRange
from tasks.features import Input
from trainer.exceptions import TrainerError

__all__ = ["Metric", "SearchResult", "search"]

Metric = Literal["accuracy", "log_loss"]
_DIRECTION: dict[Metric, Literal["maximize", "minimize"]] = {"accuracy": "maximize", "log_loss": "minimize"}


@dataclass(frozen=True)
class SearchResult:
    """The best sampled parameters (the space's names only: merge them into the base params), their mean
    cross-validated score, how many trials ran (complete, pruned or failed) and the seconds it took."""

    best_params: dict[str, Any]
    best_score: float
    trials: int
    elapsed_s: float


def search(make: Callable[[dict[str, Any]], ModelKind], inputs: Sequence[Input], labels: Sequence[str],
           weights: Sequence[float] | None, space: Mapping[str, Dimension], *, folds: int = 3,
           budget_s: float = 60.0, max_trials: int = 20, seed: int = 0, metric: Metric = "accuracy",
           prune: bool = False) -> SearchResult:
    """Search ``space`` for the parameters whose model (``make(params)``, unfitted) scores best on
    ``folds``-fold cross-validation of ``inputs``/``labels``/``weights`` (the TRAINING rows only: module
    docstring). ``metric``: ``accuracy`` (maximised) or ``log_loss`` (minimised), weighted by ``weights``.

    Stops after ``max_trials`` trials or once ``budget_s`` seconds have passed (a trial under way then
    finishes). Deterministic for a ``seed`` when the trial count, not the budget, ends the search. A trial
    whose parameters the kind refuses (:class:`KindError`) fails and the search goes on. ``prune``: stop a
    trial after a fold when its running score is worse than the median of earlier trials at that fold.
    Raises :class:`TrainerError` on an empty space, a bad budget, trial count, fold count or metric, rows
    that cannot be split into ``folds``, or when no trial completes."""
    _check(inputs, labels, weights, space, folds, budget_s, max_trials, metric)
    splits = _folds(labels, folds, seed)
    score_of = _accuracy if metric == "accuracy" else _log_loss
    w = np.ones(len(labels)) if weights is None else np.asarray(weights, dtype=np.float64)

    def objective(trial: optuna.Trial) -> float:
        params = {name: _suggest(trial, name, dim) for name, dim in space.items()}
        scores: list[float] = []
        for step, held in enumerate(splits):
            held_set = set(held)
            rest = [i for i in range(len(labels)) if i not in held_set]
            model = make(params).fit([inputs[i] for i in rest], [labels[i] for i in rest], list(w[rest]))
            proba = model.predict_proba([inputs[i] for i in held])
            scores.append(score_of(model.labels, proba, [labels[i] for i in held], w[held]))
            if prune:
                trial.report(float(np.mean(scores)), step)
                if trial.should_prune():
                    raise optuna.TrialPruned()
        return float(np.mean(scores))

    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    started = time.monotonic()
    try:
        study = optuna.create_study(direction=_DIRECTION[metric], sampler=optuna.samplers.TPESampler(seed=seed),
                                    pruner=optuna.pruners.MedianPruner(n_startup_trials=3) if prune else
                                    optuna.pruners.NopPruner())
        study.optimize(objective, n_trials=max_trials, timeout=budget_s, catch=(KindError,),
                       gc_after_trial=False, show_progress_bar=False)
    finally:
        optuna.logging.set_verbosity(verbosity)
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if not complete:
        raise TrainerError(f"no search trial completed ({len(study.trials)} ran; the kind refused every "
                           f"parameter set tried, or every trial was pruned)")
    best = study.best_trial
    assert best.value is not None
    return SearchResult(best_params=dict(best.params), best_score=float(best.value), trials=len(study.trials),
                        elapsed_s=time.monotonic() - started)


def _check(inputs: Sequence[Input], labels: Sequence[str], weights: Sequence[float] | None,
           space: Mapping[str, Dimension], folds: int, budget_s: float, max_trials: int, metric: str) -> None:
    if not space:
        raise TrainerError("the search space is empty: nothing to search")
    if not all(isinstance(d, FloatRange | IntRange | Choice) for d in space.values()):
        raise TrainerError(f"the search space holds something other than dimensions: {dict(space)!r}")
    if not (isinstance(budget_s, int | float) and math.isfinite(budget_s) and budget_s > 0):
        raise TrainerError(f"budget_s must be a positive number of seconds, got {budget_s!r}")
    if not (isinstance(max_trials, int) and max_trials >= 1):
        raise TrainerError(f"max_trials must be a positive integer, got {max_trials!r}")
    if metric not in _DIRECTION:
        raise TrainerError(f"unknown metric {metric!r}; known: {sorted(_DIRECTION)}")
    if len(inputs) != len(labels) or (weights is not None and len(weights) != len(labels)):
        raise TrainerError(f"{len(inputs)} inputs, {len(labels)} labels and "
                           f"{'no' if weights is None else len(weights)} weights do not line up")
    if not (isinstance(folds, int) and 2 <= folds <= len(labels)):
        raise TrainerError(f"folds must be an integer in [2, {len(labels)} rows], got {folds!r}")


def _folds(labels: Sequence[str], folds: int, seed: int) -> list[list[int]]:
    """Stratified folds: each label's rows, shuffled with ``seed``, dealt round-robin."""
    rng = random.Random(seed)
    split: list[list[int]] = [[] for _ in range(folds)]
    dealt = 0
    for label in sorted(set(labels)):
        rows = [i for i, y in enumerate(labels) if y == label]
        rng.shuffle(rows)
        for i in rows:
            split[dealt % folds].append(i)
            dealt += 1
    return [sorted(fold) for fold in split]


def _suggest(trial: optuna.Trial, name: str, dim: Dimension) -> Any:
    if isinstance(dim, FloatRange):
        return trial.suggest_float(name, dim.low, dim.high, log=dim.log)
    if isinstance(dim, IntRange):
        return trial.suggest_int(name, dim.low, dim.high, log=dim.log)
    return trial.suggest_categorical(name, dim.options)


def _accuracy(classes: Sequence[str], proba: np.ndarray[Any, Any], truth: Sequence[str],
              w: np.ndarray[Any, Any]) -> float:
    predicted = np.asarray(classes)[proba.argmax(axis=1)]
    return float(np.average(predicted == np.asarray(truth), weights=w if w.sum() > 0 else None))


def _log_loss(classes: Sequence[str], proba: np.ndarray[Any, Any], truth: Sequence[str],
              w: np.ndarray[Any, Any]) -> float:
    """Weighted mean of -log p(true label); a label the fold's model never saw has p = 0 (clipped)."""
    column = {label: j for j, label in enumerate(classes)}
    p = np.array([proba[i, column[y]] if y in column else 0.0 for i, y in enumerate(truth)])
    return float(np.average(-np.log(np.clip(p, 1e-15, 1.0)), weights=w if w.sum() > 0 else None))
