"""Cross-fitting: the training samples the champion never saw (and, against a full champion, those it
did) join the evaluation out of fold. Each fold is predicted by the recipe trained on the rest of the
frame, so candidate and champion are judged on current traffic neither was fitted to."""

from __future__ import annotations

import random
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field

from kinds.base import ModelKind
from registry import ModelVersionInfo
from trainer.config import PolicyConfig
from trainer.data import Frame, SampleStore
from trainer.fitpool import Predicted
from trainer.frames import CrossFit, TrainingFrames
from trainer.policy import Mode
from trainer.recipes import Recipes, corpus_weight_of

__all__ = ["CrossFitPlan", "CrossFitter", "PendingCrossFit"]

Wait = Callable[[Future[Predicted]], Predicted]


@dataclass
class CrossFitPlan:
    """The frame rows cross-fitted, fold by fold, and the champion recipe's out-of-fold (label, confidence)
    for the rows the champion trained on (by frame row): fitted in the recipes' fit workers, collected by
    :meth:`champion_predictions`."""

    folds: list[list[int]]
    pending: list[tuple[list[int], Future[Predicted]]] = field(default_factory=list)
    champion: dict[int, tuple[str, float]] = field(default_factory=dict)
    champion_seconds: float = 0.0

    def champion_predictions(self, wait: Wait) -> dict[int, tuple[str, float]]:
        """The champion recipe's out-of-fold predictions, once its fits are done (``wait``: the pool's)."""
        while self.pending:
            seen, future = self.pending.pop(0)
            done = wait(future)
            self.champion.update(_labelled(seen, done))
            self.champion_seconds += done.seconds
        return self.champion


@dataclass
class PendingCrossFit:
    """A candidate recipe's fold fits under way; :meth:`result` is its :class:`CrossFit`."""

    frame: Frame
    plan: CrossFitPlan
    folds: list[tuple[list[int], Future[Predicted]]]
    seconds: float = 0.0

    def result(self, wait: Wait) -> CrossFit:
        predicted: dict[int, tuple[str, float]] = {}
        for fold, future in self.folds:
            done = wait(future)
            predicted.update(_labelled(fold, done))
            self.seconds += done.seconds
        champion = self.plan.champion_predictions(wait)
        rows = sorted(predicted)
        return CrossFit(self.frame.take(rows), [predicted[i] for i in rows], len(self.plan.folds),
                        {n: champion[i] for n, i in enumerate(rows) if i in champion})


def _labelled(rows: list[int], done: Predicted) -> dict[int, tuple[str, float]]:
    return {i: (done.labels[int(p.argmax())], float(p.max())) for i, p in zip(rows, done.proba, strict=True)}


class CrossFitter:
    """Plans a run's folds and predicts them with a recipe (:class:`Recipes`)."""

    def __init__(self, policy: PolicyConfig, frames: TrainingFrames, recipes: Recipes) -> None:
        self.policy = policy
        self.frames = frames
        self.recipes = recipes

    def plan(self, store: SampleStore, mode: Mode, frame: Frame, champion: ModelVersionInfo | None,
             champion_model: ModelKind | None) -> CrossFitPlan | None:
        """Which of the frame's feedback samples are cross-fitted, in which folds, and the champion recipe's
        out-of-fold predictions for those the champion trained on (None: no cross-fitting).

        Always the samples the champion never trained on (ids above its watermark). In a full run against
        a champion trained from scratch (``cross_fit_champion``), also the samples it did train on: its
        recipe (kind and params) is refit on the corpus and the samples up to its watermark, without each
        fold. An incremental candidate continues the champion, which saw those samples: never for it."""
        policy = self.policy
        if champion is None or champion_model is None or policy.cross_fit_folds < 2:
            return None
        watermark = champion.watermark or 0
        refit = (policy.cross_fit_champion and mode == "full" and champion.mode == "full" and watermark > 0)
        champion_frame = None
        if refit:
            weight = corpus_weight_of(champion.tags, policy.corpus_weight)
            champion_frame = self.frames.corpus(store, weight).extend(store.samples(after=0, upto=watermark).rows())
        trained = {sample_id for sample_id in champion_frame.ids if sample_id > 0} if champion_frame else set()
        rows = [i for i, sample_id in enumerate(frame.ids) if sample_id > watermark or sample_id in trained]
        if len(rows) < max(policy.cross_fit_min_rows, policy.cross_fit_folds):
            return None
        random.Random(f"{policy.seed}:cross-fit:{len(frame)}").shuffle(rows)
        plan = CrossFitPlan([rows[k::policy.cross_fit_folds] for k in range(policy.cross_fit_folds)])
        if champion_frame is None or not trained:
            return plan
        at = {sample_id: j for j, sample_id in enumerate(champion_frame.ids) if sample_id > 0}
        params = {"seed": policy.seed, **champion_model.params}
        for fold in plan.folds:
            seen = [i for i in fold if frame.ids[i] in trained]
            if not seen:
                continue
            held = {at[frame.ids[i]] for i in seen}
            rest = champion_frame.take([j for j in range(len(champion_frame)) if j not in held])
            plan.pending.append((seen, self.recipes.predict_by(champion.kind, params, rest,
                                                               [frame.inputs[i] for i in seen])))
        return plan

    def predict(self, kind: str, mode: Mode, champion: ModelVersionInfo | None, frame: Frame,
                plan: CrossFitPlan) -> PendingCrossFit:
        """Out-of-fold predictions of the candidate's recipe for the plan's rows: each fold is predicted by
        the recipe trained on the rest of the frame (the fits start now, in the recipes' fit workers)."""
        folds = []
        for fold in plan.folds:
            held = set(fold)
            rest = frame.take([i for i in range(len(frame)) if i not in held])
            folds.append((fold, self.recipes.fit_predict(kind, mode, champion, rest,
                                                         [frame.inputs[i] for i in fold])))
        return PendingCrossFit(frame, plan, folds)
