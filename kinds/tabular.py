"""The shared base of the gradient-boosted tree kinds (``lightgbm``, ``xgboost``) for
``tabular-classification``: a feature row -> one of a label set.

``features`` (a constructor parameter, so part of the model's configuration and of its manifest) is the
model's feature schema as plain JSON values, :meth:`tasks.features.FeatureSchema.to_params`. Rows are
encoded by :meth:`~tasks.features.FeatureSchema.matrix`: schema order, numeric as is, boolean 0/1,
categorical as the index of its category in the schema, absent (or an unknown category) as NaN, which
both libraries treat as missing. Rows are not validated here: ingest and the data-quality gate did that
with the same schema; a value the encoding cannot read (a string in a numeric column) is a
:class:`KindError`.

Labels: the sorted distinct training labels; two labels train a binary objective, more a multiclass one.
``partial_fit`` continues boosting the fitted model: ``warm_rounds`` more trees fitted on the given
samples (the new outcomes plus whatever replay the caller adds), the label set kept.
"""

from __future__ import annotations

import math
from abc import abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Self, cast

import numpy as np
import numpy.typing as npt
from pydantic import ValidationError

from kinds.base import ModelKind, Probabilities
from kinds.exceptions import KindError
from tasks.features import FeatureSchema, Input, Row

Matrix = npt.NDArray[np.float64]
Vector = npt.NDArray[np.float64]


class TabularKind(ModelKind):
    """A boosted-trees classifier of feature rows; subclasses train and run their library's booster."""

    tasks = frozenset({"tabular-classification"})
    batches = True  # one library call per batch: the per-call overhead dominates a single row

    model_file: ClassVar[str]  # the library's own text/JSON model format, the artifact's one file

    def __init__(self, *, features: Sequence[Mapping[str, object]], **params: Any) -> None:
        try:
            schema = FeatureSchema.from_params(features)
        except (ValidationError, TypeError) as exc:
            raise KindError(f"{self.kind}: invalid features schema: {exc}") from exc
        for name in ("n_estimators", "warm_rounds", "threads"):
            if not (isinstance(params[name], int) and not isinstance(params[name], bool) and params[name] >= 1):
                raise KindError(f"{self.kind}: {name} must be a positive integer, got {params[name]!r}")
        super().__init__(features=schema.to_params(), **params)
        self.schema = schema

    # -- learning ------------------------------------------------------------------------------
    def fit(self, inputs: Sequence[Input], labels: Sequence[str], weights: Sequence[float] | None = None) -> Self:
        classes = tuple(sorted(set(labels)))
        if len(classes) < 2:
            raise KindError(f"need at least two labels to train, got {list(classes)}")
        x, y, w = self._encode(inputs, labels, weights, classes)
        self._boost(x, y, w, len(classes), self.params["n_estimators"], warm=False)
        self.labels = classes
        return self

    def partial_fit(self, inputs: Sequence[Input], labels: Sequence[str],
                    weights: Sequence[float] | None = None) -> Self:
        self._require_fitted()
        self._check_labels(labels)
        x, y, w = self._encode(inputs, labels, weights, self.labels)
        self._boost(x, y, w, len(self.labels), self.params["warm_rounds"], warm=True)
        return self

    def predict_proba(self, inputs: Sequence[Input]) -> Probabilities:
        self._require_fitted()
        raw = np.asarray(self._raw(self.encode(inputs)), dtype=np.float64)
        if len(self.labels) == 2:  # binary objectives give the probability of labels[1]
            positive = raw.reshape(-1)
            return np.column_stack([1.0 - positive, positive])
        return raw.reshape(-1, len(self.labels))

    def encode(self, inputs: Sequence[Input]) -> Matrix:
        """The rows as the float matrix the booster sees (module docstring)."""
        if not all(isinstance(row, Mapping) for row in inputs):
            bad = next(type(row).__name__ for row in inputs if not isinstance(row, Mapping))
            raise KindError(f"{self.kind} takes feature rows (tabular-classification), got a {bad}")
        try:
            return self.schema.matrix(cast(Sequence[Row], inputs))
        except (TypeError, ValueError) as exc:
            raise KindError(f"{self.kind}: a row does not encode by the features schema: {exc}") from exc

    @property
    @abstractmethod
    def trees(self) -> int:
        """Boosting rounds in the fitted model (a round holds one tree per label when multiclass)."""

    # -- the library's hooks -------------------------------------------------------------------
    @abstractmethod
    def _boost(self, x: Matrix, y: Vector, w: Vector, n_labels: int, rounds: int, *, warm: bool) -> None:
        """Fit ``rounds`` rounds on ``x``/``y`` (label indices)/``w``: from scratch, or (``warm``)
        continuing the fitted booster."""

    @abstractmethod
    def _raw(self, x: Matrix) -> npt.NDArray[Any]:
        """The booster's probabilities: (n,) of labels[1] when binary, else (n, len(labels))."""

    def _categorical(self) -> list[int]:
        return self.schema.categorical_columns()

    def _encode(self, inputs: Sequence[Input], labels: Sequence[str], weights: Sequence[float] | None,
                classes: Sequence[str]) -> tuple[Matrix, Vector, Vector]:
        if len(inputs) != len(labels) or not len(labels):
            raise KindError(f"need as many labels as rows, and at least one: {len(inputs)} rows, {len(labels)} labels")
        index = {label: float(i) for i, label in enumerate(classes)}
        y = np.array([index[label] for label in labels], dtype=np.float64)
        w = np.ones(len(y)) if weights is None else np.asarray(weights, dtype=np.float64)
        if w.shape != y.shape or not np.all(np.isfinite(w)) or np.any(w < 0) or w.sum() <= 0:
            raise KindError(f"weights must be {len(y)} finite non-negative numbers with a positive sum")
        return self.encode(inputs), y, w / w.mean()  # mean 1: min_child_* mean the same whatever the weights


def check_fraction(kind: str, name: str, value: object) -> None:
    """A ``(0, 1]`` parameter (subsample, colsample), else :class:`KindError`."""
    if not (isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
            and 0 < value <= 1):
        raise KindError(f"{kind}: {name} must be in (0, 1], got {value!r}")
