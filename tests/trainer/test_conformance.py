"""One conformance suite, run over every registered model kind (river's checks/ habit): safe-format
round trip with identical predictions, tampered artifacts refused, deterministic fits, labels kept,
warm start keeps the label set, inputs of another task refused. Each kind runs on real data of its task:
movie-review sentences (text-classification), NOAA rainfall rows before the drift (tabular-classification)."""

from __future__ import annotations

import csv
import functools
import json
import random
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from kinds import KINDS, KindError, ModelKind, NotFitted, TamperedArtifact, UnknownLabel, create, load_model
from kinds.exceptions import ArtifactError
from tasks import Input
from tests.trainer.tabular_data import RAINFALL_FEATURES, rainfall

DATA = Path(__file__).resolve().parents[2] / "data"


@functools.cache
def _rows() -> list[dict[str, str]]:
    with (DATA / "vader_movies.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    random.Random(0).shuffle(rows)  # the file is ordered by sentiment
    return rows


def texts(n: int = 600, offset: int = 0) -> tuple[list[Input], list[str]]:
    rows = _rows()[offset:offset + n]
    return [r["text"] for r in rows], [r["label3"] for r in rows]


@functools.cache
def _before_drift() -> tuple[list[Input], list[str]]:
    rows, labels = rainfall()
    order = list(range(12_000))  # the rows before the injected drift, shuffled
    random.Random(0).shuffle(order)
    return [rows[i] for i in order], [labels[i] for i in order]


def weather(n: int = 600, offset: int = 0) -> tuple[list[Input], list[str]]:
    rows, labels = _before_drift()
    return rows[offset:offset + n], labels[offset:offset + n]


@dataclass(frozen=True)
class TaskData:
    """A task's real data for the suite: ``corpus(n, offset)``; the constructor params every kind of the
    task needs; a label to leave out of a warm start; an input of another task."""

    corpus: Callable[..., tuple[list[Input], list[str]]]
    left_out: str
    foreign: Input
    params: dict[str, object] = field(default_factory=dict)


TASKS = {
    "text-classification": TaskData(texts, "neutral", {"text": "a row, not a text"}),
    "tabular-classification": TaskData(weather, "dry", "a text, not a row",
                                       {"features": RAINFALL_FEATURES.to_params()}),
}


# every kind with its defaults, the MiniLM head's and tfidf-logreg's other solvers, and blended tfidf-logregs (the
# demo's: char_wb n-grams + static WordPiece embeddings)
VARIANTS: dict[str, tuple[str, dict[str, object]]] = {
    **{kind: (kind, {}) for kind in sorted(KINDS)},
    "minilm-head-lbfgs": ("minilm-head", {"solver": "lbfgs", "c": 0.1}),
    "tfidf-logreg-lbfgs": ("tfidf-logreg", {"solver": "lbfgs"}),
    "tfidf-logreg-blend": ("tfidf-logreg", {"analyzer": "char_wb", "ngram_min": 2, "ngram_max": 5, "min_df": 2,
                                            "blend": {"analyzer": "word", "ngram_min": 1, "ngram_max": 2}}),
    "tfidf-logreg-wordpiece": ("tfidf-logreg", {"analyzer": "char_wb", "ngram_min": 2, "ngram_max": 5, "min_df": 2,
                                                "blend": {"analyzer": "wordpiece", "c": 10.0}}),
}


def task_of(model: ModelKind) -> TaskData:
    """The data of the first of the kind's tasks the suite has data for."""
    known = sorted(model.tasks & set(TASKS))
    assert known, f"{model.kind} serves {sorted(model.tasks)}: give the suite data for one of them"
    return TASKS[known[0]]


def _create(variant: str) -> ModelKind:
    kind, params = VARIANTS[variant]
    task = TASKS[sorted(KINDS[kind].tasks & set(TASKS))[0]]
    return create(kind, **task.params, **params)


@functools.cache
def _fitted_once(variant: str) -> ModelKind:
    """One fit per variant and test process, shared by the tests that only read it (a MiniLM fit embeds the
    whole corpus: 3-4 s idle, 10-19 s under the suite's load, and ~14 tests use one)."""
    model = _create(variant)
    inputs, labels = task_of(model).corpus()
    return model.fit(inputs, labels)


@pytest.fixture(params=sorted(VARIANTS))
def variant(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def model(variant: str) -> ModelKind:
    return _create(variant)


@pytest.fixture
def data(model: ModelKind) -> TaskData:
    return task_of(model)


@pytest.fixture
def fitted(variant: str) -> ModelKind:
    """The variant fitted on its task's corpus, shared: a test must not change it (``fresh`` for one that does)."""
    return _fitted_once(variant)


@pytest.fixture
def fresh(model: ModelKind, data: TaskData) -> ModelKind:
    """The variant fitted on its task's corpus for this test alone."""
    inputs, labels = data.corpus()
    return model.fit(inputs, labels)


def test_every_kind_names_a_task_the_suite_covers() -> None:
    for kind, cls in KINDS.items():
        assert cls.tasks and cls.tasks & set(TASKS), kind


def test_fit_predicts_every_label_with_probabilities(fitted: ModelKind, data: TaskData) -> None:
    inputs, _ = data.corpus(100, offset=2000)
    proba = fitted.predict_proba(inputs)
    assert proba.shape == (100, len(fitted.labels))
    assert np.all(proba >= 0) and np.allclose(proba.sum(axis=1), 1.0)
    assert fitted.labels == tuple(sorted(set(data.corpus()[1])))
    assert set(fitted.predict(inputs)) <= set(fitted.labels)


def test_predict_proba_parts_give_every_row_once_as_predict_proba_does(fitted: ModelKind, data: TaskData) -> None:
    inputs, _ = data.corpus(60, offset=2000)
    want = fitted.predict_proba(inputs)
    parts = list(fitted.predict_proba_parts(inputs))
    assert sorted(row for rows, _ in parts for row in rows) == list(range(len(inputs)))
    for rows, proba in parts:
        assert np.array_equal(proba, want[rows])  # bit for bit: what the serving micro-batcher answers


def test_better_than_chance_on_held_out_real_data(fitted: ModelKind, data: TaskData) -> None:
    inputs, labels = data.corpus(400, offset=3000)
    accuracy = np.mean([p == y for p, y in zip(fitted.predict(inputs), labels, strict=True)])
    majority = max(labels.count(lbl) for lbl in set(labels)) / len(labels)
    assert accuracy > majority + 0.05, (accuracy, majority)


def test_save_load_round_trip_is_identical_and_pickle_free(fitted: ModelKind, data: TaskData,
                                                           tmp_path: Path) -> None:
    manifest = fitted.save(tmp_path / "m")
    assert manifest["kind"] == fitted.kind and len(manifest["sha256"]) == 64
    for path in (tmp_path / "m").iterdir():
        assert path.suffix in {".json", ".npz", ".safetensors", ".txt", ".onnx"}, path
        if path.suffix == ".npz":
            with zipfile.ZipFile(path) as archive:
                assert all(name.endswith(".npy") for name in archive.namelist())
            np.load(path, allow_pickle=False)
        elif path.suffix == ".json":
            json.loads(path.read_text())
        elif path.suffix == ".txt":
            path.read_text(encoding="utf-8")  # a library's text model format
        elif path.suffix == ".onnx":  # a protobuf graph (minilm-head's exported encoder): no code in it
            import onnx

            onnx.checker.check_model(str(path))
        else:  # safetensors: an 8-byte header length, then the JSON header
            raw = path.read_bytes()
            json.loads(raw[8:8 + int.from_bytes(raw[:8], "little")])
    loaded = load_model(tmp_path / "m")
    inputs, _ = data.corpus(50, offset=5000)
    assert loaded.labels == fitted.labels and loaded.params == fitted.params
    assert np.array_equal(loaded.predict_proba(inputs), fitted.predict_proba(inputs))


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


def test_fit_is_deterministic_with_a_seed(model: ModelKind, data: TaskData, fitted: ModelKind) -> None:
    inputs, labels = data.corpus()
    a = model.fit(inputs, labels).predict_proba(inputs[:50])  # a fit of its own, against the shared one's
    assert model is not fitted and np.array_equal(a, fitted.predict_proba(inputs[:50]))


def test_warm_start_keeps_the_label_set_and_learns(fresh: ModelKind, data: TaskData) -> None:
    inputs, labels = data.corpus(200, offset=1000)
    fewer = [(x, y) for x, y in zip(inputs, labels, strict=True) if y != data.left_out]
    before = fresh.labels
    assert data.left_out in before and fewer
    fresh.partial_fit([x for x, _ in fewer], [y for _, y in fewer])
    assert fresh.labels == before
    proba = fresh.predict_proba(inputs[:5])
    assert proba.shape == (5, len(before)) and np.allclose(proba.sum(axis=1), 1.0)
    with pytest.raises(UnknownLabel):
        fresh.partial_fit(inputs[:1], ["furious"])


def test_inputs_of_another_task_are_refused(fitted: ModelKind, data: TaskData) -> None:
    with pytest.raises(KindError):
        fitted.predict_proba([data.foreign])
    with pytest.raises(KindError):
        fitted.clone().fit([data.foreign, data.foreign], ["a", "b"])


def test_unfitted_models_say_so(model: ModelKind, data: TaskData, tmp_path: Path) -> None:
    with pytest.raises(NotFitted):
        model.predict_proba(data.corpus(1)[0])
    with pytest.raises(NotFitted):
        model.save(tmp_path)


def test_params_are_the_whole_configuration(fitted: ModelKind) -> None:
    clone = fitted.clone()
    assert clone.params == fitted.params and not clone.fitted
    assert repr(clone) == repr(fitted)
    assert type(fitted)(**fitted.params).params == fitted.params
