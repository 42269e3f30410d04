"""The tabular drift monitor as the platform builds it (``drift_monitor_for`` a tabular model's
lifecycle): a real lightgbm champion bootstrapped into the real MLflow registry, its corpus holdout as
the reference, predictions served as ingest lands them; the automation's load moving up asks for one
retrain naming `load`."""

from __future__ import annotations

import json
import random
import uuid
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from core import db
from core.db import session_connector
from core.settings import FlywheelSettings
from curation.drift import DriftConfig, DriftMetrics
from flywheel import models
from flywheel.lifecycle import Lifecycle, lifecycle
from kinds.base import Resources
from kinds.embeddings import Embedder, MemoryEmbeddingCache
from schemas import RetrainRequest
from tasks import parse_spec
from tests.fakes import HashingEncoder
from tests.flywheel.test_many_models import AUTOMATION, automation_rows
from trainer.drift import TabularDriftMonitor, drift_monitor_for

SPEC = {**AUTOMATION, "training": {
    "policy": {"incremental_threshold": 100000, "full_threshold": 100000,
               "kind_params": {"lightgbm": {"n_estimators": 40, "min_child_samples": 5}}},
    "promotion": {"mode": "direct"}}}


@pytest.fixture
def db_url(registry_db_url: str) -> str:
    return registry_db_url


@pytest.fixture
def tabular(settings: FlywheelSettings, db_url: str) -> Iterator[Lifecycle]:
    spec = parse_spec(SPEC)
    with session_connector(db_url)() as conn:
        models.declare(conn, settings)
        models.create(conn, spec)
    resources = Resources(embedder=Embedder(HashingEncoder(), MemoryEmbeddingCache()))
    with lifecycle(settings, settings.kafka_connection(), db_url, resources=resources, spec=spec) as lc:
        boot = lc.trainer.bootstrap(automation_rows(600, drifted=False, seed=1), source="history", kind="lightgbm")
        assert boot.status == "promoted", boot.reason
        yield lc


def loaded_rows(n: int, seed: int, low: float, high: float) -> list[dict[str, Any]]:
    """Automation runs whose load is uniform in [low, high]; the rest as before."""
    rng = random.Random(seed)
    out = []
    for row in automation_rows(n, drifted=False, seed=seed):
        out.append({**dict(row.text), "load": round(rng.uniform(low, high), 1)})  # type: ignore[call-overload]
    return out


def serve(lc: Lifecycle, db_url: str, rows: Sequence[dict[str, Any]]) -> None:
    info = lc.registry.champion()
    assert info is not None
    model = lc.registry.load(info.version)
    proba = model.predict_proba(rows)
    with db.connect(db_url) as conn, conn.transaction():
        for row, p in zip(rows, proba, strict=True):
            conn.execute(
                "INSERT INTO predictions (prediction_id, model, model_version, variant, input, label, probabilities, "
                "latency_ms, ts) VALUES (%s, 'automation', %s, 'champion', %s, %s, %s, 1.0, %s)",
                (uuid.uuid4().hex, info.version, json.dumps({"features": row}), model.labels[int(p.argmax())],
                 json.dumps(dict(zip(model.labels, map(float, p), strict=True))), datetime.now(UTC)))


def test_a_lightgbm_champion_drifts_when_the_load_moves(tabular: Lifecycle, db_url: str) -> None:
    metrics = CollectorRegistry()
    monitor = drift_monitor_for(tabular, db_url, DriftConfig(window=300, min_window=100, reference_size=400),
                                DriftMetrics(metrics))
    assert isinstance(monitor, TabularDriftMonitor) and monitor.schema == tabular.trainer.features
    requests: list[RetrainRequest] = []
    monitor.request_retrain = requests.append  # the retrain topic's publisher is the text monitor's test's

    serve(tabular, db_url, [dict(r.text) for r in automation_rows(300, drifted=False, seed=7)])
    quiet = monitor.tick()
    assert quiet is not None
    print("quiet:", quiet.summary(), quiet.crossed)
    assert quiet.reference_rows == 120 and not quiet.alerted and requests == []
    assert quiet.drifted_features == () and quiet.domain_auc < 0.7
    assert all(f.psi < 0.12 for f in quiet.features)  # a 120-row reference: 6 bins of load, not 10

    serve(tabular, db_url, loaded_rows(300, 8, 50.0, 100.0))  # the fleet runs hotter
    drifted = monitor.tick()
    assert drifted is not None
    print("drifted:", drifted.summary(), drifted.crossed)
    assert drifted.alerted and drifted.features[0].name == "load" and "feature_psi" in drifted.crossed
    assert drifted.drifted_features == ("load",)
    [request] = requests
    assert request.model == "automation" and request.trigger == "drift" and "load" in request.reason
    with db.connect(db_url, autocommit=True) as conn:
        recorded = conn.execute("SELECT model_name, alerted, features->0->>'name' FROM drift_checks "
                                "ORDER BY id").fetchall()
    assert recorded == [("automation", False, quiet.features[0].name), ("automation", True, "load")]
