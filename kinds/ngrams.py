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
share them.

A ``wordpiece`` tfidf-logreg (:mod:`kinds.wordpiece`) has no n-grams: inside the block its static embeddings
are computed once per distinct text and each fit takes its rows; a fit worker loads them from a file as it
loads counts, and texts a run only predicts (its holdout, read again for every candidate) are embedded once
and kept for the block too (:func:`wordpiece_vectors`)."""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import shutil
import tempfile
import threading
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from kinds.wordpiece import StaticEmbeddings, static_embeddings

if TYPE_CHECKING:
    from scipy.sparse import csr_matrix

__all__ = ["NgramCounts", "SharedCounts", "TfidfFeatures", "counted_once", "shared_counts", "shared_tfidf",
           "use_counts", "wordpiece_vectors"]

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
    source: Path | None = None  # counts :meth:`save` d by another process for the same texts: loaded, not counted
    _derived: dict[tuple[Any, ...], TfidfFeatures] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        from scipy.sparse import csr_matrix
        from sklearn.feature_extraction.text import CountVectorizer

        distinct = list(dict.fromkeys(self.texts))
        self.row_of = {text: i for i, text in enumerate(distinct)}
        if self.source is not None:
            with np.load(self.source, allow_pickle=False) as saved:
                self.counts = csr_matrix((saved["data"], saved["indices"], saved["indptr"]),
                                         shape=tuple(saved["shape"]))
                self.terms = saved["terms"]
            return
        counter = CountVectorizer(analyzer=self.analyzer, ngram_range=(self.ngram_min, self.ngram_max),
                                  lowercase=True, dtype=np.float64)
        self.counts = counter.fit_transform(distinct).tocsr()  # columns in alphabetical order
        self.terms = counter.get_feature_names_out()

    def save(self, path: Path) -> None:
        """The counts and terms (``.npz``, no pickle), for :attr:`source` in another process."""
        np.savez(path, data=self.counts.data, indices=self.counts.indices, indptr=self.counts.indptr,
                 shape=np.asarray(self.counts.shape), terms=np.asarray(self.terms, dtype=str))

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


Grams = tuple[str, int, int]  # (analyzer, ngram_min, ngram_max)
WORDPIECE: Grams = ("wordpiece", 0, 0)  # a block's static embeddings, in its files beside the counts


@dataclass
class _Vectors:
    """Static embeddings by text (float32 rows of one growing matrix): the block's distinct texts first."""

    row_of: dict[str, int]
    matrix: npt.NDArray[np.float32]
    block_rows: int  # the first rows: the block's distinct texts (what a file holds)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)  # the last block's: any trainer's

    def rows(self, texts: Sequence[str], embeddings: StaticEmbeddings) -> npt.NDArray[np.float32]:
        with self.lock:
            missing = list(dict.fromkeys(t for t in texts if t not in self.row_of))
            if missing:
                vectors = embeddings.vectors(missing)
                start = len(self.row_of)
                self.row_of.update((t, start + i) for i, t in enumerate(missing))
                self.matrix = np.concatenate([self.matrix, vectors])
            return self.matrix[np.fromiter((self.row_of[t] for t in texts), dtype=np.int64, count=len(texts))]


@dataclass(frozen=True)
class SharedCounts:
    """What a process needs to derive a fit's features as the counting process does: the block's key and
    texts, and its counts of each of the fit's n-gram sets (a blend's two) saved to ``files``
    (:func:`shared_counts`)."""

    key: str
    texts: Sequence[str]
    files: Mapping[Grams, Path]


@dataclass
class _Counted:
    texts: Sequence[str]
    key: str
    by_ngram: dict[Grams, NgramCounts] = field(default_factory=dict)
    files: dict[Grams, Path] = field(default_factory=dict)  # counts saved (here) or to load (in a worker)
    scratch: Path | None = None  # where this block saved its counts (removed when it ends)
    vectors: _Vectors | None = None  # wordpiece: the block's static embeddings (and of the texts predicted since)


_current: contextvars.ContextVar[_Counted | None] = contextvars.ContextVar("kinds_ngrams_counted", default=None)


@contextlib.contextmanager
def counted_once(texts: Sequence[str], *, key: str | None = None) -> Iterator[None]:
    """Within the block, a ``tfidf-logreg`` fit on texts that are all among ``texts`` derives its features
    from counts made once (per n-gram range, on the first such fit). ``key`` names the block (default: a
    new one): a fit worker enters a block of the same texts and key once per run (:mod:`trainer.fitpool`)."""
    counted = _Counted(list(texts), key or uuid.uuid4().hex)
    token = _current.set(counted)
    try:
        yield
    finally:
        _current.reset(token)
        global _last_vectors
        if counted.vectors is not None:  # the next block (the next run) embeds only the texts this one did not
            _last_vectors = counted.vectors
        if counted.scratch is not None:
            shutil.rmtree(counted.scratch, ignore_errors=True)


