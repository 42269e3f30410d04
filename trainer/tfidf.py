"""``tfidf-logreg``: TF-IDF features + multinomial logistic regression (scikit-learn). Trains in
seconds; the fast baseline and a candidate. Saved as JSON (vocabulary) + ``.npz`` (idf, coefficients),
never pickle.

Incremental training keeps the vocabulary and the label set and warm-starts the coefficients."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Self

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression

from trainer.base import ModelKind, Probabilities
from trainer.exceptions import ArtifactError, TrainerError


class TfidfLogReg(ModelKind):
    kind = "tfidf-logreg"

    def __init__(self, *, ngram_max: int = 2, min_df: int = 1, max_features: int = 50_000, c: float = 4.0,
                 max_iter: int = 300, seed: int = 0) -> None:
        super().__init__(ngram_max=ngram_max, min_df=min_df, max_features=max_features, c=c, max_iter=max_iter,
                         seed=seed)
        self._vectorizer = self._new_vectorizer()
        self._clf: LogisticRegression | None = None

    def _new_vectorizer(self) -> TfidfVectorizer:
        return TfidfVectorizer(ngram_range=(1, self.params["ngram_max"]), min_df=self.params["min_df"],
                               max_features=self.params["max_features"], sublinear_tf=True, lowercase=True,
                               dtype=np.float64)

    def _new_classifier(self, warm: bool) -> LogisticRegression:
        return LogisticRegression(C=self.params["c"], max_iter=self.params["max_iter"],
                                  random_state=self.params["seed"], warm_start=warm)

    def fit(self, texts: Sequence[str], labels: Sequence[str], weights: Sequence[float] | None = None) -> Self:
        classes = sorted(set(labels))
        if len(classes) < 2:
            raise TrainerError(f"need at least two labels to train, got {classes}")
        self._vectorizer = self._new_vectorizer()
        features = self._vectorizer.fit_transform(list(texts))
        clf = self._new_classifier(warm=False)
        clf.fit(features, list(labels), sample_weight=None if weights is None else np.asarray(weights, float))
        self._clf = clf
        self.labels = tuple(str(c) for c in clf.classes_)
        return self

    def partial_fit(self, texts: Sequence[str], labels: Sequence[str],
                    weights: Sequence[float] | None = None) -> Self:
        self._require_fitted()
        self._check_labels(labels)
        assert self._clf is not None
        features = self._vectorizer.transform(list(texts))
        if len(set(labels)) < len(self.labels):
            # LogisticRegression needs every class present to keep its coefficient shape: add each
            # missing class once with zero weight (the caller's replay sample normally covers them)
            missing = [lbl for lbl in self.labels if lbl not in set(labels)]
            texts, labels = [*texts, *([""] * len(missing))], [*labels, *missing]
            weights = [*(weights if weights is not None else [1.0] * (len(labels) - len(missing))),
                       *([0.0] * len(missing))]
            features = self._vectorizer.transform(list(texts))
        clf = self._new_classifier(warm=True)
        clf.classes_ = self._clf.classes_
        clf.coef_, clf.intercept_ = self._clf.coef_.copy(), self._clf.intercept_.copy()
        clf.fit(features, list(labels), sample_weight=None if weights is None else np.asarray(weights, float))
        self._clf = clf
        return self

    def predict_proba(self, texts: Sequence[str]) -> Probabilities:
        self._require_fitted()
        assert self._clf is not None
        proba: Probabilities = self._clf.predict_proba(self._vectorizer.transform(list(texts)))
        return proba

    def _save_files(self, directory: Path) -> list[str]:
        assert self._clf is not None
        vocab = {term: int(i) for term, i in self._vectorizer.vocabulary_.items()}
        (directory / "vocabulary.json").write_text(json.dumps(vocab, sort_keys=True, ensure_ascii=False))
        np.savez(directory / "weights.npz", idf=self._vectorizer.idf_, coef=self._clf.coef_,
                 intercept=self._clf.intercept_)
        return ["vocabulary.json", "weights.npz"]

    def _load_files(self, directory: Path) -> None:
        try:
            vocab: dict[str, Any] = json.loads((directory / "vocabulary.json").read_text())
            with np.load(directory / "weights.npz", allow_pickle=False) as arrays:
                idf, coef, intercept = arrays["idf"], arrays["coef"], arrays["intercept"]
        except (OSError, ValueError, KeyError) as exc:
            raise ArtifactError(directory, f"unreadable tfidf-logreg files: {exc}") from exc
        vectorizer = self._new_vectorizer()
        vectorizer.vocabulary_ = {str(k): int(v) for k, v in vocab.items()}
        vectorizer.idf_ = idf
        clf = self._new_classifier(warm=False)
        clf.classes_ = np.asarray(self.labels)
        clf.coef_, clf.intercept_ = coef, intercept
        clf.n_features_in_ = coef.shape[1]
        self._vectorizer, self._clf = vectorizer, clf
