"""``minilm-head`` beyond the conformance suite: sample weights, the hidden layer, warm starts, the
injected embedder. Heads train on the fake ``HashingEncoder`` here (the suite covers the real model)."""

from __future__ import annotations

import csv
import functools
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from kinds import Embedder, KindError, MiniLMHead, Resources, create, load_model
from tests.fakes import HashingEncoder

DATA = Path(__file__).resolve().parents[2] / "data" / "vader_movies.csv"


@functools.cache
def _rows() -> tuple[tuple[str, str], ...]:
    with DATA.open(newline="") as fh:
        rows = [(r["text"], r["label3"]) for r in csv.DictReader(fh)]
    random.Random(1).shuffle(rows)
    return tuple(rows)


def corpus(n: int, offset: int = 0) -> tuple[list[str], list[str]]:
    rows = _rows()[offset:offset + n]
    return [t for t, _ in rows], [y for _, y in rows]


@pytest.fixture
def embedder() -> Embedder:
    return Embedder(HashingEncoder())


def mean_proba(head: MiniLMHead, texts: list[str], label: str) -> float:
    return float(head.predict_proba(texts)[:, head.labels.index(label)].mean())


def test_sample_weights_are_honoured(embedder: Embedder) -> None:
    texts, labels = corpus(600)
    probe, _ = corpus(200, offset=1000)
    plain = MiniLMHead(epochs=10).use(embedder).fit(texts, labels)
    muted = [0.0 if y == "positive" else 1.0 for y in labels]
    without_positives = MiniLMHead(epochs=10).use(embedder).fit(texts, labels, muted)
    assert without_positives.labels == plain.labels
    assert mean_proba(without_positives, probe, "positive") < mean_proba(plain, probe, "positive") / 2
    doubled = MiniLMHead(epochs=10).use(embedder).fit(texts, labels, [2.0] * len(texts))
    assert np.allclose(doubled.predict_proba(probe), plain.predict_proba(probe), atol=1e-5)  # scale-free
    for bad in ([-1.0] * len(texts), [0.0] * len(texts), [1.0]):
        with pytest.raises(KindError, match="weights"):
            MiniLMHead(epochs=1).use(embedder).fit(texts, labels, bad)


def test_balanced_classes_lift_the_minority(embedder: Embedder) -> None:
    texts, labels = corpus(600)
    probe, _ = corpus(200, offset=1000)
    minority = min(set(labels), key=labels.count)
    plain = MiniLMHead(epochs=10).use(embedder).fit(texts, labels)
    balanced = MiniLMHead(epochs=10, balanced=True).use(embedder).fit(texts, labels)
    assert mean_proba(balanced, probe, minority) > mean_proba(plain, probe, minority)


def test_hidden_layer_head_is_deterministic_and_round_trips(embedder: Embedder, tmp_path: Path) -> None:
    texts, labels = corpus(300)
    a = MiniLMHead(hidden=32, epochs=5, seed=7).use(embedder).fit(texts, labels)
    b = MiniLMHead(hidden=32, epochs=5, seed=7).use(embedder).fit(texts, labels)
    c = MiniLMHead(hidden=32, epochs=5, seed=8).use(embedder).fit(texts, labels)
    assert np.array_equal(a.predict_proba(texts[:30]), b.predict_proba(texts[:30]))
    assert not np.array_equal(a.predict_proba(texts[:30]), c.predict_proba(texts[:30]))
    a.save(tmp_path / "m")
    assert {p.name for p in (tmp_path / "m").iterdir()} == {"manifest.json", "head.safetensors", "encoder.json"}
    loaded = load_model(tmp_path / "m", resources=Resources(embedder=embedder))
    assert np.array_equal(loaded.predict_proba(texts[:30]), a.predict_proba(texts[:30]))


def test_warm_start_moves_towards_the_new_samples(embedder: Embedder) -> None:
    texts, labels = corpus(400)
    head = MiniLMHead(epochs=5).use(embedder).fit(texts, labels)
    new, _ = corpus(100, offset=2000)
    before = mean_proba(head, new, "negative")
    head.partial_fit(new, ["negative"] * len(new))
    assert mean_proba(head, new, "negative") > before + 0.1


