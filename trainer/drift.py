"""The drift monitor: every ``interval_s`` it applies :mod:`curation.drift`'s statistics to the champion's
latest served predictions against its reference (the evaluation holdout scored by the champion), records
the check in ``drift_checks`` and asks the trainers for a retrain when a signal in ``alert_on`` crosses
its threshold (see :mod:`curation.drift` for the signals)."""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
from prometheus_client import CollectorRegistry

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
from kinds.base import ModelKind, Resources
from registry import ModelRegistry, RegistryError
from schemas import RetrainRequest
from trainer.data import SampleStore

log = logging.getLogger(__name__)


class DriftMonitor:
    """Checks one model's champion; ``request_retrain`` publishes on the retrain topic (injected). The
    champion is loaded bound to ``resources`` (the trainer's embedder)."""

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
        frame = SampleStore(conn, self.holdout_percent, model=self.model_name).holdout(self.config.reference_size)
        if len(frame) < 20:
            return None
        rng = np.random.default_rng(self.config.seed)
        take = sorted(rng.choice(len(frame), size=min(len(frame), self.config.reference_size), replace=False))
        texts = [str(frame.inputs[i]) for i in take]
        truth = [frame.labels[i] for i in take]
        model: ModelKind = self.registry.load(version, self.resources)
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
    """A monitor acting through a :class:`flywheel.lifecycle.Lifecycle` (its registry, retrain requests and
    the trainer's resources)."""
    return DriftMonitor(connector=Connector(database_url), model_name=lc.settings.model_name, registry=lc.registry,
                        config=config, request_retrain=lc.request_retrain, metrics=metrics,
                        holdout_percent=lc.config.policy.holdout_percent, resources=lc.trainer.resources)
