"""How a run makes its candidates: which kinds at which corpus weights, each fitted from scratch with the
policy's parameters or warm-started from the champion, every model bound to the trainer's resources."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from typing import Any

from kinds.base import ModelKind, Resources
from kinds.catalog import KINDS, create
from registry import ModelRegistry, ModelVersionInfo
from tasks import FeatureSchema
from tasks.features import Input
from trainer.config import PolicyConfig
from trainer.data import Frame, Snapshot
from trainer.fitpool import FitPool, Predicted, job_for
from trainer.policy import Mode

__all__ = ["Recipes", "corpus_weight_of", "trainable"]


class Recipes:
    """The candidate recipes of one policy; models are created and loaded bound to ``resources``; the fits
    whose model only predicts (cross-fit folds) go to ``pool``'s workers (default: fitted here, serially)."""

    def __init__(self, registry: ModelRegistry, resources: Resources, policy: PolicyConfig,
                 features: FeatureSchema | None = None, pool: FitPool | None = None) -> None:
        self.registry = registry
        self.pool = pool or FitPool(1)
        self.resources = resources
        self.policy = policy
        self.features = features  # a tabular model's schema: every tabular kind is built with it
        self.tuned: dict[str, dict[str, Any]] = {}  # this run's searched params per kind (set by the run)
        self.starts: dict[str, Any] = {}  # this run's solver start per kind: the champion's solution (set by the run)
        self.submitted: list[Future[Predicted]] = []  # this run's fits (dropped by forget when it ends)

    def create(self, kind: str, **params: object) -> ModelKind:
        return create(kind, resources=self.resources, **params)

    def load(self, version: str) -> ModelKind:
        return self.registry.load(version, self.resources)

    def fit(self, kind: str, mode: Mode, champion: ModelVersionInfo | None, frame: Frame) -> ModelKind:
        """The candidate's recipe: a warm start of the champion (incremental, same kind), else from scratch."""
        frame = trainable(frame)
        if mode == "incremental" and champion is not None and kind == champion.kind:
            return self.load(champion.version).partial_fit(frame.inputs, frame.labels, frame.weights)
        return self.create(kind, **self.params(kind)).starting_at(self.starts.get(kind)).fit(
            frame.inputs, frame.labels, frame.weights)

    def fit_predict(self, kind: str, mode: Mode, champion: ModelVersionInfo | None, frame: Frame,
                    predict: Sequence[Input]) -> Future[Predicted]:
        """The predictions of ``predict`` by the recipe :meth:`fit` fits on ``frame``: in a worker of the
        pool unless it is a warm start of the champion (or the pool fits here)."""
        warm = mode == "incremental" and champion is not None and kind == champion.kind
        return self.predict_by(kind, self.params(kind), frame, predict,
                               local=(lambda: self.fit(kind, mode, champion, frame)) if warm else None)

    def predict_by(self, kind: str, params: dict[str, Any], frame: Frame, predict: Sequence[Input], *,
                   local: Callable[[], ModelKind] | None = None) -> Future[Predicted]:
        """The predictions of ``predict`` by ``kind`` (``params``) fitted from scratch on ``frame``'s
        trainable rows, its solver started at :attr:`starts` (``local``: another fit, made in this process)."""
        rows, start = trainable(frame), self.starts.get(kind)
        job = (job_for(kind, params, rows.inputs, rows.labels, rows.weights, predict, start)
               if local is None and self.pool.portable(kind) else None)
        future = self.pool.submit(local or (lambda: self.create(kind, **params).starting_at(start).fit(
            rows.inputs, rows.labels, rows.weights)), predict, job)
        self.submitted.append(future)
        return future

    def forget(self) -> None:
        """The run is over: its fits not started yet are cancelled (a failed run leaves no work queued)."""
        for future in self.submitted:
            future.cancel()
        self.submitted = []

    def params(self, kind: str) -> dict[str, Any]:
        """A from-scratch candidate's constructor parameters: the policy's seed and ``kind_params``, what this
        run's search chose (:attr:`tuned`), and, for a kind of the tabular task, the model's feature schema."""
        params: dict[str, Any] = {"seed": self.policy.seed, **self.policy.kind_params.get(kind, {}),
                                  **self.tuned.get(kind, {})}
        cls = KINDS.get(kind)
        if self.features is not None and cls is not None and "tabular-classification" in cls.tasks:
            params["features"] = self.features.to_params()
        return params

    def kinds(self, mode: Mode, champion: ModelVersionInfo | None, requested: Sequence[str] | None) -> list[str]:
        """The kinds to train: those requested, else the champion's (incremental), else the policy's."""
        if requested:
            return list(requested)
        if mode == "incremental" and champion is not None:
            return [champion.kind]  # a warm start continues the champion; other kinds start from scratch
        return list(dict.fromkeys(self.policy.kinds))

    def corpus_weights(self, mode: Mode) -> list[float | None]:
        """None (the policy's corpus weight), plus each of ``corpus_weight_choices`` in a full run (0: the
        target-only recipe, trained on the feedback samples alone)."""
        choices = self.policy.corpus_weight_choices if mode == "full" else ()
        return [None, *(w for w in dict.fromkeys(choices) if w != self.policy.corpus_weight)]

    def is_refresh(self, kind: str, mode: Mode, weight: float | None, champion: ModelVersionInfo | None,
                   champion_model: ModelKind | None, snapshot: Snapshot) -> bool:
        """Is the candidate of ``kind`` at corpus ``weight`` the champion's own recipe on more of the same
        stream: a full refit of the champion's kind, params and corpus weight (a full-mode champion) on a
        snapshot past its watermark? The evaluation gate holds such a refresh to non-inferiority."""
        if champion is None or champion_model is None or mode != "full" or champion.mode != "full":
            return False
        recipe_weight = self.policy.corpus_weight if weight is None else weight
        return (kind == champion.kind and create(kind, **self.params(kind)).params == champion_model.params
                and math.isclose(recipe_weight, corpus_weight_of(champion.tags, math.nan))
                and snapshot.watermark > (champion.watermark or 0))


def corpus_weight_of(tags: Mapping[str, str], default: float) -> float:
    """The corpus weight a version was trained with (its ``corpus_weight`` tag), else ``default``."""
    try:
        return float(tags["corpus_weight"])
    except (KeyError, ValueError):
        return default


def trainable(frame: Frame) -> Frame:
    """``frame`` without its corpus rows (negative ids) at weight 0: a target-only recipe (corpus weight 0)
    fits the feedback samples alone, in a fraction of the time, and its vocabulary is theirs. Samples at
    weight 0 stay (what they add to a vocabulary is what they always added)."""
    if not any(i < 0 and w == 0 for i, w in zip(frame.ids, frame.weights, strict=True)):
        return frame
    return frame.take([n for n, (i, w) in enumerate(zip(frame.ids, frame.weights, strict=True)) if i >= 0 or w != 0])
