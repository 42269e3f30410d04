"""The tabular drift monitor on real Postgres: a tabular model's reference rows (corpus holdout and
label-issue samples, inputs as jsonb) and its champion's served predictions; served rows like the
reference are quiet, served rows with a shifted feature record a check naming it and ask for one retrain.
The champion is a small real scikit-learn model behind an in-memory registry (the tabular kinds and their
MLflow artifacts are another branch's)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pytest
from prometheus_client import CollectorRegistry
from sklearn.linear_model import LogisticRegression

from core import db
from core.db import Connector
from curation.drift import DriftConfig, DriftMetrics
from schemas import RetrainRequest
from tasks import FeatureSchema, Row
from tests.curation.test_tabular_drift import SCHEMA, make_rows
from trainer.drift import DriftMonitor, TabularDriftMonitor, drift_monitor_for

MODEL = "churn"
LABELS = ("churn", "stay")


def truth(rows: Sequence[Row], seed: int) -> list[str]:
    """Churn when income is low on the free plan, with 10% noise."""
    rng = np.random.default_rng(seed)
    out = []
    for row in rows:
        churn = float(row["income"] or 0.0) < 33.0 and row["plan"] == "free"  # type: ignore[operator]
        out.append(LABELS[int(churn == (rng.uniform() < 0.1))])
    return out


class TinyTabularModel:
    """A logistic regression over the schema's matrix (missing values as the training column mean)."""

    def __init__(self, schema: FeatureSchema, rows: Sequence[Row], labels: Sequence[str]) -> None:
        self.schema, self.labels = schema, list(LABELS)
        x = schema.matrix(rows)
        self.means = np.nanmean(x, axis=0)
        self.classifier = LogisticRegression(max_iter=1000).fit(self._filled(x), [LABELS.index(y) for y in labels])

    def _filled(self, x: np.ndarray) -> np.ndarray:
        return np.where(np.isnan(x), self.means, x)

    def predict_proba(self, rows: Sequence[Row]) -> np.ndarray:
        return np.asarray(self.classifier.predict_proba(self._filled(self.schema.matrix(rows))))


@dataclass(frozen=True)
class Version:
    version: str


class OneChampionRegistry:
    """The registry seam the monitor uses: its champion and loading a version."""

    def __init__(self, model: TinyTabularModel | None, version: str = "1") -> None:
        self.model, self.version = model, version

    def champion(self) -> Version | None:
        return None if self.model is None else Version(self.version)

    def load(self, version: str, resources: Any = None) -> TinyTabularModel:
        assert self.model is not None and version == self.version
        return self.model


def seed_reference(db_url: str, rows: Sequence[Row], labels: Sequence[str]) -> None:
    """The first 300 rows as the corpus holdout, the rest as label-issue samples (both are the holdout)."""
    with db.connect(db_url) as conn, conn.transaction():
        for i, (row, label) in enumerate(zip(rows, labels, strict=True)):
            data = json.dumps({"features": dict(row)})
            if i < 300:
                conn.execute("INSERT INTO corpus (model, input, label, split, source) VALUES (%s, %s, %s, "
                             "'holdout', 'test')", (MODEL, data, label))
            else:
                conn.execute("INSERT INTO samples (id, feedback_id, prediction_id, model, input, label, status, "
                             "weight, reasons, ts) VALUES (%s, %s, %s, %s, %s, %s, 'quarantined', 1.0, "
                             "'[\"label_issue\"]', now())", (i, f"fb{i}", f"p{i}", MODEL, data, label))


def serve(db_url: str, model: TinyTabularModel, rows: Sequence[Row]) -> None:
    """The champion's predictions as ingest lands them for a tabular model (no text, the row as input)."""
    proba = model.predict_proba(rows)
    with db.connect(db_url) as conn, conn.transaction():
        for row, p in zip(rows, proba, strict=True):
            conn.execute(
                "INSERT INTO predictions (prediction_id, model, model_version, variant, text, input, label, "
                "probabilities, latency_ms, ts) VALUES (%s, %s, '1', 'champion', NULL, %s, %s, %s, 1.0, %s)",
                (uuid.uuid4().hex, MODEL, json.dumps({"features": dict(row)}), LABELS[int(p.argmax())],
                 json.dumps(dict(zip(LABELS, map(float, p), strict=True))), datetime.now(UTC)))


@pytest.fixture
def champion() -> TinyTabularModel:
    train = make_rows(1500, 11)
    return TinyTabularModel(SCHEMA, train, truth(train, 11))


