"""One conformance suite, run over every registered model kind (river's checks/ habit): safe-format
round trip with identical predictions, tampered artifacts refused, deterministic fits, labels kept,
warm start keeps the label set."""

from __future__ import annotations

import csv
import functools
import json
import random
import zipfile
from pathlib import Path

import numpy as np
import pytest

from kinds import KINDS, ModelKind, NotFitted, TamperedArtifact, UnknownLabel, create, load_model
from kinds.exceptions import ArtifactError

DATA = Path(__file__).resolve().parents[2] / "data"


@functools.cache
def _rows() -> list[dict[str, str]]:
    with (DATA / "vader_movies.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    random.Random(0).shuffle(rows)  # the file is ordered by sentiment
    return rows


def corpus(n: int = 600, offset: int = 0) -> tuple[list[str], list[str]]:
    rows = _rows()[offset:offset + n]
    return [r["text"] for r in rows], [r["label3"] for r in rows]


# every kind with its defaults, and the MiniLM head's other solver
VARIANTS: dict[str, tuple[str, dict[str, object]]] = {
    **{kind: (kind, {}) for kind in sorted(KINDS)},
    "minilm-head-lbfgs": ("minilm-head", {"solver": "lbfgs", "c": 0.1}),
}


@pytest.fixture(params=sorted(VARIANTS))
def model(request: pytest.FixtureRequest) -> ModelKind:
    kind, params = VARIANTS[request.param]
    return create(kind, **params)


@pytest.fixture
def fitted(model: ModelKind) -> ModelKind:
    texts, labels = corpus()
    return model.fit(texts, labels)


def test_fit_predicts_every_label_with_probabilities(fitted: ModelKind) -> None:
    texts, _ = corpus(100, offset=2000)
    proba = fitted.predict_proba(texts)
    assert proba.shape == (100, len(fitted.labels))
    assert np.allclose(proba.sum(axis=1), 1.0)
    assert fitted.labels == tuple(sorted(set(corpus()[1])))
    assert set(fitted.predict(texts)) <= set(fitted.labels)


def test_better_than_chance_on_held_out_real_data(fitted: ModelKind) -> None:
    texts, labels = corpus(400, offset=3000)
    accuracy = np.mean([p == y for p, y in zip(fitted.predict(texts), labels, strict=True)])
    majority = max(labels.count(lbl) for lbl in set(labels)) / len(labels)
    assert accuracy > majority + 0.05, (accuracy, majority)


def test_save_load_round_trip_is_identical_and_pickle_free(fitted: ModelKind, tmp_path: Path) -> None:
    manifest = fitted.save(tmp_path / "m")
    assert manifest["kind"] == fitted.kind and len(manifest["sha256"]) == 64
    for path in (tmp_path / "m").iterdir():
        assert path.suffix in {".json", ".npz", ".safetensors"}, path
        if path.suffix == ".npz":
            with zipfile.ZipFile(path) as archive:
                assert all(name.endswith(".npy") for name in archive.namelist())
            np.load(path, allow_pickle=False)
    loaded = load_model(tmp_path / "m")
    texts, _ = corpus(50, offset=5000)
    assert loaded.labels == fitted.labels and loaded.params == fitted.params
    assert np.array_equal(loaded.predict_proba(texts), fitted.predict_proba(texts))


@pytest.mark.parametrize("mode", ["flip a byte", "truncate", "delete", "edit manifest params"])
def test_tampered_artifact_is_refused(fitted: ModelKind, tmp_path: Path, mode: str) -> None:
    fitted.save(tmp_path / "m")
    files = sorted(p for p in (tmp_path / "m").iterdir() if p.name != "manifest.json")
    victim = files[-1]
    if mode == "flip a byte":
        data = bytearray(victim.read_bytes())
        data[len(data) // 2] ^= 0xFF
        victim.write_bytes(bytes(data))
    elif mode == "truncate":
        victim.write_bytes(victim.read_bytes()[:-10])
    elif mode == "delete":
        victim.unlink()
    else:
        manifest = json.loads((tmp_path / "m" / "manifest.json").read_text())
        manifest["files"][victim.name] = "0" * 64
        (tmp_path / "m" / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(TamperedArtifact):
        load_model(tmp_path / "m")


def test_missing_or_foreign_artifacts_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match="manifest"):
        load_model(tmp_path)
    (tmp_path / "manifest.json").write_text(json.dumps({"format_version": 1, "kind": "nope", "params": {},
                                                        "labels": [], "files": {}}))
    with pytest.raises(ArtifactError, match="unknown model kind"):
        load_model(tmp_path)


def test_fit_is_deterministic_with_a_seed(model: ModelKind) -> None:
    texts, labels = corpus()
    a = model.clone().fit(texts, labels).predict_proba(texts[:50])
    b = model.clone().fit(texts, labels).predict_proba(texts[:50])
    assert np.array_equal(a, b)


def test_warm_start_keeps_the_label_set_and_learns(fitted: ModelKind) -> None:
    texts, labels = corpus(200, offset=1000)
    only_two = [(t, y) for t, y in zip(texts, labels, strict=True) if y != "neutral"]
    before = fitted.labels
    fitted.partial_fit([t for t, _ in only_two], [y for _, y in only_two])
    assert fitted.labels == before
    assert fitted.predict_proba(texts[:5]).shape == (5, len(before))
    with pytest.raises(UnknownLabel):
        fitted.partial_fit(["so so"], ["furious"])


def test_unfitted_models_say_so(model: ModelKind, tmp_path: Path) -> None:
    with pytest.raises(NotFitted):
        model.predict_proba(["x"])
    with pytest.raises(NotFitted):
        model.save(tmp_path)


def test_params_are_the_whole_configuration(fitted: ModelKind) -> None:
    clone = fitted.clone()
    assert clone.params == fitted.params and not clone.fitted
    assert repr(clone) == repr(fitted)
    assert type(fitted)(**fitted.params).params == fitted.params
