"""tfidf-logreg's ``blend`` (issue 18): one model that fits a second tfidf-logreg (its params updated with the
blend's) on the same rows and weights and predicts the mean of the two probability vectors, through every
path a tfidf-logreg goes: fit, warm starts, partial_fit, save/load, n-grams counted once per run, and a
real full run of the trainer with the demo's policy. Real data, real fits (no mocks of the model)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from core.settings import FlywheelSettings
from flywheel.lifecycle import Lifecycle, lifecycle
from kinds import KindError, TamperedArtifact, create, load_model
from kinds.ngrams import counted_once, shared_counts
from registry import CHALLENGER

from .lifecycle_helpers import DEMO_CANARY_CONFIG, land_feedback, rows

CHAR_WB = {"analyzer": "char_wb", "ngram_min": 2, "ngram_max": 5, "min_df": 2}  # the demo's features
WORD = {"analyzer": "word", "ngram_min": 1, "ngram_max": 2}
BLENDED: dict[str, Any] = {**CHAR_WB, "blend": WORD}


def _data() -> tuple[list[str], list[str], list[float], list[str]]:
    corpus, stream = rows("vader_movies")[:1500], rows("vader_tweets")[:400]
    texts = [r.text for r in corpus] + [r.text for r in stream[:200]]
    labels = [r.label for r in corpus] + [r.label for r in stream[:200]]
    return texts, labels, [0.2] * len(corpus) + [1.0] * 200, [r.text for r in stream[200:]]


def _mean(first: Any, second: Any, held: list[str]) -> Any:
    return (first.predict_proba(held) + second.predict_proba(held)) / 2


def test_a_blend_predicts_the_mean_of_its_two_models_fitted_apart() -> None:
    texts, labels, weights, held = _data()
    blended = create("tfidf-logreg", **BLENDED).fit(texts, labels, weights)
    char = create("tfidf-logreg", **CHAR_WB).fit(texts, labels, weights)
    word = create("tfidf-logreg", **{**CHAR_WB, **WORD}).fit(texts, labels, weights)  # the blend over the first
    proba = blended.predict_proba(held)
    assert blended.labels == char.labels == ("negative", "neutral", "positive")
    assert np.abs(proba - _mean(char, word, held)).max() < 1e-12
    assert np.allclose(proba.sum(axis=1), 1.0) and blended.predict(held) == [
        blended.labels[i] for i in proba.argmax(axis=1)]
    assert blended.params == {**CHAR_WB, "c": 4.0, "max_features": 50_000, "max_iter": 300, "seed": 0, "blend": WORD}
    assert "blend" not in create("tfidf-logreg", **CHAR_WB).params  # unblended: the params as before
    assert blended.clone().params == blended.params and not blended.clone().fitted


def test_a_blend_saves_both_models_pinned_and_loads_to_the_same_predictions(tmp_path: Path) -> None:
    texts, labels, weights, held = _data()
    blended = create("tfidf-logreg", **BLENDED).fit(texts, labels, weights)
    manifest = blended.save(tmp_path / "m")
    assert set(manifest["files"]) == {"vocabulary.json", "weights.npz", "blend-vocabulary.json", "blend-weights.npz"}
    loaded = load_model(tmp_path / "m")
    assert loaded.params == blended.params and loaded.labels == blended.labels
    assert np.array_equal(loaded.predict_proba(held), blended.predict_proba(held))  # the plain-numpy scorers
    plain = create("tfidf-logreg", **CHAR_WB).fit(texts, labels, weights).save(tmp_path / "plain")
    assert set(plain["files"]) == {"vocabulary.json", "weights.npz"}  # an unblended artifact as before
    weights_file = tmp_path / "m" / "blend-weights.npz"
    weights_file.write_bytes(weights_file.read_bytes() + b"\0")
    with pytest.raises(TamperedArtifact):
        load_model(tmp_path / "m")


def test_partial_fit_continues_both_models(tmp_path: Path) -> None:
    texts, labels, weights, held = _data()
    more = rows("vader_tweets")[400:520]
    new, new_labels = [r.text for r in more], [r.label for r in more]
    blended = create("tfidf-logreg", **BLENDED).fit(texts, labels, weights)
    blended.save(tmp_path / "m")
    char = create("tfidf-logreg", **CHAR_WB).fit(texts, labels, weights).partial_fit(new, new_labels)
    word = create("tfidf-logreg", **{**CHAR_WB, **WORD}).fit(texts, labels, weights).partial_fit(new, new_labels)
    before = blended.predict_proba(held)
    blended.partial_fit(new, new_labels)
    assert np.abs(blended.predict_proba(held) - _mean(char, word, held)).max() < 1e-12
    assert np.abs(blended.predict_proba(held) - before).max() > 1e-3  # both moved on the new samples
    # a loaded blend continues as the one in memory (its scikit-learn objects rebuilt from the saved weights)
    loaded = load_model(tmp_path / "m").partial_fit(new, new_labels)
    assert np.abs(loaded.predict_proba(held) - blended.predict_proba(held)).max() < 1e-9


def test_a_blend_starts_each_model_at_the_champions_own() -> None:
    texts, labels, weights, held = _data()
    champion = create("tfidf-logreg", **BLENDED).fit(texts[:1600], labels[:1600], weights[:1600])
    cold = create("tfidf-logreg", **BLENDED).fit(texts, labels, weights)
    started = create("tfidf-logreg", **BLENDED).starting_at(champion.solution())
    assert started._blend is not None and started._blend._start is not None  # the word model's own start
    started.fit(texts, labels, weights)
    assert np.abs(started.predict_proba(held) - cold.predict_proba(held)).max() < 0.02  # the same optimum
    assert started._sklearn()[1].warm_start and started._blend is not None and started._blend._sklearn()[1].warm_start
    # at an unblended champion's solution: the first model starts there, the second from zero
    plain = create("tfidf-logreg", **CHAR_WB).fit(texts[:1600], labels[:1600], weights[:1600])
    half = create("tfidf-logreg", **BLENDED).starting_at(plain.solution()).fit(texts, labels, weights)
    assert half._sklearn()[1].warm_start and half._blend is not None and not half._blend._sklearn()[1].warm_start
    assert np.abs(half.predict_proba(held) - cold.predict_proba(held)).max() < 0.02


def test_a_fit_inside_the_counting_block_is_the_fit_outside_it_with_both_gram_sets_counted_once() -> None:
    texts, labels, weights, held = _data()
    outside = create("tfidf-logreg", **BLENDED).fit(texts[100:], labels[100:], weights[100:])
    with counted_once(texts):
        shared = shared_counts(BLENDED)
        assert shared is not None and set(shared.files) == {("char_wb", 2, 5), ("word", 1, 2)}
        assert all(path.is_file() for path in shared.files.values())
        inside = create("tfidf-logreg", **BLENDED).fit(texts[100:], labels[100:], weights[100:])
    assert np.abs(inside.predict_proba(held) - outside.predict_proba(held)).max() < 1e-9


@pytest.mark.parametrize(("blend", "message"), [
    ({**WORD, "blend": WORD}, "no blend inside a blend"),
    ({"analyzer": "char"}, "analyzer must be one of"),
    ({"seed": 3}, r"blend takes \("),
    ({"ngram_min": 3, "ngram_max": 2}, "ngram_min <= ngram_max"),
    ({}, "non-empty dict"),
    ("word", "non-empty dict"),
    ({"analyzer": "char_wb"}, "changes none of the model's params"),
])
def test_a_bad_blend_is_a_clear_kind_error(blend: Any, message: str) -> None:
    with pytest.raises(KindError, match=message):
        create("tfidf-logreg", **{**CHAR_WB, "blend": blend})


@pytest.fixture
def lc_blend(settings: FlywheelSettings, registry_db_url: str) -> Iterator[Lifecycle]:
    """The demo's policy (canary mode) with a blended tfidf-logreg as the kind's params; fold fits in 2 fit
    workers."""
    config = DEMO_CANARY_CONFIG.model_copy(update={"workers": 2, "policy": DEMO_CANARY_CONFIG.policy.model_copy(
        update={"kind_params": {"tfidf-logreg": BLENDED}})})
    with lifecycle(settings, settings.kafka_connection(), registry_db_url, config) as found:
        yield found


def test_the_trainer_trains_and_registers_a_blended_candidate(lc_blend: Lifecycle, registry_db_url: str) -> None:
    """A real full run with blended params: a bootstrap champion, a full run on tweets feedback whose blended
    candidates (fold fits in workers, n-grams counted once) pass the gates, the registered version loads as
    the blend; then a run against that blended full-mode champion (its recipe refit per fold, every fit
    started at its solution, both parts)."""
    boot = lc_blend.trainer.bootstrap(rows("vader_movies")[:2500], source="vader_movies.csv", kind="tfidf-logreg")
    assert boot.status == "promoted", boot.reason
    land_feedback(registry_db_url, rows("vader_tweets")[:300], seed=18)
    first = lc_blend.trainer.maybe_train("admin", requested="full")
    assert first.status == "canary" and first.version is not None, first.reason
    model = lc_blend.registry.load(first.version.version, lc_blend.trainer.resources)
    assert model.params["blend"] == WORD and model._blend is not None  # type: ignore[attr-defined]
    probe = [r.text for r in rows("vader_tweets")[450:500]]
    assert np.allclose(model.predict_proba(probe).sum(axis=1), 1.0)
    lc_blend.promote(CHALLENGER, "a blended full-mode champion for the next run")
    land_feedback(registry_db_url, rows("vader_tweets")[300:450], seed=19)
    second = lc_blend.trainer.maybe_train("admin", requested="full")
    assert second.status == "canary" and second.version is not None, second.reason  # a refresh, non-inferior
    assert all("for the champion too" in c["verdicts"][0]["reason"] for c in second.candidates)
    assert lc_blend.registry.load(second.version.version, lc_blend.trainer.resources).params == model.params
