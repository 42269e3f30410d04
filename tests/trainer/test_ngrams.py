"""N-grams counted once per run (kinds.ngrams): each subset's TF-IDF, derived by column selection, is the
one ``TfidfVectorizer`` fits on that subset, and a tfidf-logreg fitted inside the block is the model
fitted outside it. Real data: the demo corpus and target stream."""

from __future__ import annotations

import random

import numpy as np
import pytest
from sklearn.feature_extraction.text import TfidfVectorizer

from kinds import TfidfLogReg
from kinds.ngrams import NgramCounts, counted_once, shared_tfidf

from .lifecycle_helpers import rows


def _texts() -> list[str]:
    corpus = [r.text for r in rows("vader_movies")[:3000]] + [r.text for r in rows("vader_tweets")[:600]]
    return corpus + corpus[:50]  # repeated texts are counted once and selected twice


@pytest.mark.parametrize(("analyzer", "ngram_min", "ngram_max", "min_df", "max_features"),
                         [("word", 1, 2, 1, 50_000), ("word", 1, 1, 1, None), ("word", 1, 2, 2, 8_000),
                          ("char_wb", 2, 5, 2, 50_000)])  # the demo's tfidf-logreg: character n-grams inside words
def test_each_folds_tfidf_is_the_vectorizer_fitted_on_that_fold(analyzer: str, ngram_min: int, ngram_max: int,
                                                                  min_df: int, max_features: int | None) -> None:
    texts = _texts()
    counts = NgramCounts(texts, ngram_max, analyzer, ngram_min)
    order = list(range(len(texts)))
    random.Random(3).shuffle(order)
    for k in range(3):
        fold = set(order[k::5])
        subset = [texts[i] for i in range(len(texts)) if i not in fold]
        expected = TfidfVectorizer(analyzer=analyzer, ngram_range=(ngram_min, ngram_max), min_df=min_df,
                                   max_features=max_features,
                                   sublinear_tf=True, lowercase=True, dtype=np.float64)
        want = expected.fit_transform(subset)
        rows_ = counts.rows(subset)
        assert rows_ is not None
        got = counts.tfidf(rows_, min_df=min_df, max_features=max_features)
        assert got.vocabulary == {str(t): int(i) for t, i in expected.vocabulary_.items()}
        assert np.array_equal(got.idf, expected.idf_)
        assert got.matrix.shape == want.shape
        assert abs(got.matrix - want).max() < 1e-15


def test_a_fit_inside_the_block_is_the_fit_outside_it_and_unknown_texts_fall_back() -> None:
    data = rows("vader_movies")[:1500]
    texts, labels = [r.text for r in data], [r.label for r in data]
    weights = [0.2 if i % 3 else 1.0 for i in range(len(texts))]
    plain = TfidfLogReg(seed=1).fit(texts[200:], labels[200:], weights[200:])
    with counted_once(texts):
        shared = TfidfLogReg(seed=1).fit(texts[200:], labels[200:], weights[200:])
        assert shared_tfidf(["a text nobody counted"], ngram_max=2, min_df=1, max_features=None) is None
        fallback = TfidfLogReg(seed=1).fit([*texts[200:], "a text nobody counted"], [*labels[200:], "neutral"])
    assert shared_tfidf(texts, ngram_max=2, min_df=1, max_features=None) is None  # outside the block
    probe = texts[:200]
    assert np.abs(plain.predict_proba(probe) - shared.predict_proba(probe)).max() < 1e-9
    assert plain.predict(probe) == shared.predict(probe)
    assert len(fallback.predict(probe)) == 200
