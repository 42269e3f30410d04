"""Drift of what the champion serves, and its accuracy estimated without labels.

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

A signal in ``alert_on`` crossing its threshold asks the trainers for a retrain (a ``RetrainRequest`` with
trigger ``drift``; their policy's ``drift_action`` says full or incremental), at most once per champion
version and ``cooldown_s``. Every check is recorded in ``drift_checks`` and exported as gauges.
"""

from __future__ import annotations

import logging
import math
import threading
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import numpy as np
from prometheus_client import CollectorRegistry, Gauge
from prometheus_client import Counter as PromCounter
from pydantic import BaseModel, ConfigDict, Field

from flywheel import db
from flywheel.exceptions import ConfigError, FlywheelError
from flywheel.yamlconfig import load_yaml_model
from registry import ModelRegistry, RegistryError
from schemas import RetrainRequest
from trainer.base import ModelKind
from trainer.data import SampleStore

log = logging.getLogger(__name__)
Signal = Literal["domain_auc", "psi", "confidence_shift", "accuracy_drop"]
DEFAULT_THRESHOLDS: dict[Signal, float] = {"domain_auc": 0.9, "psi": 0.2, "confidence_shift": 0.1,
                                           "accuracy_drop": 0.05}


class DriftConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    enabled: bool = True
    interval_s: float = Field(default=60.0, gt=0.0, description="Seconds between checks.")
    window: int = Field(default=500, ge=10, description="Latest champion predictions judged.")
    min_window: int = Field(default=200, ge=10, description="Fewer served predictions: no verdict yet.")
    reference_size: int = Field(default=1000, ge=20, description="Reference rows (seeded sample of the holdout).")
    thresholds: dict[Signal, float] = Field(default_factory=lambda: dict(DEFAULT_THRESHOLDS))
    alert_on: tuple[Signal, ...] = Field(
        default=("domain_auc", "psi", "accuracy_drop"),
        description="Signals that ask for a retrain; the others are exported and recorded only.")
    cooldown_s: float = Field(default=1800.0, ge=0.0, description="Seconds between alerts for one champion.")
    slice_window_s: float = Field(default=3600.0, gt=0.0,
                                  description="Joined feedback of this window makes the per-slice gauges.")
    seed: int = 0


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
    version: str
    texts: list[str]
    predicted: list[str]
    confidence: np.ndarray
    accuracy: float
    calibration: Calibration


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

    @property
    def accuracy_drop(self) -> float:
        return self.reference_accuracy - self.estimated_accuracy

    def summary(self) -> str:
        return (f"champion {self.version}: domain AUC {self.domain_auc:.3f}, PSI {self.psi:.3f}, confidence "
                f"shift {self.confidence_shift:+.3f}, estimated accuracy {self.estimated_accuracy:.3f} vs "
                f"{self.reference_accuracy:.3f} on the reference ({self.current_rows} served / "
                f"{self.reference_rows} reference rows)")


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
        self.domain_auc = Gauge("flywheel_drift_domain_auc", "Domain-classifier ROC AUC, served vs reference texts",
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
        self.slice_feedback = Gauge("flywheel_slice_feedback", "Joined feedback per slice in the slice window",
                                    ["model", "slice"], registry=r)
        self.slice_accuracy = Gauge("flywheel_slice_accuracy", "Share of joined feedback agreeing with the "
                                    "served label, per slice", ["model", "slice"], registry=r)
        self.slice_label_share = Gauge("flywheel_slice_label_share", "Share of each user label per slice",
                                       ["model", "slice", "label"], registry=r)


class DriftMonitor:
    """Checks one model's champion; ``request_retrain`` publishes on the retrain topic (injected)."""

    def __init__(self, *, db_url: str, model_name: str, registry: ModelRegistry, config: DriftConfig,
                 request_retrain: Callable[[RetrainRequest], None], metrics: DriftMetrics | None = None,
                 holdout_percent: int = 10, clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.db_url, self.model_name, self.registry, self.config = db_url, model_name, registry, config
        self.holdout_percent = holdout_percent  # the trainer policy's: which feedback is reserved
        self.request_retrain, self.clock = request_retrain, clock
        self.metrics = metrics or DriftMetrics(CollectorRegistry())
        self._reference: Reference | None = None

    def run(self, stop: threading.Event) -> None:
        """Check every ``interval_s`` until ``stop``; one monitor per model acts (advisory lock)."""
        while not stop.is_set():
            try:
                self.tick()
            except (FlywheelError, RegistryError, OSError) as exc:
                log.warning("drift check failed, retrying in %.0fs: %s", self.config.interval_s, exc)
            except Exception:
                log.exception("drift check failed")
            stop.wait(self.config.interval_s)

    def tick(self) -> DriftReport | None:
        with db.connect(self.db_url, autocommit=True) as conn:
            if not db.try_advisory_lock(conn, db.advisory_key(f"flywheel.drift:{self.model_name}")):
                return None
            self.slices(conn)
            report = self.check(conn)
            if report is not None:
                self._record(conn, report)
            return report

    def check(self, conn: Any) -> DriftReport | None:
        cfg, name = self.config, self.model_name
        champion = self.registry.champion()
        if champion is None:
            self.metrics.checks.labels(name, "no_champion").inc()
            return None
        rows = conn.execute(
            "SELECT text, label, probabilities FROM predictions WHERE model = %s AND model_version = %s "
            "AND variant = 'champion' ORDER BY id DESC LIMIT %s", (name, champion.version, cfg.window)).fetchall()
        if len(rows) < cfg.min_window:
            self.metrics.checks.labels(name, "too_few").inc()
            return None
        reference = self._reference_for(conn, champion.version)
        if reference is None:
            self.metrics.checks.labels(name, "no_reference").inc()
            return None
        texts = [str(r[0]) for r in rows]
        predicted = [str(r[1]) for r in rows]
        confidence = np.array([max((float(p) for p in (r[2] or {}).values()), default=0.0) for r in rows])
        labels = sorted(set(predicted) | set(reference.predicted))
        report = DriftReport(
            model=name, version=champion.version, current_rows=len(rows), reference_rows=len(reference.texts),
            domain_auc=domain_auc(reference.texts, texts, cfg.seed),
            psi=psi(reference.predicted, predicted, labels),
            confidence_shift=float(reference.confidence.mean() - confidence.mean()),
            reference_accuracy=reference.accuracy,
            estimated_accuracy=reference.calibration.expected_accuracy(confidence))
        values: dict[Signal, float] = {"domain_auc": report.domain_auc, "psi": report.psi,
                                       "confidence_shift": report.confidence_shift,
                                       "accuracy_drop": report.accuracy_drop}
        crossed = tuple(s for s, v in values.items() if v >= cfg.thresholds.get(s, math.inf))
        m = self.metrics
        m.domain_auc.labels(name).set(report.domain_auc)
        m.psi.labels(name).set(report.psi)
        m.confidence_shift.labels(name).set(report.confidence_shift)
        m.estimated.labels(name).set(report.estimated_accuracy)
        m.reference.labels(name).set(report.reference_accuracy)
        alerting = [s for s in crossed if s in cfg.alert_on]
        note = ""
        alerted = False
        if alerting:
            last = self._last_alert(conn, champion.version)
            if last is not None and self.clock() - last < timedelta(seconds=cfg.cooldown_s):
                note = f"alert for {champion.version} already raised at {last:%Y-%m-%dT%H:%M:%SZ} (cooldown)"
            else:
                reason = f"drift: {', '.join(alerting)} crossed; {report.summary()}"
                self.request_retrain(RetrainRequest(ts=self.clock(), model=name, trigger="drift",
                                                    reason=reason[:2000]))
                alerted = True
                for s in alerting:
                    m.alerts.labels(name, s).inc()
                log.warning("%s: retrain requested", reason)
        m.checks.labels(name, "alert" if alerted else "crossed" if crossed else "ok").inc()
        return DriftReport(**{**asdict(report), "crossed": crossed, "alerted": alerted, "note": note})

    def slices(self, conn: Any) -> list[SliceStats]:
        """Label and error distribution per slice (the prediction's domain, else segment) over the joined
        feedback of the last ``slice_window_s``, exported as gauges (all served variants together)."""
        since = self.clock() - timedelta(seconds=self.config.slice_window_s)
        rows = conn.execute(
            "SELECT COALESCE(p.domain, p.segment, 'unknown'), COALESCE(f.label, CASE WHEN f.thumbs = 'up' "
            "THEN f.predicted_label END), count(*), count(*) FILTER (WHERE f.label = f.predicted_label "
            "OR f.thumbs = 'up') FROM feedback f JOIN predictions p ON p.prediction_id = f.prediction_id "
            "WHERE f.status = 'joined' AND f.model = %s AND f.received_at >= %s GROUP BY 1, 2",
            (self.model_name, since)).fetchall()
        found: dict[str, SliceStats] = {}
        for slice_, label, n, agreed in rows:
            stats = found.setdefault(str(slice_), SliceStats(str(slice_)))
            stats.feedback += int(n)
            stats.agreed += int(agreed)
            if label is not None:
                stats.labels[str(label)] = stats.labels.get(str(label), 0) + int(n)
        m, name = self.metrics, self.model_name
        for stats in found.values():
            m.slice_feedback.labels(name, stats.slice).set(stats.feedback)
            m.slice_accuracy.labels(name, stats.slice).set(stats.accuracy)
            labelled = sum(stats.labels.values())
            for label, n in stats.labels.items():
                m.slice_label_share.labels(name, stats.slice, label).set(n / labelled)
        return sorted(found.values(), key=lambda s: s.slice)

    def _reference_for(self, conn: Any, version: str) -> Reference | None:
        if self._reference is not None and self._reference.version == version:
            return self._reference
        frame = SampleStore(conn, self.holdout_percent).holdout(self.config.reference_size)
        if len(frame) < 20:
            return None
        rng = np.random.default_rng(self.config.seed)
        take = sorted(rng.choice(len(frame), size=min(len(frame), self.config.reference_size), replace=False))
        texts = [frame.texts[i] for i in take]
        truth = [frame.labels[i] for i in take]
        model: ModelKind = self.registry.load(version)
        proba = np.asarray(model.predict_proba(texts), dtype=np.float64)
        predicted = [model.labels[int(i)] for i in proba.argmax(axis=1)]
        confidence = proba.max(axis=1)
        correct = np.array([p == t for p, t in zip(predicted, truth, strict=True)])
        self._reference = Reference(version, texts, predicted, confidence, float(correct.mean()),
                                    Calibration(confidence, correct))
        return self._reference

    def _last_alert(self, conn: Any, version: str) -> datetime | None:
        row = conn.execute("SELECT max(checked_at) FROM drift_checks WHERE model_name = %s AND version = %s "
                           "AND alerted", (self.model_name, version)).fetchone()
        return row[0] if row and isinstance(row[0], datetime) else None

    def _record(self, conn: Any, r: DriftReport) -> None:
        conn.execute(
            "INSERT INTO drift_checks (model_name, version, current_rows, reference_rows, domain_auc, psi, "
            "confidence_shift, reference_accuracy, estimated_accuracy, crossed, alerted, note, checked_at) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
            (r.model, r.version, r.current_rows, r.reference_rows, r.domain_auc, r.psi, r.confidence_shift,
             r.reference_accuracy, r.estimated_accuracy, list(r.crossed), r.alerted, r.note, r.checked_at))


def drift_monitor_for(lc: Any, database_url: str, config: DriftConfig,
                      metrics: DriftMetrics | None = None) -> DriftMonitor:
    """A monitor acting through a :class:`flywheel.lifecycle.Lifecycle` (its registry and retrain requests)."""
    return DriftMonitor(db_url=database_url, model_name=lc.settings.model_name, registry=lc.registry,
                        config=config, request_retrain=lc.request_retrain, metrics=metrics,
                        holdout_percent=lc.config.policy.holdout_percent)
