"""Holdout metrics as sums of per-row columns, so the point estimate and every bootstrap resample go
through the same code: a resample is a vector of row multiplicities ``w`` and its sums are ``w @ F``.

Columns of ``F``: correct, then (tp, predicted, true) per class, then (correct, confidence) per
confidence bin, then a column of ones. Expected calibration error (ECE) uses equal-width bins over the
top-class probability: ``sum_b |correct_b - confidence_b| / n``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

Metric = Literal["accuracy", "macro_f1", "calibration", "min_recall"]
Floats = npt.NDArray[np.float64]


@dataclass(frozen=True, eq=False)
class RowStats:
    classes: tuple[str, ...]
    n_bins: int
    features: Floats  # (n, 1 + 3 * len(classes) + 2 * n_bins + 1)
    correct: npt.NDArray[np.bool_]


def row_stats(predicted: Sequence[str], confidence: Floats, truth: Sequence[str], classes: tuple[str, ...],
              n_bins: int) -> RowStats:
    pred, true = np.asarray(predicted, dtype=object), np.asarray(truth, dtype=object)
    correct = pred == true
    columns = [correct.astype(float)]
    for label in classes:
        columns += [((pred == label) & correct).astype(float), (pred == label).astype(float),
                    (true == label).astype(float)]
    bins = np.minimum((confidence * n_bins).astype(int), n_bins - 1)
    for b in range(n_bins):
        inside = bins == b
        columns += [(inside & correct).astype(float), np.where(inside, confidence, 0.0)]
    columns.append(np.ones(len(pred)))
    return RowStats(classes, n_bins, np.column_stack(columns).astype(np.float64), correct.astype(bool))


def metrics_from_sums(sums: Floats, classes: tuple[str, ...], n_bins: int) -> dict[str, Floats]:
    """Metrics for each row of ``sums`` (shape ``(..., n_features)``); per-class recall as ``recall:<label>``
    (NaN when the class has no rows)."""
    k = len(classes)
    n = sums[..., -1]
    out: dict[str, Floats] = {"accuracy": sums[..., 0] / n}
    f1s, recalls = [], []
    with np.errstate(invalid="ignore", divide="ignore"):
        for i, label in enumerate(classes):
            tp, predicted, true = (sums[..., 1 + 3 * i + j] for j in range(3))
            recall = np.where(true > 0, tp / true, np.nan)
            out[f"recall:{label}"] = recall
            recalls.append(recall)
            f1s.append(np.where(predicted + true > 0, 2 * tp / (predicted + true), 0.0))
    base = 1 + 3 * k
    gaps = [np.abs(sums[..., base + 2 * b] - sums[..., base + 2 * b + 1]) for b in range(n_bins)]
    ece = np.sum(gaps, axis=0) / n
    out["ece"] = ece
    out["calibration"] = 1.0 - ece
    out["macro_f1"] = np.mean(f1s, axis=0) if f1s else np.zeros_like(n)
    # the lowest recall over classes with rows (a class can vanish from a bootstrap resample)
    lowest = np.min(np.where(np.isnan(recalls), np.inf, recalls), axis=0) if recalls else np.zeros_like(n)
    out["min_recall"] = np.where(np.isinf(lowest), 0.0, lowest)
    return out


def weighted_score(metrics: Mapping[str, Floats], weights: Mapping[Metric, float]) -> Floats:
    total = sum(weights.values())
    return np.asarray(sum(w * metrics[m] for m, w in weights.items()) / total, dtype=np.float64)


def evaluate(stats: RowStats, weights: Mapping[Metric, float]) -> dict[str, Any]:
    """``{"metrics": ..., "score": ...}`` on all rows: ``ece`` is included (lower is better), per-class
    recall sits under ``metrics["recall"]`` (None for a class without rows)."""
    metrics = metrics_from_sums(stats.features.sum(axis=0), stats.classes, stats.n_bins)
    out: dict[str, Any] = {name: float(value) for name, value in metrics.items() if not name.startswith("recall:")}
    out["recall"] = {label: None if np.isnan(metrics[f"recall:{label}"]) else float(metrics[f"recall:{label}"])
                     for label in stats.classes}
    return {"metrics": out, "score": float(weighted_score(metrics, weights))}


def paired_bootstrap(candidate: RowStats, champion: RowStats, weights: Mapping[Metric, float],
                     n_resamples: int, seed: int, chunk: int = 200, margin: float = 0.0) -> tuple[float, Floats]:
    """One-sided p-value for "candidate's weighted score is higher" (``margin`` > 0: "higher than the
    champion's minus ``margin``", a non-inferiority test): the share of resamples (rows drawn with
    replacement, the same rows for both models) in which it is not, with the +1 correction
    ``(1 + #{delta* <= -margin}) / (B + 1)``; and the resampled deltas."""
    rng = np.random.default_rng(seed)
    n = len(candidate.features)
    deltas: list[Floats] = []
    for start in range(0, n_resamples, chunk):
        size = min(chunk, n_resamples - start)
        draws = rng.integers(0, n, size=(size, n)) + np.arange(size)[:, None] * n
        counts = np.bincount(draws.ravel(), minlength=size * n).reshape(size, n).astype(np.float64)
        cand = weighted_score(metrics_from_sums(counts @ candidate.features, candidate.classes,
                                                candidate.n_bins), weights)
        champ = weighted_score(metrics_from_sums(counts @ champion.features, champion.classes,
                                                 champion.n_bins), weights)
        deltas.append(cand - champ)
    delta = np.concatenate(deltas)
    return float((1 + np.count_nonzero(delta <= -margin)) / (n_resamples + 1)), delta


def mcnemar(candidate_correct: npt.NDArray[np.bool_], champion_correct: npt.NDArray[np.bool_],
            exact_below: int, margin: float = 0.0) -> tuple[float, dict[str, int | str]]:
    """One-sided McNemar test for "candidate is right more often" on the discordant pairs: ``b`` rows
    only the candidate gets right, ``c`` rows only the champion does. Under H0, b ~ Binomial(b + c, 1/2).
    Exact binomial tail P(X >= b) when b + c < ``exact_below``, else the normal approximation with
    continuity correction, z = (b - c - 1) / sqrt(b + c) (the one-sided half of the chi-square
    (|b - c| - 1)^2 / (b + c) when b > c).

    ``margin`` > 0 tests non-inferiority instead, H0: accuracy(candidate) - accuracy(champion) <= -margin
    over the N paired rows, with the Wald statistic z = (d + margin) / se, d = (b - c) / N,
    se^2 = ((b + c) / N - d^2) / N (no discordant pairs: the models agree everywhere, p = 0)."""
    b = int(np.count_nonzero(candidate_correct & ~champion_correct))
    c = int(np.count_nonzero(~candidate_correct & champion_correct))
    n = b + c
    if margin > 0:
        rows = len(candidate_correct)
        if n == 0:
            return 0.0, {"b": b, "c": c, "method": "non-inferiority: no discordant pairs"}
        d = (b - c) / rows
        se = math.sqrt(max((n / rows - d * d) / rows, 1e-12))
        return 0.5 * math.erfc((d + margin) / se / math.sqrt(2)), {"b": b, "c": c, "method": "non-inferiority, Wald"}
    if n == 0:
        return 1.0, {"b": b, "c": c, "method": "no discordant pairs"}
    if n < exact_below:
        p = sum(math.comb(n, k) for k in range(b, n + 1)) / 2 ** n
        return float(p), {"b": b, "c": c, "method": "exact binomial"}
    z = (b - c - 1) / math.sqrt(n)
    return 0.5 * math.erfc(z / math.sqrt(2)), {"b": b, "c": c, "method": "chi-square with continuity correction"}
