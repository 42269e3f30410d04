"""N-grams (word or ``char_wb``) counted once per training run, each fit's TF-IDF derived from them by column selection.

A full run fits ``tfidf-logreg`` many times on subsets of the same texts: one fit per corpus weight on the
whole frame and one per cross-fit fold (the frame without the fold), and the champion's recipe refit per
fold. ``TfidfVectorizer.fit_transform`` tokenises and counts every text again each time (10.2 s of the
12 fits of a demo run, issue 18). Inside :func:`counted_once`, the texts are counted once
(``CountVectorizer``, alphabetical vocabulary), and a fit on any subset of them takes the subset's rows,
keeps the columns present in them, applies ``min_df`` and ``max_features`` exactly as scikit-learn does
(the same document frequencies, the same ``argsort`` of the same term totals) and weights them with
``TfidfTransformer``: the vectorizer scikit-learn would have fitted on the subset, features equal to
~1e-16 (tests/kinds/test_ngrams.py). A fit on texts outside the counted set fits as before.

Derived matrices are kept for the run (a few, by subset): the fits of two corpus weights on the same rows
share them."""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    from scipy.sparse import csr_matrix

__all__ = ["NgramCounts", "TfidfFeatures", "counted_once", "counted_texts", "shared_tfidf"]

_KEEP = 24  # derived feature matrices kept per run: 2 recipes x (1 + folds) + the champion's folds


@dataclass(frozen=True)
class TfidfFeatures:
    """What ``TfidfVectorizer(sublinear_tf=True)`` fitted on some texts holds: its vocabulary (term ->
    column), idf, and the texts' feature matrix."""

    vocabulary: dict[str, int]
    idf: npt.NDArray[np.float64]
    matrix: csr_matrix


@dataclass
class NgramCounts:
    """The ``ngram_min``..``ngram_max``-gram counts (``analyzer``: ``word`` or ``char_wb``, as the
    vectorizer's) of a set of texts (one row per distinct text)."""

    texts: Sequence[str]
    ngram_max: int
    analyzer: str = "word"
    ngram_min: int = 1
    _derived: dict[tuple[Any, ...], TfidfFeatures] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        from sklearn.feature_extraction.text import CountVectorizer

        distinct = list(dict.fromkeys(self.texts))
        self.row_of = {text: i for i, text in enumerate(distinct)}
        counter = CountVectorizer(analyzer=self.analyzer, ngram_range=(self.ngram_min, self.ngram_max),
                                  lowercase=True, dtype=np.float64)
        self.counts: csr_matrix = counter.fit_transform(distinct).tocsr()  # columns in alphabetical order
        self.terms = counter.get_feature_names_out()

    def rows(self, texts: Sequence[str]) -> list[int] | None:
        """Each text's row, or None when one was not counted."""
        found = [self.row_of.get(t, -1) for t in texts]
        return None if -1 in found else found

    def tfidf(self, rows: Sequence[int], *, min_df: int, max_features: int | None) -> TfidfFeatures:
        """The TF-IDF a vectorizer fitted on the texts of ``rows`` (in that order) gives them."""
        from sklearn.feature_extraction.text import TfidfTransformer

        key = (hashlib.sha256(np.asarray(rows, dtype=np.int64).tobytes()).digest(), min_df, max_features)
        if (found := self._derived.get(key)) is not None:
            return found
        counts = self.counts[np.asarray(rows, dtype=np.int64)]
        df = np.bincount(counts.indices, minlength=counts.shape[1])
        present = np.flatnonzero(df)  # the subset's own vocabulary, still alphabetical
        counts = counts[:, present]
        mask = df[present] >= min_df
        if max_features is not None and mask.sum() > max_features:  # CountVectorizer._limit_features
            totals = np.asarray(counts.sum(axis=0)).ravel()
            keep = (-totals[mask]).argsort()[:max_features]
            limited = np.zeros(len(mask), dtype=bool)
            limited[np.flatnonzero(mask)[keep]] = True
            mask = limited
        columns = np.flatnonzero(mask)
        if len(columns) == 0:
            raise ValueError("After pruning, no terms remain. Try a lower min_df or a higher max_df.")
        counts = counts[:, columns]
        transformer = TfidfTransformer(sublinear_tf=True).fit(counts)
        terms = self.terms[present[columns]]
        found = TfidfFeatures({str(t): i for i, t in enumerate(terms)}, transformer.idf_,
                              transformer.transform(counts, copy=False))
        if len(self._derived) >= _KEEP:
            self._derived.pop(next(iter(self._derived)))
        self._derived[key] = found
        return found


@dataclass
class _Counted:
    texts: Sequence[str]
    key: str
    by_ngram: dict[tuple[str, int, int], NgramCounts] = field(default_factory=dict)


_current: contextvars.ContextVar[_Counted | None] = contextvars.ContextVar("kinds_ngrams_counted", default=None)


@contextlib.contextmanager
def counted_once(texts: Sequence[str], *, key: str | None = None) -> Iterator[None]:
    """Within the block, a ``tfidf-logreg`` fit on texts that are all among ``texts`` derives its features
    from counts made once (per n-gram range, on the first such fit). ``key`` names the block (default: a
    new one): a fit worker enters a block of the same texts and key once per run (:mod:`trainer.fitpool`)."""
    token = _current.set(_Counted(list(texts), key or uuid.uuid4().hex))
    try:
        yield
    finally:
        _current.reset(token)


def counted_texts() -> tuple[str, Sequence[str]] | None:
    """The enclosing :func:`counted_once` block's key and texts (None outside one)."""
    counted = _current.get()
    return None if counted is None else (counted.key, counted.texts)


def shared_tfidf(texts: Sequence[str], *, ngram_max: int, min_df: int, max_features: int | None,
                 analyzer: str = "word", ngram_min: int = 1) -> TfidfFeatures | None:
    """The features of ``texts`` from the enclosing :func:`counted_once`, or None (no block, or a text the
    block did not count)."""
    counted = _current.get()
    if counted is None:
        return None
    grams = (analyzer, ngram_min, ngram_max)
    counts = counted.by_ngram.get(grams)
    if counts is None:
        counts = counted.by_ngram[grams] = NgramCounts(counted.texts, ngram_max, analyzer, ngram_min)
    rows = counts.rows(texts)
    return None if rows is None else counts.tfidf(rows, min_df=min_df, max_features=max_features)
