"""The registry's value types: a version, its lineage, an alias move."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

CHAMPION, CHALLENGER, PREVIOUS = "champion", "challenger", "previous"
VersionRef = str | int  # an MLflow version number ("3"), a semver ("1.2.0") or an alias ("champion")


class Unchecked(enum.Enum):
    """The default ``expected`` of an alias move: which version is the champion is not checked."""

    UNCHECKED = "unchecked"


UNCHECKED = Unchecked.UNCHECKED
# the champion an alias move was decided on: a version, None (there was none: a bootstrap), or UNCHECKED
Expected = VersionRef | None | Unchecked
# written once by ``register``; ``set_tag`` refuses to change them (the sha256 is what ``fetch`` trusts)
IDENTITY_TAGS = frozenset({"semver", "kind", "labels", "sha256", "mode", "parent_version", "data_hash",
                           "watermark", "sample_count", "sample_first_id", "sample_last_id", "code_version",
                           "training_run_id"})


@dataclass(frozen=True, slots=True)
class Lineage:
    """Where a model comes from: its data (hash, watermark, sample ids), its parent version
    (``None``: the current champion, if any) and the platform's training run that produced it."""

    data_hash: str
    watermark: int
    sample_count: int
    sample_range: tuple[int, int] | None = None
    parent_version: VersionRef | None = None
    training_run_id: str | None = None
    corpus_weight: float | None = None  # the corpus rows' training weight (None: no corpus, or not recorded)
    searched_params: Mapping[str, object] | None = None  # what a hyperparameter search chose (tag, JSON)


@dataclass(frozen=True, slots=True)
class ModelVersionInfo:
    """One registered version, as stored (``tags`` holds every tag, including the ones parsed here)."""

    model: str
    version: str  # MLflow's version number
    semver: str
    kind: str
    labels: tuple[str, ...]
    mode: str
    sha256: str  # of the artifact's manifest (kinds.base.artifact_sha256)
    artifact_uri: str
    run_id: str | None  # the MLflow run holding the artifact and the metrics
    created_at: datetime
    parent_version: str | None = None  # semver of the parent
    data_hash: str = ""
    watermark: int | None = None
    sample_count: int | None = None
    code_version: str = ""
    aliases: tuple[str, ...] = ()
    tags: Mapping[str, str] = field(default_factory=dict)

    @property
    def rolled_back(self) -> bool:
        return self.tags.get("rolled_back") == "true"


@dataclass(frozen=True, slots=True)
class Transition:
    """An alias move, for the caller to publish: the alias went from ``from_version`` (``None``: it was
    unset) to ``to_version``, whose state after the move is ``info``."""

    action: Literal["promote", "rollback", "challenger"]
    model: str
    from_version: str | None
    to_version: str
    reason: str
    info: ModelVersionInfo


@dataclass(frozen=True, slots=True)
class BlobCollection:
    """What a blob garbage collection found (and removed, unless it was a dry run): the blobs no registered
    version links to any more, the other links to them it removed (stored copies of deleted versions or
    failed runs), and the bytes that frees. ``kept_young`` blobs were unreferenced but changed within the
    grace period (a registration may be about to link them)."""

    removed: tuple[str, ...]  # sha256 of each blob removed
    stray_links: int
    freed_bytes: int
    kept: int  # blobs a registered version links to
    kept_young: int
    dry_run: bool
