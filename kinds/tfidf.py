"""``tfidf-logreg``: TF-IDF features + multinomial logistic regression (scikit-learn). Trains in
seconds; the fast baseline and a candidate. Saved as JSON (vocabulary) + ``.npz`` (idf, coefficients),
never pickle.

Incremental training keeps the vocabulary and the label set and warm-starts the coefficients.

``blend``: a second tfidf-logreg (this one's params updated with the blend's, e.g. word 1-2 grams beside the
demo's char_wb 2-5) fitted on the same rows and weights, every fit, warm start and save beside the first;
the model predicts the mean of the two probability vectors (issue 18, docs/training.md).

``analyzer="wordpiece"``: instead of n-grams, a text's features are the mean static embedding of its WordPiece
tokens from the packaged sentence encoder's table (:mod:`kinds.wordpiece`, no transformer layer), the same
logistic regression on them. Blended beside char_wb n-grams it is the demo's recipe: features that carry to a
domain whose words the labels never showed. Its "vocabulary" names the table (its sha256) and the
dimension of each column, so a saved model refuses a different table.

Prediction does not go through scikit-learn: :class:`_Scorer` computes the same features (the
vectorizer's lower-casing, token pattern and word n-grams or its ``char_wb`` character n-grams, sublinear
tf, idf, L2 norm) and the same probabilities (softmax of the decision, or the logistic for two labels)
straight from the vocabulary and the weights, ~10x cheaper per text than ``TfidfVectorizer.transform`` +
``predict_proba`` with their input validation and sparse-matrix set-up. scikit-learn is imported only to
fit, so a serving pod that only loads and predicts never imports it (nor the pandas/scipy it pulls in)."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

import numpy as np
import numpy.typing as npt

from kinds._threads import one_blas_thread
from kinds.base import ModelKind, Probabilities, as_texts
from kinds.exceptions import ArtifactError, KindError
from kinds.ngrams import shared_tfidf, wordpiece_vectors
from kinds.search_space import Choice, FloatRange
from kinds.wordpiece import StaticEmbeddings, static_embeddings
from tasks.features import Input

if TYPE_CHECKING:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

TOKEN = re.compile(r"(?u)\b\w\w+\b")  # TfidfVectorizer's default token_pattern
WHITE_SPACES = re.compile(r"\s\s+")  # TfidfVectorizer's whitespace normalisation before char_wb n-grams
ANALYZERS = ("word", "char_wb", "wordpiece")
SOLVERS = ("newton-cg", "lbfgs")
BLENDED = ("analyzer", "ngram_min", "ngram_max", "min_df", "max_features", "c", "max_iter", "solver")  # blend may set
BLEND_PREFIX = "blend-"  # a blended model's second model's files in the artifact: blend-weights.npz, ...


class TfidfLogReg(ModelKind):
    kind = "tfidf-logreg"
    tasks = frozenset({"text-classification"})
    search_space = {"c": FloatRange(0.01, 100.0, log=True), "ngram_max": Choice((1, 2))}
    inline = True  # ~0.05 ms a text (see _Scorer): serving scores it on the event loop

    def __init__(self, *, ngram_max: int = 2, min_df: int = 1, max_features: int = 50_000, c: float = 4.0,
                 max_iter: int = 300, seed: int = 0, analyzer: str = "word", ngram_min: int = 1,
                 solver: str = "newton-cg", blend: Mapping[str, Any] | None = None) -> None:
        """``analyzer``: ``word`` n-grams of tokens (``ngram_min``..``ngram_max``), or ``char_wb``: character
        n-grams inside word boundaries, which transfer to a domain whose words the corpus never had (a
        misspelling, a hashtag, a product name share most of their character n-grams with known words):
        offline, vader_movies at weight 0.2 + 360 tweet labels reach 0.661 held-out tweets with char_wb 2-5
        vs 0.633 with words 1-2 (docs/training.md). ``wordpiece``: the mean static WordPiece embedding of
        the text (see the module docstring; ``ngram_*``, ``min_df`` and ``max_features`` are not read).

        ``solver``: how scikit-learn minimises the (strictly convex) regularised logistic loss; both reach its
        one optimum up to the tolerance. ``newton-cg`` (Newton steps, Hessian products by conjugate gradient):
        on the demo's char_wb 2-5 features (8,934 rows x 50,000 columns x 3 labels) 6 iterations in ~1/9 of
        the time ``lbfgs`` takes for its 55, and nearer the optimum (max probability difference to a fit at
        tol 1e-8: 0.021 vs 0.029); L-BFGS-B spent 60% of its fit in its own bookkeeping on the 150,000
        coefficients (issue 18, docs/training.md). ``lbfgs``: as fitted before; kept for comparison.

        ``blend``: None (the default: one model, params and artifacts as before), or the params (of
        :data:`BLENDED`) in which a second tfidf-logreg differs from this one, e.g. ``{"analyzer": "word",
        "ngram_min": 1, "ngram_max": 2}``: fitted on the same rows and weights (its n-grams counted once per
        run too), warm-started, partially fitted and saved beside this one; the model's probabilities are the
        mean of the two. Offline, the demo's char_wb 2-5 blended with word 1-2 grams (corpus 0.2) passed the
        real gate for a first promotion within 150 labels in 10 of 16 scenario-orders vs 6 of 16 alone and
        raised the movie slice (docs/benchmarks.md)."""
        if analyzer not in ANALYZERS:
            raise KindError(f"analyzer must be one of {ANALYZERS}, got {analyzer!r}")
        # wordpiece: the n-gram params stay in the params (one shape for every analyzer) and are not read
        if solver not in SOLVERS:
            raise KindError(f"solver must be one of {SOLVERS}, got {solver!r}")
        if not (isinstance(ngram_min, int) and isinstance(ngram_max, int) and 1 <= ngram_min <= ngram_max):
            raise KindError(f"need integers 1 <= ngram_min <= ngram_max, got {ngram_min!r}, {ngram_max!r}")
        params: dict[str, Any] = {"ngram_max": ngram_max, "min_df": min_df, "max_features": max_features, "c": c,
                                  "max_iter": max_iter, "seed": seed}
        if analyzer != "word" or ngram_min != 1:  # the word defaults leave the params (and old artifacts) as they were
            params.update(analyzer=analyzer, ngram_min=ngram_min)
        if solver != SOLVERS[0]:  # the default leaves the params (and old artifacts) as they were
            params["solver"] = solver
        if blend is not None:
            params["blend"] = dict(blend) if isinstance(blend, Mapping) else blend
        super().__init__(**params)
        self._blend: TfidfLogReg | None = None if blend is None else self._second(blend)  # its second model
        self._vectorizer: TfidfVectorizer | None = None  # scikit-learn's objects: built to fit
        self._clf: LogisticRegression | None = None
        self._scorer: _Scorer | None = None  # what predicts
        self._start: Solution | None = None  # where the next fit's solver starts (starting_at): once
        self._embeddings: StaticEmbeddings | None = static_embeddings() if analyzer == "wordpiece" else None

    def _second(self, blend: object) -> TfidfLogReg:
        """The blend's second model: this one's params updated with ``blend``; :class:`KindError` if ``blend``
        names a param outside :data:`BLENDED` (a blend of a blend among them), a bad value, or nothing new."""
        if not isinstance(blend, Mapping) or not blend:
            raise KindError(f"blend must be a non-empty dict of tfidf-logreg params, got {blend!r}")
        unknown = sorted(str(name) for name in blend if name not in BLENDED)
        if unknown:
            raise KindError(f"blend takes {BLENDED} (one level: no blend inside a blend), got {unknown}")
        own = {name: value for name, value in self.params.items() if name != "blend"}
        try:
            second = TfidfLogReg(**{**own, **blend})
        except KindError as exc:
            raise KindError(f"blend {dict(blend)!r}: {exc}") from exc
        if second.params == own:
            raise KindError(f"blend {dict(blend)!r} changes none of the model's params: the mean would be the model")
        return second

    @property
    def _analyzer(self) -> str:
        return str(self.params.get("analyzer", "word"))

    def _embedding_columns(self) -> tuple[dict[str, int], npt.NDArray[np.float64]]:
        """A wordpiece model's "vocabulary" (its table's id and each column's dimension) and unit idf: what a
        warm start maps by and what a saved model is checked against."""
        assert self._embeddings is not None
        e = self._embeddings
        return {f"{e.embedding_id}#{i}": i for i in range(e.dim)}, np.ones(e.dim, dtype=np.float64)

    def _new_vectorizer(self) -> TfidfVectorizer:
        from sklearn.feature_extraction.text import TfidfVectorizer

        return TfidfVectorizer(analyzer=self.params.get("analyzer", "word"),
                               ngram_range=(self.params.get("ngram_min", 1), self.params["ngram_max"]),
                               min_df=self.params["min_df"], max_features=self.params["max_features"],
                               sublinear_tf=True, lowercase=True, dtype=np.float64)

    def _new_classifier(self, warm: bool) -> LogisticRegression:
        from sklearn.linear_model import LogisticRegression

        return LogisticRegression(C=self.params["c"], max_iter=self.params["max_iter"],
                                  solver=self.params.get("solver", SOLVERS[0]), random_state=self.params["seed"],
                                  warm_start=warm)

    def fit(self, inputs: Sequence[Input], labels: Sequence[str], weights: Sequence[float] | None = None) -> Self:
        texts = as_texts(inputs)
        classes = sorted(set(labels))
        if len(classes) < 2:
            raise KindError(f"need at least two labels to train, got {classes}")
        vectorizer: TfidfVectorizer | None = None
        if self._embeddings is not None:  # wordpiece: the same columns for any texts
            vocabulary, idf = self._embedding_columns()
            features: Any = wordpiece_vectors(texts, self._embeddings)  # in a run: once per text (kinds.ngrams)
        else:
            vectorizer = self._new_vectorizer()
            shared = shared_tfidf(texts, ngram_max=self.params["ngram_max"], min_df=self.params["min_df"],
                                  max_features=self.params["max_features"], analyzer=self._analyzer,
                                  ngram_min=self.params.get("ngram_min", 1))
            if shared is None:
                features = vectorizer.fit_transform(list(texts))
            else:  # inside kinds.ngrams.counted_once: the same vectorizer, from counts made once per run
                vectorizer.vocabulary_, vectorizer.idf_, features = shared.vocabulary, shared.idf, shared.matrix
            vocabulary, idf = vectorizer.vocabulary_, vectorizer.idf_
        start, self._start = self._start, None
        clf = self._new_classifier(warm=start is not None and start.labels == tuple(classes))
        if clf.warm_start:
            assert start is not None
            clf.classes_ = np.asarray(classes)
            clf.coef_, clf.intercept_ = start.mapped(vocabulary, idf), start.intercept.copy()
        with one_blas_thread():
            clf.fit(features, list(labels), sample_weight=None if weights is None else np.asarray(weights, float))
        self._set(vectorizer, clf, vocabulary, idf)
        self.labels = tuple(str(c) for c in clf.classes_)
        if self._blend is not None:  # the same rows and weights (its n-grams from the same counting block)
            self._blend.fit(texts, labels, weights)
        return self

    def solution(self) -> Solution | None:
        """The fitted coefficients by n-gram, for another fit to start at."""
        if self._scorer is None:
            return None
        s = self._scorer
        return Solution(self.labels, s.vocabulary, s.idf, s.coef, s.intercept,
                        None if self._blend is None else self._blend.solution())

    def starting_at(self, solution: Any) -> Self:
        """The next :meth:`fit` starts its solver at ``solution``'s coefficients, mapped by n-gram (0 for one
        it did not have) and rescaled by the ratio of the idfs, when its label set is the fit's (else from
        zero). The regularised logistic loss is strictly convex: the fit is the one it would be from zero,
        up to the solver's tolerance. Measured on a demo cross-fit fold started at the fit of the whole
        frame: newton-cg 2 iterations instead of 6 (issue 18). A blend's second model starts at the
        solution's own second model (from zero when the solution's model was not blended)."""
        self._start = solution if isinstance(solution, Solution) else None
        if self._blend is not None:
            self._blend.starting_at(None if self._start is None else self._start.blend)
        return self

    def partial_fit(self, inputs: Sequence[Input], labels: Sequence[str],
                    weights: Sequence[float] | None = None) -> Self:
        self._require_fitted()
        self._check_labels(labels)
        texts = as_texts(inputs)
        if self._blend is not None:
            self._blend.partial_fit(texts, labels, weights)
        vectorizer, old = self._sklearn()
        features = self._transform(vectorizer, texts)
        if len(set(labels)) < len(self.labels):
            # LogisticRegression needs every class present to keep its coefficient shape: add each
            # missing class once with zero weight (the caller's replay sample normally covers them)
            missing = [lbl for lbl in self.labels if lbl not in set(labels)]
            texts, labels = [*texts, *([""] * len(missing))], [*labels, *missing]
            weights = [*(weights if weights is not None else [1.0] * (len(labels) - len(missing))),
                       *([0.0] * len(missing))]
            features = self._transform(vectorizer, texts)
        clf = self._new_classifier(warm=True)
        clf.classes_ = old.classes_
        clf.coef_, clf.intercept_ = old.coef_.copy(), old.intercept_.copy()
        with one_blas_thread():
            clf.fit(features, list(labels), sample_weight=None if weights is None else np.asarray(weights, float))
        assert self._scorer is not None
        self._set(vectorizer, clf, self._scorer.vocabulary, self._scorer.idf)
        return self

    def _transform(self, vectorizer: TfidfVectorizer | None, texts: Sequence[str]) -> Any:
        """The fitted state's features of ``texts``."""
        if self._embeddings is not None:
            return wordpiece_vectors(texts, self._embeddings)
        assert vectorizer is not None
        return vectorizer.transform(list(texts))

    def predict_proba(self, inputs: Sequence[Input]) -> Probabilities:
        self._require_fitted()
        assert self._scorer is not None
        texts = as_texts(inputs)
        proba = self._scorer.proba(texts)
        if self._blend is not None:  # the mean of the two models' probabilities
            proba += self._blend.predict_proba(texts)
            proba /= 2.0
        return proba

    def _set(self, vectorizer: TfidfVectorizer | None, clf: LogisticRegression, vocabulary: Mapping[str, int],
             idf: npt.NDArray[np.float64]) -> None:
        self._vectorizer, self._clf = vectorizer, clf
        vocab = {str(term): int(i) for term, i in vocabulary.items()}
        self._scorer = self._new_scorer(vocab, idf, clf.coef_, clf.intercept_)

    def _new_scorer(self, vocabulary: dict[str, int], idf: npt.NDArray[np.float64], coef: npt.NDArray[np.float64],
                    intercept: npt.NDArray[np.float64]) -> _Scorer:
        if self._embeddings is not None:
            return _EmbeddingScorer(vocabulary, idf, coef, intercept, self._embeddings)
        return _Scorer(vocabulary, idf, coef, intercept, self._grams())

    def _grams(self) -> _Grams:
        return _Grams(self._analyzer, self.params.get("ngram_min", 1), self.params["ngram_max"])

    def _sklearn(self) -> tuple[TfidfVectorizer | None, LogisticRegression]:
        """scikit-learn's vectorizer (None for wordpiece) and classifier of the fitted state (rebuilt after a
        load)."""
        assert self._scorer is not None
        if (self._vectorizer is None and self._embeddings is None) or self._clf is None:
            s = self._scorer
            vectorizer = None
            if self._embeddings is None:
                vectorizer = self._new_vectorizer()
                vectorizer.vocabulary_, vectorizer.idf_ = dict(s.vocabulary), s.idf
            clf = self._new_classifier(warm=False)
            clf.classes_ = np.asarray(self.labels)
            clf.coef_, clf.intercept_ = s.coef, s.intercept
            clf.n_features_in_ = s.coef.shape[1]
            self._vectorizer, self._clf = vectorizer, clf
        return self._vectorizer, self._clf

    def _save_files(self, directory: Path) -> list[str]:
        files = self._write(directory, "")
        if self._blend is not None:  # the second model's files beside, pinned by the same manifest
            files += self._blend._write(directory, BLEND_PREFIX)
        return files

    def _load_files(self, directory: Path) -> None:
        self._read(directory, "")
        if self._blend is not None:
            self._blend.labels = self.labels
            self._blend._read(directory, BLEND_PREFIX)

    def _write(self, directory: Path, prefix: str) -> list[str]:
        """This model's vocabulary (JSON) and weights (``.npz``) as ``prefix`` + their names."""
        assert self._scorer is not None
        s = self._scorer
        files = [f"{prefix}vocabulary.json", f"{prefix}weights.npz"]
        (directory / files[0]).write_text(json.dumps(s.vocabulary, sort_keys=True, ensure_ascii=False))
        np.savez(directory / files[1], idf=s.idf, coef=s.coef, intercept=s.intercept)
        return files

    def _read(self, directory: Path, prefix: str) -> None:
        try:
            vocab: dict[str, Any] = json.loads((directory / f"{prefix}vocabulary.json").read_text())
            with np.load(directory / f"{prefix}weights.npz", allow_pickle=False) as arrays:
                idf, coef, intercept = arrays["idf"], arrays["coef"], arrays["intercept"]
        except (OSError, ValueError, KeyError) as exc:
            raise ArtifactError(directory, f"unreadable tfidf-logreg files: {exc}") from exc
        vocabulary = {str(k): int(v) for k, v in vocab.items()}
        if self._embeddings is not None and vocabulary != self._embedding_columns()[0]:
            raise ArtifactError(directory, f"{prefix}vocabulary.json was fitted on other static embeddings than "
                                f"this host's {self._embeddings.embedding_id} ({self._embeddings.model_dir})")
        self._vectorizer = self._clf = None
        self._scorer = self._new_scorer(vocabulary, idf, coef, intercept)


