"""Tabular drift statistics on synthetic rows: quiet when nothing moved, the moved feature (and only it)
when one did, missing values as their own bin, the domain classifier over every feature, determinism."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from curation.drift import Calibration, DriftConfig, Reference
from curation.tabular_drift import (
    MISSING,
    bin_labels,
    feature_drift,
    features_drift,
    tabular_domain_auc,
    tabular_report,
)
from tasks import FeatureSchema, Row

SCHEMA = FeatureSchema.from_params([
    {"name": "age", "type": "numeric", "min": 0, "max": 120, "required": False},
    {"name": "income", "type": "numeric"},
    {"name": "plan", "type": "categorical", "categories": ["free", "pro", "team"]},
    {"name": "active", "type": "boolean", "required": False},
])


def make_rows(n: int, seed: int, *, income_shift: float = 0.0, plan: tuple[float, float, float] = (0.6, 0.3, 0.1),
              age_missing: float = 0.05) -> list[Row]:
    rng = np.random.default_rng(seed)
    rows: list[Row] = []
    for _ in range(n):
        row: dict[str, Any] = {
            "income": float(rng.lognormal(3.5, 0.4) + income_shift),
            "plan": str(rng.choice(["free", "pro", "team"], p=plan)),
            "active": bool(rng.uniform() < 0.7),
        }
        if rng.uniform() >= age_missing:
            row["age"] = float(np.clip(rng.normal(40, 12), 0, 120))
        rows.append(row)
    return rows


REFERENCE = make_rows(1000, 1)


def by_name(drifts: tuple[Any, ...]) -> dict[str, Any]:
    return {d.name: d for d in drifts}


def test_bins_by_hand() -> None:
    feature = SCHEMA.features[0]
    reference = [{"age": float(v)} for v in range(100)]
    names, ref, cur = bin_labels(feature, reference, [{"age": -5.0}, {"age": 500.0}, {}, {"age": None}], bins=4)
    assert names == ["q0", "q1", "q2", "q3", MISSING]  # quartile edges 24.75, 49.5, 74.25
    assert [ref.count(n) for n in names] == [25, 25, 25, 25, 0]
    assert cur == ["q0", "q3", MISSING, MISSING]  # open ends; absent and null are missing
    constant = bin_labels(feature, [{"age": 1.0}] * 200, [{"age": 1.0}], bins=10)
    assert constant[0] == ["q0", "q1", MISSING]  # one distinct value: its edges collapse
    small = bin_labels(feature, reference[:60], [], bins=10)
    assert small[0] == ["q0", "q1", "q2", MISSING]  # 60 reference values: 3 bins of 20


def test_categorical_bins_and_identical_samples() -> None:
    plan = SCHEMA.features[2]
    names, ref, _cur = bin_labels(plan, [{"plan": "pro"}, {"plan": "gold"}, {}], [], bins=10)
    assert names == ["free", "pro", "team", "(other)", MISSING] and ref == ["pro", "(other)", MISSING]
    same = feature_drift(plan, REFERENCE, REFERENCE)
    assert same.psi == pytest.approx(0.0) and same.js == pytest.approx(0.0) and same.p_value == pytest.approx(1.0)


def test_no_drift_is_quiet() -> None:
    current = make_rows(500, 2)
    drifts = by_name(features_drift(SCHEMA, REFERENCE, current))
    print({n: (round(d.psi, 3), round(d.p_value, 3), round(d.js, 3)) for n, d in drifts.items()})
    assert all(d.crossed is None for d in drifts.values())
    assert all(d.psi < 0.1 for d in drifts.values())
    assert all(d.p_value > 0.01 for d in drifts.values())
    auc = tabular_domain_auc(SCHEMA, REFERENCE, current)
    print(f"domain AUC, no drift: {auc:.3f}")
    assert 0.4 < auc < 0.6


def test_a_shifted_numeric_feature_is_named_alone() -> None:
    current = make_rows(500, 3, income_shift=15.0)
    drifts = features_drift(SCHEMA, REFERENCE, current)
    assert drifts[0].name == "income" and drifts[0].crossed == "feature_psi" and drifts[0].psi > 0.5
    assert [d.name for d in drifts if d.crossed] == ["income"]
    assert all(d.psi < 0.1 for d in drifts[1:])
    auc = tabular_domain_auc(SCHEMA, REFERENCE, current)
    print(f"domain AUC, income shifted: {auc:.3f}")
    assert auc > 0.75


def test_a_new_category_mix_has_a_low_p_value() -> None:
    current = make_rows(500, 4, plan=(0.3, 0.3, 0.4))
    drifts = by_name(features_drift(SCHEMA, REFERENCE, current))
    plan = drifts["plan"]
    assert plan.p_value < 1e-6 and plan.js > 0.1 and plan.crossed == "feature_js"
    assert [n for n, d in drifts.items() if d.crossed] == ["plan"]
    # no drift on a handful of rows: a large distance by chance alone, which the p-value keeps quiet
    few = by_name(features_drift(SCHEMA, REFERENCE, make_rows(12, 10)))["plan"]
    assert few.js > 0.2 and few.p_value > 0.1 and few.crossed is None


def test_missing_values_are_their_own_bin() -> None:
    current = make_rows(500, 5, age_missing=0.5)
    age = by_name(features_drift(SCHEMA, REFERENCE, current))["age"]
    assert age.missing_current == pytest.approx(0.5, abs=0.06) and age.missing_reference < 0.1
    assert age.crossed == "feature_psi"


def test_thresholds_come_from_the_config() -> None:
    current = make_rows(500, 3, income_shift=15.0)
    lax = DriftConfig(thresholds={"feature_psi": 100.0, "feature_js": 0.1})
    assert all(d.crossed is None for d in features_drift(SCHEMA, REFERENCE, current, lax))
    strict = DriftConfig(feature_p_value=0.99, thresholds={"feature_psi": 0.2, "feature_js": 0.0})
    few = features_drift(SCHEMA, REFERENCE, make_rows(12, 10), strict)
    assert {d.name: d.crossed for d in few if d.type != "numeric"} == {"plan": "feature_js", "active": "feature_js"}


def test_a_signal_left_out_of_the_thresholds_keeps_its_default() -> None:
    config = DriftConfig.model_validate({"thresholds": {"domain_auc": 0.8}})
    assert config.thresholds["domain_auc"] == 0.8 and config.thresholds["feature_psi"] == 0.2
    assert config.thresholds["feature_js"] == 0.1 and config.thresholds["psi"] == 0.2


def test_deterministic_for_a_seed() -> None:
    current = make_rows(500, 7, income_shift=5.0)
    first = tabular_domain_auc(SCHEMA, REFERENCE, current, seed=3)
    assert tabular_domain_auc(SCHEMA, REFERENCE, current, seed=3) == first
    assert features_drift(SCHEMA, REFERENCE, current) == features_drift(SCHEMA, REFERENCE, current)


def test_report_carries_the_label_free_estimate() -> None:
    rng = np.random.default_rng(0)
    confidence = rng.uniform(0.5, 1.0, len(REFERENCE))
    correct = rng.uniform(size=len(REFERENCE)) < confidence
    predicted = ["yes" if rng.uniform() < 0.5 else "no" for _ in REFERENCE]
    reference = Reference("3", list(REFERENCE), predicted, confidence, float(correct.mean()),
                          Calibration(confidence, correct))
    current = make_rows(300, 8, income_shift=15.0)
    served = rng.uniform(0.5, 0.7, 300)  # a less sure champion
    report = tabular_report(SCHEMA, model="churn", reference=reference, current=current,
                            predicted=["yes"] * 300, confidence=served)
    print(report.summary())
    assert report.version == "3" and report.current_rows == 300 and report.reference_rows == 1000
    assert report.estimated_accuracy == pytest.approx(served.mean(), abs=0.05)
    assert report.accuracy_drop > 0.1 and report.confidence_shift > 0.1 and report.psi > 0.5
    assert report.drifted_features == ("income",) and "income" in report.summary()
    assert report.features[0].as_json()["name"] == "income"
    assert all(math.isfinite(f.psi) for f in report.features)
