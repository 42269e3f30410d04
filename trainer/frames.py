"""The rows a run trains on and is judged on: the training frame of a full or incremental run (corpus at
its weight, samples, replay) and the evaluation set the gates score (holdout plus cross-fitted samples,
current traffic weighed by :func:`recent_share`)."""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta

import pandas as pd

from registry import ModelVersionInfo
from tasks import FeatureSchema
from trainer.config import PolicyConfig
from trainer.data import Frame, SampleStore, Snapshot
from trainer.exceptions import TrainerError
from trainer.gates import CrossFitted, Holdout
from trainer.policy import Mode

__all__ = ["LATE_JOIN_MARGIN", "CrossFit", "TrainingFrames", "evaluation_set", "id_range", "recent_share",
           "training_table"]

LATE_JOIN_MARGIN = timedelta(minutes=10)  # > statement + idle-in-transaction time-outs of every writer


class TrainingFrames:
    """The training frames of one policy, read through a :class:`SampleStore`."""

    def __init__(self, policy: PolicyConfig) -> None:
        self.policy = policy

    def training(self, store: SampleStore, mode: Mode, snapshot: Snapshot, champion: ModelVersionInfo) -> Frame:
        """A full run's corpus and every sample up to the watermark; an incremental run's new samples (late
        joins included) plus a seeded replay of the older rows."""
        if mode == "full":
            return self.corpus(store).extend(store.samples(after=0, upto=snapshot.watermark).rows())
        since = champion.watermark or 0
        # samples whose id is at or below the champion's watermark but that became samples after its run
        # began (late joins) are new too; the margin covers transactions in flight at that moment
        started = store.run_started(champion.tags.get("training_run_id"))
        late = started - LATE_JOIN_MARGIN if started is not None else None
        new = store.samples(after=since, upto=snapshot.watermark, landed_after=late)
        fresh = set(new.ids)
        older = self.corpus(store)
        older.extend(row for row in store.samples(after=0, upto=since).rows() if row[0] not in fresh)
        rng = random.Random(f"{self.policy.seed}:{snapshot.watermark}")
        replay = older.take(sorted(rng.sample(range(len(older)), min(len(older), self.policy.replay_size))))
        return new.extend(replay.rows())

    def corpus(self, store: SampleStore, weight: float | None = None) -> Frame:
        """The corpus's train split at ``weight`` (default ``policy.corpus_weight``)."""
        frame = store.corpus("train")
        factor = self.policy.corpus_weight if weight is None else weight
        frame.weights = [w * factor for w in frame.weights]
        return frame

    def reweighed(self, frame: Frame, weight: float | None) -> Frame:
        """``frame`` with its corpus rows (negative ids, at ``policy.corpus_weight``) at ``weight`` instead."""
        if weight is None:
            return frame
        factor = weight / self.policy.corpus_weight
        return Frame().extend((i, t, lbl, w * factor if i < 0 else w, sl) for i, t, lbl, w, sl in frame.rows())


@dataclass(frozen=True)
class CrossFit:
    """Cross-fitted training samples with the candidate recipe's out-of-fold (label, confidence), and the
    champion recipe's for those the champion trained on (by position in ``rows``)."""

    rows: Frame
    predicted: list[tuple[str, float]]
    folds: int
    champion: dict[int, tuple[str, float]] = field(default_factory=dict)

    def against(self, other: CrossFit) -> CrossFit:
        """These predictions, with ``other``'s (another recipe on the same rows and folds) as the side it
        is compared with: every row out of sample for both."""
        if other.rows.ids != self.rows.ids or other.folds != self.folds:
            raise TrainerError("cross-fits of different rows or folds cannot be compared")
        return CrossFit(self.rows, self.predicted, self.folds, dict(enumerate(other.predicted)))


def evaluation_set(frame: Frame, policy: PolicyConfig, cross: CrossFit | None = None) -> Holdout:
    """The gate's holdout from :meth:`SampleStore.holdout`: corpus rows (negative ids) and recent reserved
    feedback (positive ids), plus the cross-fitted training samples of ``cross`` (current traffic too).
    With at least ``recent_min`` current rows, they carry :func:`recent_share` of the total weight: the
    evaluation judges a candidate on what it will serve, while the corpus holdout keeps its own per-slice
    no-regression check. Otherwise every row weighs the same."""
    cross_fitted = champion_cross_fitted = None
    if cross is not None:
        offset = len(frame)
        frame = Frame().extend(frame.rows()).extend(cross.rows.rows())
        cross_fitted = CrossFitted(rows=range(offset, len(frame)), labels=[label for label, _ in cross.predicted],
                                   confidence=[conf for _, conf in cross.predicted], folds=cross.folds)
        if cross.champion:
            positions = sorted(cross.champion)
            champion_cross_fitted = CrossFitted(
                rows=[offset + n for n in positions], labels=[cross.champion[n][0] for n in positions],
                confidence=[cross.champion[n][1] for n in positions], folds=cross.folds)
    current = [i > 0 for i in frame.ids]
    recent = sum(current)
    base = len(frame) - recent
    weights: list[float] | None = None
    if policy.recent_share > 0 and recent >= policy.recent_min and base > 0:
        share = recent_share(frame, policy)
        per_recent = share * base / ((1 - share) * recent)
        weights = [per_recent if i > 0 else 1.0 for i in frame.ids]
    return Holdout(frame.inputs, frame.labels, [s or "" for s in frame.slices], weights, current, cross_fitted,
                   champion_cross_fitted)


def recent_share(frame: Frame, policy: PolicyConfig) -> float:
    """The weight share of current traffic: ``recent_share`` while it falls in slices the corpus holdout
    covers, moving towards ``uncovered_recent_share`` with the fraction that does not (a corpus of movie
    reviews says little about a stream that turned to tweets). Rows without a slice count as covered."""
    covered = {s for i, s in zip(frame.ids, frame.slices, strict=True) if i < 0 and s}
    recent = [s for i, s in zip(frame.ids, frame.slices, strict=True) if i > 0]
    if not covered or not recent:
        return policy.recent_share
    uncovered = sum(1 for s in recent if s and s not in covered) / len(recent)
    return policy.recent_share + max(0.0, policy.uncovered_recent_share - policy.recent_share) * uncovered


def id_range(frame: Frame) -> str:
    """First..last feedback sample id trained on (corpus rows have negative ids and are not samples)."""
    known = [i for i in frame.ids if i > 0]
    return f"{min(known)}..{max(known)}" if known else "none"


def training_table(frame: Frame, features: FeatureSchema | None = None) -> pd.DataFrame:
    """The frame as the data-quality gate reads it: ``text`` (or one column per feature of ``features``),
    ``label``, ``weight``, ``domain``."""
    if features is None:
        return pd.DataFrame({"text": frame.inputs, "label": frame.labels, "weight": frame.weights,
                             "domain": frame.slices})
    rows = [value if isinstance(value, Mapping) else {} for value in frame.inputs]
    columns = {f.name: pd.Series([row.get(f.name) for row in rows], dtype=object) for f in features.features}
    return pd.DataFrame({**columns, "label": frame.labels, "weight": frame.weights, "domain": frame.slices})