def shared_counts(params: Mapping[str, Any]) -> SharedCounts | None:
    """The enclosing block's counts of the n-grams of a ``tfidf-logreg`` with ``params`` (and of its
    ``blend``'s second model), counted now if not yet and saved to a file once each, for a fit worker
    (:mod:`trainer.fitpool`) to load instead of counting again; None outside a block or for params without
    n-grams (another kind)."""
    counted = _current.get()
    if counted is None or "ngram_max" not in params:
        return None
    wanted = _grams_of(params)
    for grams in wanted:
        if grams not in counted.files:
            if counted.scratch is None:
                counted.scratch = Path(tempfile.mkdtemp(prefix="ngrams-"))
            path = counted.scratch / f"{'-'.join(map(str, grams))}.npz"
            if grams == WORDPIECE:
                vectors = _block_vectors(counted, static_embeddings())
                np.savez(path, matrix=vectors.matrix[:vectors.block_rows])
            else:
                _counts(counted, grams).save(path)
            counted.files[grams] = path
    return SharedCounts(counted.key, counted.texts, {grams: counted.files[grams] for grams in wanted})


def use_counts(shared: SharedCounts) -> None:
    """In the enclosing block (entered with ``shared``'s texts and key), load ``shared``'s counts when their
    n-grams are first needed instead of counting them."""
    counted = _current.get()
    if counted is not None and counted.key == shared.key:
        for grams, path in shared.files.items():
            counted.files.setdefault(grams, path)


def _grams_of(params: Mapping[str, Any]) -> list[Grams]:
    """The n-gram sets a ``tfidf-logreg`` with ``params`` counts: its own, and its blend's second model's
    (``params`` updated with the ``blend``'s, as :class:`kinds.tfidf.TfidfLogReg` builds it)."""
    blend = params.get("blend")
    parts = [params, *([{**params, **blend}] if isinstance(blend, Mapping) else [])]
    return list(dict.fromkeys(WORDPIECE if p.get("analyzer") == "wordpiece"  # no n-grams: its embeddings
                              else (str(p.get("analyzer", "word")), int(p.get("ngram_min", 1)), int(p["ngram_max"]))
                              for p in parts))


def _counts(counted: _Counted, grams: Grams) -> NgramCounts:
    found = counted.by_ngram.get(grams)
    if found is None:
        analyzer, ngram_min, ngram_max = grams
        found = counted.by_ngram[grams] = NgramCounts(counted.texts, ngram_max, analyzer, ngram_min,
                                                      source=counted.files.get(grams))
    return found


def shared_tfidf(texts: Sequence[str], *, ngram_max: int, min_df: int, max_features: int | None,
                 analyzer: str = "word", ngram_min: int = 1) -> TfidfFeatures | None:
    """The features of ``texts`` from the enclosing :func:`counted_once`, or None (no block, or a text the
    block did not count)."""
    counted = _current.get()
    if counted is None:
        return None
    counts = _counts(counted, (analyzer, ngram_min, ngram_max))
    rows = counts.rows(texts)
    return None if rows is None else counts.tfidf(rows, min_df=min_df, max_features=max_features)


def wordpiece_vectors(texts: Sequence[str], embeddings: StaticEmbeddings) -> npt.NDArray[np.float32]:
    """``embeddings``' vectors of ``texts``: inside a :func:`counted_once` block of the default table, from the
    block's (each text embedded once per block; the block's own texts loaded from the counting process's file
    in a fit worker); outside, computed."""
    counted = _current.get()
    if counted is None or embeddings is not static_embeddings():
        return embeddings.vectors(texts)
    return _block_vectors(counted, embeddings).rows(texts, embeddings)


def _block_vectors(counted: _Counted, embeddings: StaticEmbeddings) -> _Vectors:
    if counted.vectors is None:
        distinct = list(dict.fromkeys(counted.texts))
        source = counted.files.get(WORDPIECE)
        if source is not None:  # the counting process's, for the same texts
            with np.load(source, allow_pickle=False) as saved:
                matrix = saved["matrix"]
        elif _last_vectors is not None:  # a run's texts are mostly the last run's (the corpus, earlier samples)
            matrix = _last_vectors.rows(distinct, embeddings)
        else:
            matrix = embeddings.vectors(distinct)
        counted.vectors = _Vectors({t: i for i, t in enumerate(distinct)}, matrix, len(distinct))
    return counted.vectors


_last_vectors: _Vectors | None = None  # the last block's, in this process (a trainer's; a pod opens no block)
