"""Curation of a tabular model's samples on real Postgres: exact duplicates by their values and outcome,
conflicting outcomes for the same features, outliers against the model's accepted rows; and none of it
touches another model's samples."""

from __future__ import annotations

import json
import random
import uuid

import psycopg

from curation import CurationConfig, Curator, PostgresCurationStore
from curation.config import OutliersConfig
from curation.outliers import OutlierCheck

LABELS = ("failed", "succeeded")


def _land(db_url: str, rows: list[tuple[dict[str, object], str]], model: str = "automation") -> list[int]:
    ids = []
    with psycopg.connect(db_url, autocommit=True) as conn:
        for features, outcome in rows:
            pid = uuid.uuid4().hex
            conn.execute("INSERT INTO predictions (prediction_id, model, model_version, variant, input, label, "
                         "probabilities, latency_ms, ts) VALUES (%s, %s, '1', 'champion', %s, 'succeeded', "
                         "'{\"failed\": 0.3, \"succeeded\": 0.7}', 1, now())",
                         (pid, model, json.dumps({"features": features})))
            row = conn.execute(
                "INSERT INTO feedback (feedback_id, content_key, prediction_id, label, source, ts, status, model, "
                "model_version, variant, predicted_label, probabilities, resolved_at) VALUES (%s, "
                "gen_random_uuid(), %s, %s, 'outcomes', now(), 'joined', %s, '1', 'champion', 'succeeded', "
                "'{\"failed\": 0.3, \"succeeded\": 0.7}', now()) RETURNING id",
                (uuid.uuid4().hex, pid, outcome, model)).fetchone()
            assert row is not None
            ids.append(int(row[0]))
    return ids


def _curate(db_url: str, model: str = "automation") -> dict[int, tuple[str, list[str]]]:
    config = CurationConfig()
    with psycopg.connect(db_url, autocommit=True) as conn:
        store = PostgresCurationStore(conn, config.annotators, model=model)
        while Curator(config, LABELS).curate_batch(store, sweep=True) is not None:
            pass
        return {int(r[0]): (r[1], list(r[2])) for r in conn.execute(
            "SELECT id, status, reasons FROM samples WHERE model = %s", (model,)).fetchall()}


def test_duplicates_conflicts_and_outliers_of_a_tabular_model(db_url: str) -> None:
    rng = random.Random(0)
    history = [({"load": round(rng.gauss(50, 5), 2), "os": "linux"}, "succeeded") for _ in range(80)]
    _land(db_url, history)
    _curate(db_url)
    same = {"load": 42.0, "os": "windows"}
    dup_a, dup_b, conflict_a, conflict_b, outlier = _land(db_url, [
        ({"load": 47.0, "os": "macos"}, "failed"), ({"load": 47.0, "os": "macos"}, "failed"),
        (same, "failed"), (same, "succeeded"),
        ({"load": 4000.0, "os": "linux"}, "failed")])
    other = _land(db_url, [({"load": 47.0, "os": "macos"}, "succeeded")], model="other-tabular")
    verdicts = _curate(db_url)
    assert verdicts[dup_a] == ("accepted", [])
    assert verdicts[dup_b] == ("rejected", ["duplicate"])
    assert {verdicts[conflict_a][0], verdicts[conflict_b][0]} == {"quarantined"}
    assert "conflicting_duplicates" in verdicts[conflict_a][1] + verdicts[conflict_b][1]
    assert verdicts[outlier] == ("quarantined", ["outlier"])
    assert set(verdicts) & set(other) == set()  # another model's row is neither curated nor a duplicate here
    assert _curate(db_url, "other-tabular") == {other[0]: ("accepted", [])}


def test_the_robust_z_score_judges_numeric_features_only_with_enough_reference() -> None:
    config = OutliersConfig(robust_z=8.0, min_reference=50)
    reference = [{"features": {"x": float(v), "flag": v % 2 == 0, "c": "a", "k": 1.0}} for v in range(100)]
    check = OutlierCheck(reference, config)
    assert check.outlying({"features": {"x": 50.0, "flag": True, "c": "zzz", "k": 500.0}}) == []  # k: MAD 0
    assert check.outlying({"features": {"x": 50 + 8.1 * 1.4826 * 25}}) == ["x"]
    assert OutlierCheck(reference[:10], config).outlying({"features": {"x": 1e9}}) == []  # too little reference
