"""Drift of a tabular model's inputs, feature by feature and jointly; the statistics only (the monitor
that applies them to a champion is :class:`trainer.tabular_drift.TabularDriftMonitor`).

Every feature of the model's :class:`~tasks.FeatureSchema` is binned the same way in the reference rows
and in the current window, with a bin of its own for a missing value (absent or null):

* numeric: quantile bins of the reference (``bins`` of them, at most one per 20 present reference values,
  edges deduplicated, so a feature with few distinct values gets fewer), open at both ends so a current
  value outside the reference's range lands in the first or the last bin;
* categorical: the schema's categories (a value outside them, which ingest refuses, in an "other" bin);
* boolean: false, true.

Over those bins: PSI ``sum (c - r) ln(c / r)`` (shares floored at 1e-4, :func:`curation.drift.psi`), the
chi-square test of homogeneity of the two count vectors (bins empty on both sides dropped; p = 1 with
fewer than two bins left) and the Jensen-Shannon distance (base 2: 0 same distributions, 1 disjoint). A
numeric feature crosses ``feature_psi`` when its PSI reaches that threshold; a categorical or boolean one
crosses ``feature_js`` when its JS distance reaches that threshold and its chi-square p-value is below
``feature_p_value`` (a change both large and not chance: on a window of hundreds of rows a p-value alone
flags trivial shifts, a distance alone flags noise on a handful of rows).

Jointly, a domain classifier (scikit-learn histogram gradient boosting over :meth:`FeatureSchema.matrix`:
NaN is its missing value, categorical columns are native categories; one OpenMP thread) tells current rows
from reference rows; its cross-validated ROC AUC is 0.5 when it cannot, 1.0 when the two never look alike. It catches
what no single feature shows (a changed correlation). The champion's label-free accuracy estimate, PSI of
its predicted labels and confidence shift are the text monitor's (:mod:`curation.drift`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace

import numpy as np

from curation.drift import DriftConfig, DriftReport, FeatureDrift, Reference, Signal, psi
from tasks.features import Feature, FeatureSchema, Row

MISSING = "(missing)"
OTHER = "(other)"
MIN_PER_BIN = 20  # reference values per quantile bin at least: fewer bins on a small reference
MAX_NATIVE_CATEGORIES = 250  # the boosting's categorical limit (255 bins, some kept for missing values)


# -- one feature ------------------------------------------------------------------------------------------
def bin_labels(feature: Feature, reference: Sequence[Row], current: Sequence[Row],
               bins: int = 10) -> tuple[list[str], list[str], list[str]]:
    """(the bins, the reference rows' bins, the current rows' bins) of one feature."""
    if feature.type == "numeric":
        ref_values = _numbers(feature.name, reference)
        cur_values = _numbers(feature.name, current)
        present = ref_values[~np.isnan(ref_values)]
        bins = min(bins, max(2, len(present) // MIN_PER_BIN))
        edges = (np.unique(np.quantile(present, np.linspace(0.0, 1.0, bins + 1)[1:-1])) if len(present)
                 else np.array([], dtype=np.float64))
        names = [f"q{i}" for i in range(len(edges) + 1)] + [MISSING]

        def numeric_bins(values: np.ndarray) -> list[str]:
            index = np.searchsorted(edges, values, side="right")
            return [MISSING if math.isnan(v) else names[int(i)] for v, i in zip(values, index, strict=True)]

        return names, numeric_bins(ref_values), numeric_bins(cur_values)
    categories = list(feature.categories or ()) if feature.type == "categorical" else ["false", "true"]
    known = set(categories)

    def category(row: Row) -> str:
        value = row.get(feature.name)
        if value is None:
            return MISSING
        text = ("true" if value else "false") if isinstance(value, bool) else str(value)
        return text if text in known else OTHER

    return [*categories, OTHER, MISSING], [category(r) for r in reference], [category(r) for r in current]


def feature_drift(feature: Feature, reference: Sequence[Row], current: Sequence[Row], bins: int = 10) -> FeatureDrift:
    """PSI, chi-square p-value and JS distance of one feature (not yet judged: ``crossed`` None)."""
    from scipy.spatial.distance import jensenshannon
    from scipy.stats import chi2_contingency

    names, ref, cur = bin_labels(feature, reference, current, bins)
    index = {n: i for i, n in enumerate(names)}
    counts = np.zeros((2, len(names)), dtype=np.float64)
    for row, labels in enumerate((ref, cur)):
        np.add.at(counts[row], [index[b] for b in labels], 1.0)
    used = counts[:, counts.sum(axis=0) > 0]
    p_value = 1.0
    if used.shape[1] >= 2 and counts[0].sum() > 0 and counts[1].sum() > 0:
        p_value = float(chi2_contingency(used).pvalue)
    js = math.nan
    if counts[0].sum() > 0 and counts[1].sum() > 0:
        js = float(jensenshannon(counts[0] / counts[0].sum(), counts[1] / counts[1].sum(), base=2.0))
    missing = index[MISSING]
    return FeatureDrift(name=feature.name, type=feature.type, psi=psi(ref, cur, names), p_value=p_value,
                        js=0.0 if math.isnan(js) else js,
                        missing_reference=float(counts[0, missing] / max(1.0, counts[0].sum())),
                        missing_current=float(counts[1, missing] / max(1.0, counts[1].sum())))


def judged(drift: FeatureDrift, config: DriftConfig) -> FeatureDrift:
    """``drift`` with the signal it crosses under ``config`` (see the module's rules), if any."""
    limits = config.thresholds
    crossed: Signal | None = None
    if drift.type == "numeric":
        if drift.psi >= limits.get("feature_psi", math.inf):
            crossed = "feature_psi"
    elif drift.js >= limits.get("feature_js", math.inf) and drift.p_value < config.feature_p_value:
        crossed = "feature_js"
    return replace(drift, crossed=crossed)


def features_drift(schema: FeatureSchema, reference: Sequence[Row], current: Sequence[Row],
                   config: DriftConfig | None = None) -> tuple[FeatureDrift, ...]:
    """Every feature, judged, most drifted first: those that crossed, then by PSI (descending)."""
    cfg = config or DriftConfig()
    found = [judged(feature_drift(f, reference, current, cfg.bins), cfg) for f in schema.features]
    return tuple(sorted(found, key=lambda d: (d.crossed is None, -d.psi, d.name)))


# -- all features together --------------------------------------------------------------------------------
def tabular_domain_auc(schema: FeatureSchema, reference: Sequence[Row], current: Sequence[Row], seed: int = 0,
                       folds: int = 5) -> float:
    """Cross-validated ROC AUC of a gradient-boosting classifier telling ``current`` rows from
    ``reference`` rows over every feature, on one OpenMP thread (the machine's cores belong to serving and
    training). Only OpenMP, which the boosting uses: its limit is per calling thread, while BLAS's is
    process-wide and the kinds' reference-counted limit (``kinds/_threads.py``) owns it."""
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from threadpoolctl import threadpool_limits

    x = schema.matrix(list(reference) + list(current))
    y = np.array([0] * len(reference) + [1] * len(current))
    native = np.zeros(len(schema.features), dtype=bool)
    for j in schema.categorical_columns():
        native[j] = len(schema.features[j].categories or ()) <= MAX_NATIVE_CATEGORIES
    classifier = HistGradientBoostingClassifier(
        max_iter=100, learning_rate=0.1, max_leaf_nodes=15, min_samples_leaf=20, l2_regularization=1.0,
        categorical_features=native if native.any() else None, early_stopping=False, random_state=seed)
    k = max(2, min(folds, len(reference), len(current)))
    with threadpool_limits(limits=1, user_api="openmp"):
        scores = cross_val_predict(classifier, x, y, cv=StratifiedKFold(k, shuffle=True, random_state=seed),
                                   method="predict_proba")[:, 1]
    return float(roc_auc_score(y, scores))


def tabular_report(schema: FeatureSchema, *, model: str, reference: Reference, current: Sequence[Row],
                   predicted: Sequence[str], confidence: np.ndarray, config: DriftConfig | None = None) -> DriftReport:
    """The drift of ``current`` rows (the champion's ``predicted`` labels at top-class ``confidence``)
    against ``reference`` (rows the same champion scored, with their true labels' calibration): per-feature
    drift, domain AUC, predicted-label PSI, confidence shift and the label-free accuracy estimate. Not yet
    judged as a whole (``crossed`` is the monitor's)."""
    cfg = config or DriftConfig()
    rows: list[Row] = [r for r in reference.inputs if not isinstance(r, str)]
    labels = sorted(set(predicted) | set(reference.predicted))
    return DriftReport(
        model=model, version=reference.version, current_rows=len(current), reference_rows=len(rows),
        domain_auc=tabular_domain_auc(schema, rows, current, cfg.seed),
        psi=psi(reference.predicted, predicted, labels),
        confidence_shift=float(reference.confidence.mean() - confidence.mean()) if len(confidence) else math.nan,
        reference_accuracy=reference.accuracy,
        estimated_accuracy=reference.calibration.expected_accuracy(confidence),
        features=features_drift(schema, rows, current, cfg))


def _numbers(name: str, rows: Sequence[Row]) -> np.ndarray:
    out = np.full(len(rows), np.nan, dtype=np.float64)
    for i, row in enumerate(rows):
        value = row.get(name)
        if isinstance(value, int | float) and math.isfinite(float(value)):
            out[i] = float(value)
    return out

