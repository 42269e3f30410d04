"""``lightgbm``: LightGBM gradient-boosted trees over a feature schema (:mod:`kinds.tabular`).

Categorical features are native (``categorical_feature``: the schema's category codes), missing values
are NaN. Deterministic for a ``seed`` (``deterministic``, col-wise histograms, ``threads`` fixed). The
artifact is LightGBM's own text model (``model_to_string``), never pickle. LightGBM is imported on first
fit or load (as scikit-learn in :mod:`kinds.tfidf`): a pod serving text kinds never loads it. ``partial_fit`` continues
boosting (``init_model``). A round whose samples all carry one label of a binary model adds no tree
(LightGBM's binary objective refuses a one-class set): the caller's replay normally covers both.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from kinds.exceptions import ArtifactError, KindError
from kinds.search_space import FloatRange, IntRange
from kinds.tabular import Matrix, TabularKind, Vector, check_fraction

if TYPE_CHECKING:
    import lightgbm as lgb


class LightGBMKind(TabularKind):
    """``num_leaves``/``max_depth`` (-1: unlimited) bound each tree, ``min_child_samples`` a leaf's
    (weighted) rows; ``subsample`` bags rows each round, ``colsample`` samples features per tree;
    ``reg_lambda`` is the L2 penalty on leaf values; ``threads`` caps LightGBM's threads in fit and
    predict."""

    kind = "lightgbm"
    model_file = "model.txt"
    search_space = {
        "n_estimators": IntRange(50, 500, log=True), "learning_rate": FloatRange(0.01, 0.3, log=True),
        "num_leaves": IntRange(4, 128, log=True), "min_child_samples": IntRange(5, 200, log=True),
        "subsample": FloatRange(0.5, 1.0), "colsample": FloatRange(0.5, 1.0),
        "reg_lambda": FloatRange(1e-3, 10.0, log=True),
    }

    def __init__(self, *, features: Sequence[Mapping[str, object]], n_estimators: int = 200,
                 learning_rate: float = 0.05, num_leaves: int = 31, max_depth: int = -1,
                 min_child_samples: int = 20, subsample: float = 1.0, colsample: float = 1.0, reg_lambda: float = 0.0,
                 warm_rounds: int = 50, seed: int = 0, threads: int = 1) -> None:
        check_fraction(self.kind, "subsample", subsample)
        check_fraction(self.kind, "colsample", colsample)
        super().__init__(features=features, n_estimators=n_estimators, learning_rate=learning_rate,
                         num_leaves=num_leaves, max_depth=max_depth, min_child_samples=min_child_samples,
                         subsample=subsample, colsample=colsample, reg_lambda=reg_lambda, warm_rounds=warm_rounds,
                         seed=seed, threads=threads)
        self._booster: lgb.Booster | None = None

    def _config(self, n_labels: int) -> dict[str, Any]:
        p = self.params
        objective = {"objective": "binary"} if n_labels == 2 else {"objective": "multiclass", "num_class": n_labels}
        return {**objective, "learning_rate": p["learning_rate"], "num_leaves": p["num_leaves"],
                "max_depth": p["max_depth"], "min_child_samples": p["min_child_samples"],
                "bagging_fraction": p["subsample"], "bagging_freq": 1 if p["subsample"] < 1 else 0,
                "feature_fraction": p["colsample"], "lambda_l2": p["reg_lambda"], "seed": p["seed"],
                "num_threads": p["threads"], "deterministic": True, "force_col_wise": True, "verbose": -1,
                "feature_pre_filter": False}

    def _boost(self, x: Matrix, y: Vector, w: Vector, n_labels: int, rounds: int, *, warm: bool) -> None:
        import lightgbm as lgb

        config = self._config(n_labels)
        data = lgb.Dataset(x, label=y, weight=w, feature_name=list(self.schema.names),
                           categorical_feature=self._categorical(), params=config, free_raw_data=True)
        try:
            self._booster = lgb.train(config, data, num_boost_round=rounds,
                                      init_model=self._booster if warm else None, keep_training_booster=False)
        except lgb.basic.LightGBMError as exc:
            raise KindError(f"{self.kind}: training failed: {exc}") from exc

    def _raw(self, x: Matrix) -> npt.NDArray[Any]:
        assert self._booster is not None
        return np.asarray(self._booster.predict(x, num_threads=self.params["threads"]))

    @property
    def trees(self) -> int:
        self._require_fitted()
        assert self._booster is not None
        return int(self._booster.current_iteration())

    def _save_files(self, directory: Path) -> list[str]:
        assert self._booster is not None
        (directory / self.model_file).write_text(self._booster.model_to_string())
        return [self.model_file]

    def _load_files(self, directory: Path) -> None:
        import lightgbm as lgb

        try:
            booster = lgb.Booster(model_str=(directory / self.model_file).read_text())
        except (OSError, ValueError, lgb.basic.LightGBMError) as exc:
            raise ArtifactError(directory, f"unreadable {self.kind} model: {exc}") from exc
        expected = len(self.labels) if len(self.labels) > 2 else 1
        if booster.num_model_per_iteration() != expected or booster.num_feature() != len(self.schema.features):
            raise ArtifactError(directory, f"the model does not fit {len(self.labels)} labels and "
                                f"{len(self.schema.features)} features")
        self._booster = booster
