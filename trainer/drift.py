"""The drift monitor: every ``interval_s`` it applies :mod:`curation.drift`'s statistics to the champion's
latest served predictions against its reference (the evaluation holdout scored by the champion), records
the check in ``drift_checks`` and asks the trainers for a retrain when a signal in ``alert_on`` crosses
its threshold (see :mod:`curation.drift` for the signals)."""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

import numpy as np
from prometheus_client import CollectorRegistry
from psycopg.types.json import Jsonb

from core import db
from core.db import Connector
from core.exceptions import FlywheelError
from curation.drift import (
    Calibration,
    DriftConfig,
    DriftMetrics,
    DriftReport,
    Reference,
    Signal,
    SliceStats,
    domain_auc,
    psi,
)
from curation.tabular_drift import tabular_report
from kinds.base import ModelKind, Resources
from registry import ModelRegistry, RegistryError
from schemas import RetrainRequest
from tasks import TASKS, FeatureSchema, Input, Task
from trainer.data import SampleStore

log = logging.getLogger(__name__)


class DriftMonitor:
    """Checks one model's champion; ``request_retrain`` publishes on the retrain topic (injected). The
    champion is loaded bound to ``resources`` (the trainer's embedder). This one measures a text model
    (:meth:`measure`); :class:`TabularDriftMonitor` a tabular one."""

    task: ClassVar[Task] = TASKS["text-classification"]

    def __init__(self, *, connector: Connector, model_name: str, registry: ModelRegistry, config: DriftConfig,
                 request_retrain: Callable[[RetrainRequest], None], metrics: DriftMetrics | None = None,
                 holdout_percent: int = 10, clock: Callable[[], datetime] = lambda: datetime.now(UTC),
                 resources: Resources | None = None) -> None:
        self.connector, self.model_name, self.registry, self.config = connector, model_name, registry, config
        self.resources = resources
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
        key = db.advisory_key(f"flywheel.drift:{self.model_name}")
        with self.connector() as conn, db.try_advisory_lock(conn, key) as held:
            if not held:  # another monitor of this model acts
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
            "SELECT text, input, label, probabilities FROM predictions WHERE model = %s AND model_version = %s "
            "AND variant = 'champion' ORDER BY id DESC LIMIT %s", (name, champion.version, cfg.window)).fetchall()
        if len(rows) < cfg.min_window:
            self.metrics.checks.labels(name, "too_few").inc()
            return None
        reference = self._reference_for(conn, champion.version)
        if reference is None:
            self.metrics.checks.labels(name, "no_reference").inc()
            return None
        inputs = [self.task.model_input(r[0], r[1]) for r in rows]
        predicted = [str(r[2]) for r in rows]
        confidence = np.array([max((float(p) for p in (r[3] or {}).values()), default=0.0) for r in rows])
        return self._judge(conn, self.measure(reference, inputs, predicted, confidence))

    def measure(self, reference: Reference, inputs: list[Input], predicted: list[str],
                confidence: np.ndarray) -> DriftReport:
        """The statistics of one check, not yet judged (the task's part: texts here)."""
        texts = [str(t) for t in inputs]
        labels = sorted(set(predicted) | set(reference.predicted))
        return DriftReport(
            model=self.model_name, version=reference.version, current_rows=len(texts),
            reference_rows=len(reference.inputs),
            domain_auc=domain_auc([str(t) for t in reference.inputs], texts, self.config.seed),
            psi=psi(reference.predicted, predicted, labels),
            confidence_shift=float(reference.confidence.mean() - confidence.mean()),
            reference_accuracy=reference.accuracy,
            estimated_accuracy=reference.calibration.expected_accuracy(confidence))

    def _judge(self, conn: Any, report: DriftReport) -> DriftReport:
        """Thresholds, gauges and (a signal of ``alert_on`` crossed, no alert for this champion within
        ``cooldown_s``) the retrain request."""
        cfg, name = self.config, self.model_name
        values: dict[Signal, float] = {"domain_auc": report.domain_auc, "psi": report.psi,
                                       "confidence_shift": report.confidence_shift,
                                       "accuracy_drop": report.accuracy_drop}
        crossed = tuple(s for s, v in values.items() if v >= cfg.thresholds.get(s, math.inf))
        crossed += tuple(dict.fromkeys(f.crossed for f in report.features if f.crossed is not None))
        m = self.metrics
        m.domain_auc.labels(name).set(report.domain_auc)
        m.psi.labels(name).set(report.psi)
        m.confidence_shift.labels(name).set(report.confidence_shift)
        m.estimated.labels(name).set(report.estimated_accuracy)
        m.reference.labels(name).set(report.reference_accuracy)
        for f in report.features:
            m.feature.labels(name, f.name, "psi").set(f.psi)
            m.feature.labels(name, f.name, "js").set(f.js)
            m.feature.labels(name, f.name, "p_value").set(f.p_value)
        alerting = [s for s in crossed if s in cfg.alert_on]
        note = ""
        alerted = False
        if alerting:
            last = self._last_alert(conn, report.version)
            if last is not None and self.clock() - last < timedelta(seconds=cfg.cooldown_s):
                note = f"alert for {report.version} already raised at {last:%Y-%m-%dT%H:%M:%SZ} (cooldown)"
            else:
                reason = f"drift: {', '.join(alerting)} crossed; {report.summary()}"
                self.request_retrain(RetrainRequest(ts=self.clock(), model=name, trigger="drift",
                                                    reason=reason[:2000]))
                alerted = True
                for s in alerting:
                    m.alerts.labels(name, s).inc()
                log.warning("%s: retrain requested", reason)
        m.checks.labels(name, "alert" if alerted else "crossed" if crossed else "ok").inc()
        return replace(report, crossed=crossed, alerted=alerted, note=note)

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
        frame = SampleStore(conn, self.holdout_percent, model=self.model_name,
                            task=self.task).holdout(self.config.reference_size)
        if len(frame) < 20:
            return None
        rng = np.random.default_rng(self.config.seed)
        take = sorted(rng.choice(len(frame), size=min(len(frame), self.config.reference_size), replace=False))
        inputs = [frame.inputs[i] for i in take]
        truth = [frame.labels[i] for i in take]
        model: ModelKind = self.registry.load(version, self.resources)
        proba = np.asarray(model.predict_proba(inputs), dtype=np.float64)
        predicted = [model.labels[int(i)] for i in proba.argmax(axis=1)]
        confidence = proba.max(axis=1)
        correct = np.array([p == t for p, t in zip(predicted, truth, strict=True)])
        self._reference = Reference(version, inputs, predicted, confidence, float(correct.mean()),
                                    Calibration(confidence, correct))
        return self._reference

    def _last_alert(self, conn: Any, version: str) -> datetime | None:
        row = conn.execute("SELECT max(checked_at) FROM drift_checks WHERE model_name = %s AND version = %s "
                           "AND alerted", (self.model_name, version)).fetchone()
        return row[0] if row and isinstance(row[0], datetime) else None

    def _record(self, conn: Any, r: DriftReport) -> None:
        conn.execute(
            "INSERT INTO drift_checks (model_name, version, current_rows, reference_rows, domain_auc, psi, "
            "confidence_shift, reference_accuracy, estimated_accuracy, crossed, alerted, note, checked_at, "
            "features) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
            (r.model, r.version, r.current_rows, r.reference_rows, r.domain_auc, r.psi, r.confidence_shift,
             r.reference_accuracy, r.estimated_accuracy, list(r.crossed), r.alerted, r.note, r.checked_at,
             Jsonb([f.as_json() for f in r.features])))


