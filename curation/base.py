"""The curation stage's contract: what a pass reads and writes (``CurationStore``), and the value types
that flow between the store and the pure scorers.

A store answers the few questions a batch asks (pending feedback, LSH neighbours, cluster members,
recent label-quality scores, annotators) and writes one batch atomically with its watermark. The
Postgres store is the system of record; ``curation.memory.MemoryCurationStore`` is the fake for tests.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

Status = Literal["accepted", "quarantined", "rejected"]
# every reason a sample can carry, in the order they are listed
REASONS = ("no_label", "unknown_label", "no_target", "low_rating", "empty_response", "too_long", "toxic", "low_trust",
           "conflicting_duplicates", "label_issue", "outlier", "duplicate", "near_duplicate")


@dataclass(frozen=True)
class Pending:
    """A joined feedback row not curated yet, with what its prediction carried."""

    id: int
    feedback_id: str
    prediction_id: str
    text: str | None  # None for a model whose input is not a text (``input``)
    label: str | None  # the explicit label, or the served label for a thumbs up
    thumbs: str | None
    predicted_label: str | None
    probabilities: object  # as stored (jsonb); parsed defensively by the scorer
    user_id: str | None
    domain: str | None
    segment: str | None
    ts: datetime
    resolved_at: datetime | None
    model_version: str | None
    input: dict[str, object] | None = None  # the stored input of a non-text task (a tabular row, a prompt)
    output: dict[str, object] | None = None  # a generator's stored output (its ``text``, token counts)
    rating: int | None = None  # a generator's feedback: 1-5, the preferred response, the interaction signal
    correction: str | None = None
    signal: str | None = None


@dataclass(frozen=True)
class Neighbour:
    """A stored sample whose LSH bands collide with a new text's."""

    id: int
    cluster_id: int
    text_hash: bytes
    minhash: tuple[int, ...]
    bands: tuple[int, ...]


@dataclass(frozen=True)
class Member:
    """One sample of a near-duplicate cluster, as the cluster decision sees it."""

    id: int
    user_id: str | None
    label: str | None
    text_hash: bytes
    label_issue: bool = False
    unknown_label: bool = False
    trust: float | None = None  # the annotator's trust when the sample was curated (sets its weight)
    low_trust: bool = False  # the annotator is below the trust floor now
    trusted: bool = False  # the annotator is at or above the trusted level now (label issues are accepted)
    vote_weight: float = 1.0  # the annotator's trust now (weight of the vote in the consensus)
    outlier: bool = False  # a tabular row far outside the model's recent accepted rows (curation.outliers)


@dataclass(frozen=True)
class Verdict:
    status: Status
    weight: float
    reasons: tuple[str, ...] = ()


@dataclass
class Annotator:
    """Evidence about one user: labels judged against a consensus, and the outcome."""

    user_id: str
    agree: float = 0.0
    disagree: float = 0.0
    labels: int = 0
    low_trust: bool = False


@dataclass(frozen=True)
class StoredVerdict:
    """A stored sample's current verdict and its cluster-decision inputs (for re-curation)."""

    member: Member
    cluster_id: int
    verdict: Verdict


@dataclass(frozen=True)
class NewSample:
    """A row to insert into ``samples``."""

    pending: Pending
    verdict: Verdict
    cluster_id: int
    text_hash: bytes
    minhash: tuple[int, ...]
    bands: tuple[int, ...]
    disagreement: bool
    self_confidence: float | None
    label_issue: bool
    suggested_label: str | None
    trust: float | None
    target: str | None = None  # a generator's sample: the response to learn (None: none to learn)


@dataclass(frozen=True)
class StoredPair:
    """A stored sample of a generator, with what its verdict is decided from again (re-curation)."""

    id: int
    cluster_id: int
    user_id: str | None
    text_hash: bytes
    trust: float | None
    verdict: Verdict
    rating: int | None
    thumbs: str | None
    signal: str | None
    correction: str | None
    generated: str | None  # the served response


@dataclass
class BatchWrite:
    """Everything one batch changes, written in one transaction."""

    new: list[NewSample] = field(default_factory=list)
    changed: dict[int, Verdict] = field(default_factory=dict)  # stored sample id -> its new verdict
    annotators: list[Annotator] = field(default_factory=list)
    watermark: int = 0
    resolved_cursor: datetime | None = None


@dataclass(frozen=True)
class CursorState:
    watermark: int
    resolved_cursor: datetime | None


@dataclass(frozen=True)
class Backfill:
    """Signatures and scores of a sample migrated from the pre-curation view (its verdict stays)."""

    id: int
    text_hash: bytes
    minhash: tuple[int, ...]
    bands: tuple[int, ...]
    disagreement: bool
    self_confidence: float | None


class CurationStore(ABC):
    """Reads and writes of one curation pass. ``batch()`` opens one atomic unit: the reads inside it and
    the ``write`` that ends it commit together (Postgres: one transaction), or not at all."""

    @abstractmethod
    def batch(self) -> AbstractContextManager[None]: ...

    @abstractmethod
    def cursor(self) -> CursorState:
        """The watermark and late-join cursor (inside ``batch``: locked until it ends)."""

    @abstractmethod
    def pending(self, state: CursorState, since: datetime | None, limit: int, *, sweep: bool) -> list[Pending]:
        """Joined feedback without a sample: ``id > watermark``, or resolved at/after ``since`` (late
        joins); with ``sweep`` every such row whatever its id."""

    @abstractmethod
    def neighbours(self, bands: Iterable[int]) -> list[Neighbour]: ...

    @abstractmethod
    def recent_scores(self, window: int) -> list[tuple[str | None, str, float]]:
        """(slice, label, self-confidence) of the ``window`` most recent scored samples; the slice is
        ``COALESCE(domain, segment)``."""

    def recent_inputs(self, window: int) -> list[dict[str, object]]:
        """The stored inputs (``input``: a tabular row's ``{"features": ...}``) of the ``window`` most recent
        accepted samples that have one; the reference the outlier check reads. Default: none."""
        return []

    @abstractmethod
    def annotators(self, user_ids: Iterable[str]) -> dict[str, Annotator]: ...

    @abstractmethod
    def judged_annotators(self, min_labels: int) -> dict[str, Annotator]:
        """Every user with at least ``min_labels`` judged labels (read, not locked: the 'fdr' trust rule
        compares each with all of them)."""

    @abstractmethod
    def members(self, cluster_ids: Iterable[int]) -> list[StoredVerdict]: ...

    def pairs(self, cluster_ids: Iterable[int]) -> list[StoredPair]:
        """The stored samples of a generator in these clusters (the generator's ``members``)."""
        raise NotImplementedError(f"{type(self).__name__} does not store a generator's samples")

    @abstractmethod
    def clusters_of(self, user_ids: Iterable[str]) -> set[int]: ...

    @abstractmethod
    def write(self, batch: BatchWrite) -> None: ...

    @abstractmethod
    def unscored(self, limit: int) -> Sequence[Pending]:
        """Samples migrated from the pre-curation view that still lack signatures."""

    @abstractmethod
    def backfill(self, rows: Sequence[Backfill]) -> None:
        """Store signatures and scores of migrated samples without changing their verdicts."""