def monitor_of(db_url: str, champion: TinyTabularModel | None, requests: list[RetrainRequest],
               metrics: DriftMetrics) -> TabularDriftMonitor:
    return TabularDriftMonitor(
        schema=SCHEMA, connector=Connector(db_url), model_name=MODEL,
        registry=OneChampionRegistry(champion),
        config=DriftConfig(window=300, min_window=100, reference_size=400),
        request_retrain=requests.append, metrics=metrics)


def test_quiet_on_rows_like_the_reference_and_one_alert_on_a_shifted_feature(
        db_url: str, champion: TinyTabularModel) -> None:
    reference = make_rows(400, 12)
    seed_reference(db_url, reference, truth(reference, 12))
    requests: list[RetrainRequest] = []
    metrics = CollectorRegistry()
    monitor = monitor_of(db_url, champion, requests, DriftMetrics(metrics))
    assert monitor.tick() is None  # nothing served yet: no verdict

    serve(db_url, champion, make_rows(300, 13))
    quiet = monitor.tick()
    assert quiet is not None, "a verdict on 300 served predictions"
    print("quiet:", quiet.summary(), quiet.crossed)
    assert quiet.reference_rows == 400 and quiet.current_rows == 300
    assert not quiet.alerted and quiet.crossed == () and requests == []
    assert quiet.domain_auc < 0.65 and quiet.drifted_features == ()
    assert {f.name for f in quiet.features} == set(SCHEMA.names)

    serve(db_url, champion, make_rows(300, 14, income_shift=15.0))  # incomes rise
    drifted = monitor.tick()
    assert drifted is not None
    print("drifted:", drifted.summary(), drifted.crossed)
    assert drifted.alerted and "feature_psi" in drifted.crossed
    assert drifted.drifted_features == ("income",) and drifted.features[0].name == "income"
    [request] = requests
    assert request.trigger == "drift" and request.model == MODEL and "income" in request.reason

    again = monitor.tick()  # still drifted, same champion: the cooldown holds
    assert again is not None and not again.alerted and "cooldown" in again.note and len(requests) == 1

    with db.connect(db_url, autocommit=True) as conn:
        recorded = conn.execute("SELECT alerted, crossed, features, domain_auc FROM drift_checks "
                                "WHERE model_name = %s ORDER BY id", (MODEL,)).fetchall()
    assert [r[0] for r in recorded] == [False, True, False]
    assert recorded[0][1] == [] and "feature_psi" in recorded[1][1]
    income = next(f for f in recorded[1][2] if f["name"] == "income")
    assert income["crossed"] == "feature_psi" and income["psi"] == pytest.approx(drifted.features[0].psi)
    assert all(f["crossed"] is None for f in recorded[0][2])
    assert recorded[1][3] == pytest.approx(drifted.domain_auc)
    gauge = metrics.get_sample_value("flywheel_drift_feature", {"model": MODEL, "feature": "income",
                                                                "statistic": "psi"})
    assert gauge == pytest.approx(again.features[0].psi)
    assert metrics.get_sample_value("flywheel_drift_alerts_total", {"model": MODEL, "signal": "feature_psi"}) == 1


def test_no_champion_or_no_reference_is_no_verdict(db_url: str, champion: TinyTabularModel) -> None:
    metrics = CollectorRegistry()
    gauges = DriftMetrics(metrics)
    assert monitor_of(db_url, None, [], gauges).tick() is None
    serve(db_url, champion, make_rows(150, 15))
    assert monitor_of(db_url, champion, [], gauges).tick() is None  # no holdout rows of this model
    outcomes = {s.labels["outcome"]: s.value for m in metrics.collect() for s in m.samples
                if s.name == "flywheel_drift_checks_total"}
    assert outcomes == {"no_champion": 1.0, "no_reference": 1.0}


def test_the_lifecycle_picks_the_monitor_by_task() -> None:
    @dataclass
    class Trainer:
        task: Any
        features: FeatureSchema | None
        resources: Any = None

    @dataclass
    class Lc:
        trainer: Trainer
        settings: Any
        registry: Any = None
        config: Any = None

        def request_retrain(self, request: RetrainRequest) -> None:
            pass

    from types import SimpleNamespace

    from tasks import TASKS

    common = {"settings": SimpleNamespace(model_name=MODEL),
              "config": SimpleNamespace(policy=SimpleNamespace(holdout_percent=10))}
    tabular = drift_monitor_for(Lc(Trainer(TASKS["tabular-classification"], SCHEMA), **common), "postgresql://x",
                                DriftConfig())
    assert isinstance(tabular, TabularDriftMonitor) and tabular.schema == SCHEMA and tabular.model_name == MODEL
    text = drift_monitor_for(Lc(Trainer(TASKS["text-classification"], None), **common), "postgresql://x",
                             DriftConfig())
    assert type(text) is DriftMonitor