class TabularDriftMonitor(DriftMonitor):
    """A tabular model's monitor: the same champion, reference, thresholds, record and alert as the text
    monitor, measured by :func:`curation.tabular_drift.tabular_report` over ``schema`` (per-feature PSI,
    chi-square and JS distance, and a domain classifier over every feature)."""

    task: ClassVar[Task] = TASKS["tabular-classification"]

    def __init__(self, *, schema: FeatureSchema, **common: Any) -> None:
        super().__init__(**common)
        self.schema = schema

    def measure(self, reference: Reference, inputs: list[Input], predicted: list[str],
                confidence: np.ndarray) -> DriftReport:
        rows = [r for r in inputs if not isinstance(r, str)]
        return tabular_report(self.schema, model=self.model_name, reference=reference, current=rows,
                              predicted=predicted, confidence=confidence, config=self.config)


def drift_monitor_for(lc: Any, database_url: str, config: DriftConfig,
                      metrics: DriftMetrics | None = None) -> DriftMonitor:
    """The monitor of a :class:`flywheel.lifecycle.Lifecycle`'s model (by its task: text, or tabular over
    the trainer's feature schema) acting through it (its registry, retrain requests and the trainer's
    resources)."""
    common: dict[str, Any] = dict(
        connector=Connector(database_url), model_name=lc.settings.model_name, registry=lc.registry, config=config,
        request_retrain=lc.request_retrain, metrics=metrics, holdout_percent=lc.config.policy.holdout_percent,
        resources=lc.trainer.resources)
    if lc.trainer.task.name == TabularDriftMonitor.task.name:
        return TabularDriftMonitor(schema=lc.trainer.features, **common)
    return DriftMonitor(**common)
