"""Drift of what the champion serves, and its accuracy estimated without labels: the statistics, the
config and the gauges. The monitor that applies them to the champion is :class:`trainer.drift.DriftMonitor`
(it needs the registry and the evaluation holdout, which live above curation).

Every ``interval_s`` the monitor compares the champion's latest ``window`` served predictions (table
``predictions``, variant champion) with a reference: the labelled evaluation set the champion was judged
on (the corpus holdout plus the recent reserved feedback), scored by the champion itself.

* **input drift**: a domain classifier (character n-gram hashing features + logistic regression) tries to
  tell current texts from reference texts; its cross-validated ROC AUC is 0.5 when it cannot, 1.0 when
  the two never look alike.
* **prediction drift**: population stability index (PSI) of the predicted-label distribution.
* **confidence shift**: mean top-class probability, reference minus current.
* **label-free accuracy** (CBPE-style): the champion's confidence is calibrated on the reference (isotonic
  regression of "was right" on confidence); the mean calibrated confidence of the current window is its
  expected accuracy there, compared with its accuracy on the reference.

Beside it, the **slice monitor**: label and error distribution per slice (the prediction's domain, else its
segment) over the joined feedback of ``slice_window_s``, as gauges (``flywheel_slice_*``); the trainer's
evaluation gate applies the per-slice no-regression rule to the same slices.

A tabular model's inputs are judged by :mod:`curation.tabular_drift` instead: the domain classifier runs
over every feature, and each feature gets its own verdict (``feature_psi``: a numeric feature's PSI over
quantile bins; ``feature_js``: a categorical or boolean feature's Jensen-Shannon distance, when its
chi-square p-value is below ``feature_p_value`` too). docs/curation.md has the formulas and defaults.

A signal in ``alert_on`` crossing its threshold asks the trainers for a retrain (a ``RetrainRequest`` with
trigger ``drift``; their policy's ``drift_action`` says full or incremental), at most once per champion
version and ``cooldown_s``. Every check is recorded in ``drift_checks`` and exported as gauges.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

import numpy as np
from prometheus_client import CollectorRegistry, Gauge
from prometheus_client import Counter as PromCounter
from pydantic import BaseModel, ConfigDict, Field, field_validator

from core.exceptions import ConfigError
from core.yamlconfig import load_yaml_model
from tasks import Input

log = logging.getLogger(__name__)
Signal = Literal["domain_auc", "psi", "confidence_shift", "accuracy_drop", "feature_psi", "feature_js"]
DEFAULT_THRESHOLDS: dict[Signal, float] = {"domain_auc": 0.9, "psi": 0.2, "confidence_shift": 0.1,
                                           "accuracy_drop": 0.05, "feature_psi": 0.2, "feature_js": 0.1}


class DriftConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    enabled: bool = True
    interval_s: float = Field(default=60.0, gt=0.0, description="Seconds between checks.")
    window: int = Field(default=500, ge=10, description="Latest champion predictions judged.")
    min_window: int = Field(default=200, ge=10, description="Fewer served predictions: no verdict yet.")
    reference_size: int = Field(default=1000, ge=20, description="Reference rows (seeded sample of the holdout).")
    thresholds: dict[Signal, float] = Field(default_factory=lambda: dict(DEFAULT_THRESHOLDS),
                                           description="Per signal; a signal left out keeps its default.")
    alert_on: tuple[Signal, ...] = Field(
        default=("domain_auc", "psi", "accuracy_drop", "feature_psi", "feature_js"),
        description="Signals that ask for a retrain; the others are exported and recorded only.")
    feature_p_value: float = Field(
        default=0.001, gt=0.0, lt=1.0,
        description="Tabular: a categorical or boolean feature drifts (`feature_js`) only when its chi-square "
                    "p-value is below this as well.")
    bins: int = Field(default=10, ge=2, le=100, description="Tabular: quantile bins of a numeric feature's PSI.")
    cooldown_s: float = Field(default=1800.0, ge=0.0, description="Seconds between alerts for one champion.")
    slice_window_s: float = Field(default=3600.0, gt=0.0,
                                  description="Joined feedback of this window makes the per-slice gauges.")
    seed: int = 0

    @field_validator("thresholds", mode="after")
    @classmethod
    def _defaults_for_the_rest(cls, given: dict[Signal, float]) -> dict[Signal, float]:
        return {**DEFAULT_THRESHOLDS, **given}


def load_drift_config(path: Path | None) -> DriftConfig:
    return load_yaml_model(DriftConfig, path, "drift config", ConfigError)


# -- the statistics ---------------------------------------------------------------------------------------
def psi(reference: Sequence[str], current: Sequence[str], categories: Sequence[str], floor: float = 1e-4) -> float:
    """Population stability index of two categorical samples: sum (c - r) * ln(c / r) over categories,
    shares floored at ``floor`` so an empty category is finite."""
    ref, cur = Counter(reference), Counter(current)
    total = 0.0
    for cat in categories:
        r = max(ref[cat] / max(1, len(reference)), floor)
        c = max(cur[cat] / max(1, len(current)), floor)
        total += (c - r) * math.log(c / r)
    return total


def domain_auc(reference: Sequence[str], current: Sequence[str], seed: int = 0, folds: int = 5) -> float:
    """Cross-validated ROC AUC of a classifier telling ``current`` texts from ``reference`` texts."""
    from sklearn.feature_extraction.text import HashingVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    texts = list(reference) + list(current)
    y = np.array([0] * len(reference) + [1] * len(current))
    x = HashingVectorizer(analyzer="char_wb", ngram_range=(2, 4), n_features=2 ** 18,
                          alternate_sign=False, norm="l2").transform(texts)
    k = max(2, min(folds, int(min(len(reference), len(current)))))
    scores = cross_val_predict(LogisticRegression(C=1.0, max_iter=1000), x, y,
                               cv=StratifiedKFold(k, shuffle=True, random_state=seed), method="predict_proba")[:, 1]
    return float(roc_auc_score(y, scores))


class Calibration:
    """Isotonic map from top-class probability to P(correct), fitted on labelled reference rows."""

    def __init__(self, confidence: np.ndarray, correct: np.ndarray) -> None:
        from sklearn.isotonic import IsotonicRegression

        self._iso = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip", increasing=True)
        self._iso.fit(confidence, correct.astype(np.float64))

    def expected_accuracy(self, confidence: np.ndarray) -> float:
        return float(np.mean(self._iso.predict(confidence))) if len(confidence) else math.nan


# -- one check --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Reference:
    """Rows the champion ``version`` was judged on (texts, or feature rows), as it scored them."""

    version: str
    inputs: list[Input]
    predicted: list[str]
    confidence: np.ndarray
    accuracy: float
    calibration: Calibration


@dataclass(frozen=True)
class FeatureDrift:
    """One feature of a tabular model, reference vs current (:mod:`curation.tabular_drift`): ``psi`` over
    its bins (numeric: quantile bins of the reference; else its categories), each with a missing bin;
    ``p_value`` of the chi-square test of the two bin counts; ``js`` the Jensen-Shannon distance (base 2,
    0..1) of the two bin distributions; ``crossed`` the signal it crosses (``feature_psi`` for a numeric
    feature, ``feature_js`` for a categorical or boolean one), if any."""

    name: str
    type: str
    psi: float
    p_value: float
    js: float
    missing_reference: float  # share of rows without the feature
    missing_current: float
    crossed: Signal | None = None

    def as_json(self) -> dict[str, object]:
        return {"name": self.name, "type": self.type, "psi": _finite(self.psi), "p_value": _finite(self.p_value),
                "js": _finite(self.js), "missing_reference": self.missing_reference,
                "missing_current": self.missing_current, "crossed": self.crossed}


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


@dataclass(frozen=True)
class DriftReport:
    model: str
    version: str
    current_rows: int
    reference_rows: int
    domain_auc: float
    psi: float
    confidence_shift: float
    reference_accuracy: float
    estimated_accuracy: float
    crossed: tuple[str, ...] = ()
    alerted: bool = False
    note: str = ""
    checked_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    features: tuple[FeatureDrift, ...] = ()  # tabular models: most drifted first

    @property
    def accuracy_drop(self) -> float:
        return self.reference_accuracy - self.estimated_accuracy

    @property
    def drifted_features(self) -> tuple[str, ...]:
        """Features that crossed their threshold, most drifted first."""
        return tuple(f.name for f in self.features if f.crossed)

    def summary(self) -> str:
        return (f"champion {self.version}: domain AUC {self.domain_auc:.3f}, PSI {self.psi:.3f}, confidence "
                f"shift {self.confidence_shift:+.3f}, estimated accuracy {self.estimated_accuracy:.3f} vs "
                f"{self.reference_accuracy:.3f} on the reference ({self.current_rows} served / "
                f"{self.reference_rows} reference rows)" + self._features_summary())

    def _features_summary(self) -> str:
        if not self.features:
            return ""
        shown = ", ".join(f"{f.name} (PSI {f.psi:.3f}, JS {f.js:.3f})" for f in self.features[:3])
        drifted = self.drifted_features
        return f"; most drifted features: {shown}" + (f"; crossed: {', '.join(drifted[:10])}" if drifted else "")


@dataclass
class SliceStats:
    slice: str
    feedback: int = 0
    agreed: int = 0  # the user's label (or thumbs up) matches the served label
    labels: dict[str, int] = field(default_factory=dict)

    @property
    def accuracy(self) -> float:
        return self.agreed / self.feedback if self.feedback else math.nan


class DriftMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        r = registry
        self.domain_auc = Gauge("flywheel_drift_domain_auc", "Domain-classifier ROC AUC, served vs reference inputs",
                                ["model"], registry=r)
        self.psi = Gauge("flywheel_drift_psi", "PSI of the predicted-label distribution", ["model"], registry=r)
        self.confidence_shift = Gauge("flywheel_drift_confidence_shift",
                                      "Mean top-class probability, reference minus served", ["model"], registry=r)
        self.estimated = Gauge("flywheel_estimated_accuracy", "Label-free (CBPE) accuracy estimate of the champion",
                               ["model"], registry=r)
        self.reference = Gauge("flywheel_reference_accuracy", "Champion accuracy on its labelled reference",
                               ["model"], registry=r)
        self.alerts = PromCounter("flywheel_drift_alerts", "Drift alerts that requested a retrain",
                                  ["model", "signal"], registry=r)
        self.checks = PromCounter("flywheel_drift_checks", "Drift checks by outcome", ["model", "outcome"],
                                  registry=r)
        self.feature = Gauge("flywheel_drift_feature", "Tabular models: per-feature drift, served vs reference "
                             "(statistic: psi, js, p_value)", ["model", "feature", "statistic"], registry=r)
        self.slice_feedback = Gauge("flywheel_slice_feedback", "Joined feedback per slice in the slice window",
                                    ["model", "slice"], registry=r)
        self.slice_accuracy = Gauge("flywheel_slice_accuracy", "Share of joined feedback agreeing with the "
                                    "served label, per slice", ["model", "slice"], registry=r)
        self.slice_label_share = Gauge("flywheel_slice_label_share", "Share of each user label per slice",
                                       ["model", "slice", "label"], registry=r)
