"""The tree kinds beyond the conformance suite: every feature type (numeric, categorical, boolean) with
missing values, binary and 3-class, native categoricals, warm start by continued boosting, the
libraries' own model formats (no pickle), and their parameters checked."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from kinds import KindError, TabularKind, UnknownLabel, create, load_model
from tests.trainer.tabular_data import COLOURS, MIXED_FEATURES, mixed

FEATURES = MIXED_FEATURES.to_params()
SMALL = {"n_estimators": 30, "warm_rounds": 10}
KINDS = ["lightgbm", "xgboost"]


def tree(kind: str, **params: Any) -> TabularKind:
    model = create(kind, features=FEATURES, **{**SMALL, **params})
    assert isinstance(model, TabularKind)
    return model


def accuracy(model: TabularKind, rows: list[Any], labels: list[str]) -> float:
    return float(np.mean([p == y for p, y in zip(model.predict(rows), labels, strict=True)]))


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("classes", [2, 3])
def test_learns_from_every_feature_type_binary_and_multiclass(kind: str, classes: int) -> None:
    rows, labels = mixed(500, seed=1, classes=classes)
    test_rows, test_labels = mixed(300, seed=2, classes=classes)
    model = tree(kind).fit(rows, labels)
    assert model.labels == tuple(sorted(set(labels))) and len(model.labels) == classes
    proba = model.predict_proba(test_rows)
    assert proba.shape == (300, classes) and np.all(proba >= 0) and np.allclose(proba.sum(axis=1), 1.0)
    majority = max(test_labels.count(y) for y in set(test_labels)) / len(test_labels)
    assert accuracy(model, test_rows, test_labels) > majority + 0.15


@pytest.mark.parametrize("kind", KINDS)
def test_columns_follow_the_labels_order(kind: str) -> None:
    rows, labels = mixed(400, seed=3)
    model = tree(kind).fit(rows, labels)
    assert model.labels == ("high", "low", "mid")
    proba = model.predict_proba([{"x": 3.0, "colour": "green", "member": True},
                                 {"x": -3.0, "colour": "red", "member": False}])
    assert proba[0].argmax() == 0 and proba[1].argmax() == 1


@pytest.mark.parametrize("kind", KINDS)
def test_categorical_features_are_native_and_matter(kind: str, tmp_path: Path) -> None:
    rows, labels = mixed(500, seed=4, classes=2)
    model = tree(kind).fit(rows, labels)
    model.save(tmp_path)
    text = (tmp_path / model.model_file).read_text()
    if kind == "lightgbm":
        assert "cat_boundaries=" in text and "[categorical_feature: 2]" in text
    else:
        learner = json.loads(text)["learner"]
        assert learner["feature_types"] == ["q", "q", "c", "q"]
        splits = [t["split_type"] for t in learner["gradient_booster"]["model"]["trees"]]
        assert any(1 in s for s in splits)  # a categorical split
    by_colour = model.predict_proba([{"x": 0.0, "colour": c, "member": False} for c in COLOURS])[:, 1]
    assert by_colour[1] - by_colour[0] > 0.3  # green (a high score) vs red (a low one)


@pytest.mark.parametrize("kind", KINDS)
def test_missing_values_null_absent_and_unknown_are_one_missing(kind: str) -> None:
    rows, labels = mixed(400, seed=5)
    model = tree(kind).fit(rows, labels)
    base = {"x": 0.2, "colour": "blue"}
    proba = model.predict_proba([base, {**base, "member": None}, {**base, "z": None, "member": None},
                                 {**base, "colour": "purple"}, {"x": 0.2, "colour": None}])
    assert np.all(np.isfinite(proba))
    assert np.array_equal(proba[0], proba[1]) and np.array_equal(proba[0], proba[2])
    assert np.array_equal(proba[3], proba[4])  # a category the schema lacks is read as missing


@pytest.mark.parametrize("kind", KINDS)
def test_round_trip_with_categoricals_and_missing_values(kind: str, tmp_path: Path) -> None:
    rows, labels = mixed(400, seed=6)
    model = tree(kind).fit(rows, labels)
    model.save(tmp_path / "m")
    loaded = load_model(tmp_path / "m")
    assert isinstance(loaded, TabularKind) and loaded.params == model.params and loaded.trees == model.trees
    test_rows, _ = mixed(200, seed=7)
    assert np.array_equal(loaded.predict_proba(test_rows), model.predict_proba(test_rows))
    # and the loaded model keeps learning
    loaded.partial_fit(rows[:100], labels[:100])
    assert loaded.trees == model.trees + SMALL["warm_rounds"]


@pytest.mark.parametrize("kind", KINDS)
def test_artifact_is_the_libraries_own_format_and_no_pickle(kind: str, tmp_path: Path) -> None:
    rows, labels = mixed(300, seed=8)
    model = tree(kind).fit(rows, labels)
    model.save(tmp_path)
    assert {p.name for p in tmp_path.iterdir()} == {"manifest.json", model.model_file}
    data = (tmp_path / model.model_file).read_bytes()
    assert b"\x80" not in data[:2] and b"pickle" not in data.lower()
    text = data.decode("utf-8")
    if kind == "lightgbm":
        assert text.startswith("tree\nversion=")
    else:
        assert "learner" in json.loads(text)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["params"]["features"] == FEATURES  # the schema, as plain JSON


@pytest.mark.parametrize("kind", KINDS)
def test_warm_start_adds_trees_changes_predictions_and_keeps_labels(kind: str) -> None:
    rows, labels = mixed(400, seed=9)
    model = tree(kind, learning_rate=0.2, warm_rounds=40).fit(rows, labels)
    assert model.trees == SMALL["n_estimators"]
    probe, _ = mixed(100, seed=10)
    before = model.predict_proba(probe)
    # the world changed: the colour's effect flips; the new outcomes carry two of the three labels
    shifted, shifted_labels = mixed(300, seed=11)
    flipped = ["low" if y == "high" else "high" if y == "low" else y for y in shifted_labels]
    new = [(r, y) for r, y in zip(shifted, flipped, strict=True) if y != "mid"]
    model.partial_fit([r for r, _ in new], [y for _, y in new])
    assert model.trees == SMALL["n_estimators"] + 40
    assert model.labels == ("high", "low", "mid")
    after = model.predict_proba(probe)
    assert after.shape == before.shape and not np.allclose(after, before, atol=1e-3)
    oracle, names = np.asarray(model.clone().fit(shifted, flipped).predict(probe)), np.asarray(model.labels)
    assert np.mean(names[after.argmax(1)] == oracle) > np.mean(names[before.argmax(1)] == oracle) + 0.1
    with pytest.raises(UnknownLabel):
        model.partial_fit(rows[:1], ["unheard of"])


@pytest.mark.parametrize("kind", KINDS)
def test_deterministic_for_a_seed_with_sampling(kind: str) -> None:
    rows, labels = mixed(300, seed=12)
    probe, _ = mixed(50, seed=13)

    def fit(seed: int) -> Any:
        return tree(kind, subsample=0.7, colsample=0.75, seed=seed).fit(rows, labels).predict_proba(probe)

    assert np.array_equal(fit(1), fit(1))
    assert not np.array_equal(fit(1), fit(2))


@pytest.mark.parametrize("kind", KINDS)
def test_weights_shift_the_model(kind: str) -> None:
    rows, labels = mixed(300, seed=14, classes=2)
    plain = tree(kind).fit(rows, labels).predict_proba(rows)[:, 1].mean()
    favour_yes = [5.0 if y == "yes" else 1.0 for y in labels]
    weighted = tree(kind).fit(rows, labels, favour_yes).predict_proba(rows)[:, 1].mean()
    assert weighted > plain + 0.05
    with pytest.raises(KindError, match="weights"):
        tree(kind).fit(rows, labels, [1.0] * (len(rows) - 1))
    with pytest.raises(KindError, match="weights"):
        tree(kind).fit(rows, labels, [-1.0] * len(rows))


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("params", [
    {"features": []}, {"features": [{"name": "c", "type": "categorical"}]}, {"features": "x"},
    {"subsample": 0.0}, {"colsample": 1.5}, {"threads": 0}, {"n_estimators": 0}, {"warm_rounds": 2.5},
])
def test_bad_params_are_refused(kind: str, params: dict[str, Any]) -> None:
    with pytest.raises(KindError):
        create(kind, **{"features": FEATURES, **params})


@pytest.mark.parametrize("kind", KINDS)
def test_features_are_required_and_unknown_params_refused(kind: str) -> None:
    with pytest.raises(KindError, match="features"):
        create(kind)
    with pytest.raises(KindError, match="num_trees"):
        create(kind, features=FEATURES, num_trees=3)


@pytest.mark.parametrize("kind", KINDS)
def test_rows_that_do_not_encode_and_one_label_are_refused(kind: str) -> None:
    rows, labels = mixed(100, seed=15)
    model = tree(kind).fit(rows, labels)
    with pytest.raises(KindError, match="encode"):
        model.predict_proba([{"x": "not a number", "colour": "red"}])
    with pytest.raises(KindError, match="two labels"):
        tree(kind).fit(rows, ["same"] * len(rows))
    with pytest.raises(KindError, match="as many labels"):
        tree(kind).fit(rows, labels[:-1])
