"""The MiniLM encoder's int8 precisions and the scikit-learn-free tfidf-logreg predictions."""

from __future__ import annotations

import csv
import random
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from kinds import (
    Embedder,
    Encoder,
    EncoderError,
    KindError,
    MemoryEmbeddingCache,
    MiniLMHead,
    TfidfLogReg,
    load_model,
    shared_encoder,
)
from tests.fakes import HashingEncoder

DATA = Path(__file__).resolve().parents[2] / "data"


def rows(n: int, offset: int = 0) -> tuple[list[str], list[str]]:
    with (DATA / "vader_movies.csv").open(newline="") as fh:
        found = list(csv.DictReader(fh))
    random.Random(3).shuffle(found)
    return [r["text"] for r in found[offset:offset + n]], [r["label3"] for r in found[offset:offset + n]]


@pytest.fixture(scope="module")
def int8() -> Encoder:
    return shared_encoder().with_precision("int8")


def test_the_precision_is_part_of_the_encoder_id_and_unknown_ones_are_refused(int8: Encoder) -> None:
    fp32 = shared_encoder()
    assert fp32.with_precision("fp32") is fp32
    assert int8.encoder_id == fp32.encoder_id + ":int8"
    assert fp32.with_precision("int8-all").encoder_id == fp32.encoder_id + ":int8-all"
    with pytest.raises(EncoderError):
        Encoder(precision="int4")  # type: ignore[arg-type]
    with pytest.raises(KindError):
        MiniLMHead(precision="fp16")  # type: ignore[arg-type]


def test_an_int8_vector_does_not_depend_on_its_batch_or_on_concurrent_calls(int8: Encoder) -> None:
    texts, _ = rows(24)
    together = int8.encode(texts)
    alone = np.concatenate([int8.encode([t]) for t in texts])
    with ThreadPoolExecutor(4) as pool:
        concurrent = np.concatenate(list(pool.map(lambda t: int8.encode([t]), texts)))
    assert np.array_equal(together, alone) and np.array_equal(concurrent, alone)
    assert np.allclose(np.linalg.norm(alone, axis=1), 1.0, atol=1e-5)
    cosine = (alone * shared_encoder().encode(texts)).sum(axis=1)
    assert cosine.mean() > 0.95, cosine  # close to fp32, not equal


def test_a_head_embeds_at_its_precision_through_the_embedder_it_is_given(int8: Encoder, tmp_path: Path) -> None:
    cache = MemoryEmbeddingCache()
    texts, labels = rows(300)
    head = MiniLMHead(epochs=3, precision="int8").use(Embedder(shared_encoder(), cache)).fit(texts, labels)
    assert head.embedder.encoder_id == int8.encoder_id and head.embedder.cache is cache
    head.save(tmp_path)
    loaded = load_model(tmp_path)
    assert isinstance(loaded, MiniLMHead) and loaded.params["precision"] == "int8"
    loaded.use(Embedder(shared_encoder(), MemoryEmbeddingCache()))  # an fp32 pod embedder: used at int8
    test, _ = rows(50, offset=1000)
    assert np.allclose(loaded.predict_proba(test), head.predict_proba(test))
    fake = MiniLMHead(epochs=1, precision="int8").use(Embedder(HashingEncoder()))  # the fake: used as given
    assert fake.embedder.encoder_id.startswith("hashing:")


def test_tfidf_predictions_equal_scikit_learns() -> None:
    texts, labels = rows(1500)
    test, _ = rows(500, offset=1500)
    test += ["", "!!", "a b", "ÀÉÎ straße naïve café", "the the the movie movie", "  tabs\tand\n\nnew  lines ",
             "a ab abc abcd abcde"]
    for model in (TfidfLogReg().fit(texts, labels),
                  TfidfLogReg(ngram_max=3).fit(texts, ["good" if y == "positive" else "bad" for y in labels]),
                  TfidfLogReg(analyzer="char_wb", ngram_min=2, ngram_max=5, min_df=2).fit(texts, labels),
                  TfidfLogReg(analyzer="char_wb", ngram_min=1, ngram_max=3).fit(texts, labels)):
        vectorizer, clf = model._sklearn()
        expected = clf.predict_proba(vectorizer.transform(test))
        assert np.allclose(model.predict_proba(test), expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("params", [{}, {"analyzer": "char_wb", "ngram_min": 2, "ngram_max": 5},
                                    {"analyzer": "char_wb", "ngram_min": 2, "ngram_max": 5,
                                     "blend": {"analyzer": "word", "ngram_min": 1, "ngram_max": 2}},
                                    {"analyzer": "char_wb", "ngram_min": 2, "ngram_max": 5,
                                     "blend": {"analyzer": "wordpiece", "c": 10.0}}])
def test_a_loaded_tfidf_model_predicts_without_scikit_learn_objects_and_still_warm_starts(
        tmp_path: Path, params: dict[str, object]) -> None:
    texts, labels = rows(800)
    model = TfidfLogReg(**params).fit(texts, labels)  # type: ignore[arg-type]
    model.save(tmp_path)
    loaded = load_model(tmp_path)
    assert loaded.params == model.params
    assert isinstance(loaded, TfidfLogReg) and loaded._vectorizer is None
    assert loaded._blend is None or loaded._blend._vectorizer is None  # a blend's second model: numpy too
    assert np.array_equal(loaded.predict_proba(texts[:50]), model.predict_proba(texts[:50]))
    more, more_labels = rows(200, offset=800)
    loaded.partial_fit(more, more_labels)
    assert loaded.labels == model.labels and loaded.predict_proba(more).shape == (200, 3)


def test_tfidf_word_defaults_keep_their_params_and_bad_analyzers_are_refused() -> None:
    # a word model's params are what they were before char n-grams existed: a champion saved then is
    # still the same recipe as a word candidate now (the refresh check compares params)
    assert TfidfLogReg(analyzer="word", ngram_min=1).params == TfidfLogReg().params
    assert "analyzer" not in TfidfLogReg().params
    with pytest.raises(KindError, match="analyzer"):
        TfidfLogReg(analyzer="char")
    with pytest.raises(KindError, match="ngram_min"):
        TfidfLogReg(analyzer="char_wb", ngram_min=3, ngram_max=2)