@dataclass(frozen=True)
class Solution:
    """A fitted tfidf-logreg's coefficients by n-gram (:meth:`TfidfLogReg.solution`)."""

    labels: tuple[str, ...]
    vocabulary: dict[str, int]
    idf: npt.NDArray[np.float64]
    coef: npt.NDArray[np.float64]
    intercept: npt.NDArray[np.float64]
    blend: Solution | None = None  # a blended model's second model's

    def mapped(self, vocabulary: dict[str, int], idf: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        """The coefficients for the columns of ``vocabulary`` (idf ``idf``): each n-gram's own, times
        its old idf over its new (the same contribution before the L2 norm), 0 for a new n-gram."""
        new = np.fromiter(vocabulary.values(), dtype=np.int64, count=len(vocabulary))
        old = np.fromiter((self.vocabulary.get(term, -1) for term in vocabulary), dtype=np.int64,
                          count=len(vocabulary))
        known = old >= 0
        coef = np.zeros((self.coef.shape[0], len(vocabulary)), dtype=np.float64)
        new, old = new[known], old[known]
        coef[:, new] = self.coef[:, old] * (self.idf[old] / np.asarray(idf)[new])
        return coef


class _Grams:
    """The n-grams ``TfidfVectorizer(lowercase=True, analyzer=..., ngram_range=(low, high))`` counts in a text."""

    def __init__(self, analyzer: str, low: int, high: int) -> None:
        self.analyzer, self.low, self.high = analyzer, low, high

    def __call__(self, text: str) -> list[str]:
        text = text.lower()
        if self.analyzer == "char_wb":
            return self._char_wb(text)
        tokens = TOKEN.findall(text)
        grams: list[str] = []
        for n in range(self.low, min(self.high, len(tokens)) + 1):
            grams.extend(tokens if n == 1 else (" ".join(tokens[i:i + n]) for i in range(len(tokens) - n + 1)))
        return grams

    def _char_wb(self, text: str) -> list[str]:
        """scikit-learn's ``_char_wb_ngrams``: each word padded with a space, a word shorter than n once."""
        grams: list[str] = []
        for word in WHITE_SPACES.sub(" ", text).split():
            w = f" {word} "
            for n in range(self.low, self.high + 1):
                offset = 0
                grams.append(w[:n])
                while offset + n < len(w):
                    offset += 1
                    grams.append(w[offset:offset + n])
                if offset == 0:
                    break
        return grams


class _Scorer:
    """``TfidfVectorizer(sublinear_tf=True, lowercase=True)`` features (word or ``char_wb`` n-grams) and
    ``LogisticRegression.predict_proba`` in plain numpy, from the fitted vocabulary and weights."""

    def __init__(self, vocabulary: dict[str, int], idf: npt.NDArray[np.float64], coef: npt.NDArray[np.float64],
                 intercept: npt.NDArray[np.float64], grams: _Grams) -> None:
        self.vocabulary, self.grams = vocabulary, grams
        self.idf = np.asarray(idf, dtype=np.float64)
        self.coef = np.asarray(coef, dtype=np.float64)
        self.intercept = np.asarray(intercept, dtype=np.float64)
        self._coef_t = np.ascontiguousarray(self.coef.T)  # rows by feature: one gather per text

    def features(self, text: str) -> tuple[list[int], npt.NDArray[np.float64]]:
        """The vocabulary indices present in ``text`` and their L2-normalised sublinear tf-idf values."""
        counts: dict[int, int] = {}
        vocab = self.vocabulary
        for gram in self.grams(text):
            found = vocab.get(gram)
            if found is not None:
                counts[found] = counts.get(found, 0) + 1
        index = list(counts)
        values = np.fromiter((math.log(c) + 1.0 for c in counts.values()), np.float64, len(index)) * self.idf[index]
        norm = math.sqrt(float(values @ values))
        return index, values / norm if norm > 0 else values

    def proba(self, texts: Sequence[str]) -> Probabilities:
        decision = np.empty((len(texts), self.coef.shape[0]), dtype=np.float64)
        for row, text in enumerate(texts):
            index, values = self.features(text)
            decision[row] = values @ self._coef_t[index] + self.intercept
        return _probabilities(decision)


def _probabilities(decision: npt.NDArray[np.float64]) -> Probabilities:
    """``LogisticRegression.predict_proba`` from its decision values (changed in place): the softmax, or the
    logistic of the one decision for two labels."""
    if decision.shape[1] == 1:
        positive = 1.0 / (1.0 + np.exp(-decision[:, 0]))
        return np.column_stack([1.0 - positive, positive])
    decision -= decision.max(axis=1, keepdims=True)
    np.exp(decision, out=decision)
    decision /= decision.sum(axis=1, keepdims=True)
    return decision


class _EmbeddingScorer(_Scorer):
    """A wordpiece model's probabilities: the logistic regression's on the static embeddings (batched)."""

    def __init__(self, vocabulary: dict[str, int], idf: npt.NDArray[np.float64], coef: npt.NDArray[np.float64],
                 intercept: npt.NDArray[np.float64], embeddings: StaticEmbeddings) -> None:
        super().__init__(vocabulary, idf, coef, intercept, _Grams("word", 1, 1))
        self.embeddings = embeddings

    def proba(self, texts: Sequence[str]) -> Probabilities:
        return _probabilities(wordpiece_vectors(texts, self.embeddings) @ self._coef_t + self.intercept)