def test_create_binds_the_given_resources_and_a_head_given_none_has_its_own(embedder: Embedder) -> None:
    resources = Resources(embedder=embedder)
    head, own, other = create("minilm-head", resources=resources), create("minilm-head"), create("minilm-head")
    assert isinstance(head, MiniLMHead) and isinstance(own, MiniLMHead) and isinstance(other, MiniLMHead)
    assert head.embedder is embedder
    assert own.embedder is own.embedder and own.embedder is not other.embedder  # made once, its own
    assert create("tfidf-logreg", resources=resources).params == create("tfidf-logreg").params


def test_clone_keeps_the_embedder_and_threads_are_left_as_found(embedder: Embedder) -> None:
    threads = torch.get_num_threads()
    head = MiniLMHead(epochs=2).use(embedder)
    assert head.clone().embedder is embedder and MiniLMHead().embedder is not embedder
    texts, labels = corpus(100)
    head.fit(texts, labels).predict_proba(texts)
    assert torch.get_num_threads() == threads


def test_one_label_or_unpaired_labels_are_refused(embedder: Embedder) -> None:
    with pytest.raises(KindError, match="two labels"):
        MiniLMHead().use(embedder).fit(["a", "b"], ["x", "x"])
    with pytest.raises(KindError, match="as many labels as texts"):
        MiniLMHead().use(embedder).fit(["a", "b", "c"], ["x", "y"])


@pytest.mark.parametrize("binary", [False, True])
def test_lbfgs_solves_to_the_regularised_optimum_whatever_the_seed(embedder: Embedder, binary: bool) -> None:
    from sklearn.linear_model import LogisticRegression

    texts, labels = corpus(500)
    if binary:
        labels = ["negative" if y == "negative" else "other" for y in labels]
    probe, _ = corpus(100, offset=1000)
    weights = [0.2 if i % 3 else 1.0 for i in range(len(texts))]
    a = MiniLMHead(solver="lbfgs", c=0.3, seed=1).use(embedder).fit(texts, labels, weights)
    b = MiniLMHead(solver="lbfgs", c=0.3, seed=2).use(embedder).fit(texts, labels, weights)
    assert np.array_equal(a.predict_proba(probe), b.predict_proba(probe)), "the optimum, not a seed's path"
    # scikit-learn's logistic regression on the same vectors, with the weights scaled to mean 1
    x = embedder.embed(texts)
    w = np.asarray(weights) / np.mean(weights)
    reference = LogisticRegression(C=0.3, max_iter=2000, tol=1e-6).fit(x, labels, sample_weight=w)
    assert tuple(reference.classes_) == a.labels
    assert np.allclose(a.predict_proba(probe), reference.predict_proba(embedder.embed(probe)), atol=1e-4)
    # stronger regularisation pulls the probabilities towards the class shares
    loose = MiniLMHead(solver="lbfgs", c=10.0).use(embedder).fit(texts, labels, weights)
    assert a.predict_proba(probe).max(axis=1).mean() < loose.predict_proba(probe).max(axis=1).mean()


def test_an_lbfgs_head_round_trips_and_warm_starts_with_adamw(embedder: Embedder, tmp_path: Path) -> None:
    texts, labels = corpus(400)
    head = MiniLMHead(solver="lbfgs", c=0.1, epochs=5).use(embedder).fit(texts, labels)
    head.save(tmp_path / "m")
    loaded = load_model(tmp_path / "m", resources=Resources(embedder=embedder))
    assert loaded.params == head.params and loaded.params["solver"] == "lbfgs"
    assert np.array_equal(loaded.predict_proba(texts[:30]), head.predict_proba(texts[:30]))
    new, _ = corpus(100, offset=2000)
    before = mean_proba(head, new, "negative")
    head.partial_fit(new, ["negative"] * len(new))
    assert mean_proba(head, new, "negative") > before + 0.1


@pytest.mark.parametrize(("params", "error"), [
    ({"solver": "sgd"}, "unknown solver 'sgd'"),
    ({"solver": "lbfgs", "hidden": 16}, "linear head only"),
    ({"solver": "lbfgs", "c": 0.0}, "c must be a positive number"),
    ({"c": float("nan")}, "c must be a positive number"),
])
def test_bad_solver_settings_are_refused(params: dict[str, object], error: str) -> None:
    with pytest.raises(KindError, match=error):
        MiniLMHead(**params)  # type: ignore[arg-type]
