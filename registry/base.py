"""The registry contract: versions with a semver and lineage, three aliases, verified artifacts.

A store implements the storage hooks (:mod:`registry.mlflow_registry` on MLflow); the alias policy
lives here once: ``promote`` moves ``champion`` and keeps the old one as ``previous``; ``rollback``
moves ``champion`` back and marks the version it left; ``fetch`` refuses bytes that changed since
registration, and no alias moves to a version whose artifact does not verify. Alias moves run under
:meth:`ModelRegistry._exclusive` (one writer across processes).
"""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from pathlib import Path

from kinds.base import ModelKind, Resources
from kinds.catalog import load_model
from registry._blobs import GRACE_S
from registry._verify import verify_artifact
from registry.exceptions import (
    ChampionChanged,
    InvalidRequest,
    NoChampion,
    NoPrevious,
    NoSuchVersion,
    TamperedArtifact,
)
from registry.semver import Mode, Semver
from registry.types import (
    CHALLENGER,
    CHAMPION,
    IDENTITY_TAGS,
    PREVIOUS,
    UNCHECKED,
    BlobCollection,
    Expected,
    Lineage,
    ModelVersionInfo,
    Transition,
    Unchecked,
    VersionRef,
)

_ROLLBACK_TAGS = ("rolled_back", "rollback_reason", "rolled_back_to")
_MAX_VERSION = 2**31 - 1  # MLflow stores version numbers as a 32-bit integer


class RunHandle(ABC):
    """One tracked run: every training attempt is recorded, refused ones included."""

    run_id: str
    artifact_uri: str  # where log_artifact(s) write

    @abstractmethod
    def log_params(self, params: Mapping[str, object]) -> None: ...

    @abstractmethod
    def log_metrics(self, metrics: Mapping[str, float], step: int = 0) -> None: ...

    @abstractmethod
    def set_tags(self, tags: Mapping[str, str]) -> None: ...

    @abstractmethod
    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None: ...

    @abstractmethod
    def log_artifacts(self, directory: Path, artifact_path: str | None = None) -> None: ...

    @abstractmethod
    def log_text(self, text: str, artifact_file: str) -> None:
        """Write ``text`` (a gate report as JSON or HTML) to ``artifact_file`` in the run."""


class ModelRegistry(ABC):
    """The versions of one model (``model_name``) and its aliases."""

    model_name: str

    # -- storage hooks ---------------------------------------------------------------------------
    @abstractmethod
    def register(self, artifact_dir: Path, *, mode: Mode, metrics: Mapping[str, float], lineage: Lineage,
                 run_id: str | None = None, kind: str | None = None, labels: Sequence[str] | None = None,
                 code_version: str | None = None) -> ModelVersionInfo:
        """Store a saved model as a new version. Its kind and labels come from its manifest (``kind``
        and ``labels``, when given, must agree); metrics go to the MLflow run ``run_id`` (default: a
        new run); the semver follows :func:`registry.semver.next_semver` from the parent."""

    @abstractmethod
    def versions(self) -> list[ModelVersionInfo]:
        """Every version, oldest first."""

    @abstractmethod
    def aliases(self) -> dict[str, str]:
        """Alias -> version."""

    @abstractmethod
    def set_alias(self, alias: str, ref: VersionRef) -> None: ...

    @abstractmethod
    def delete_alias(self, alias: str) -> None:
        """Remove ``alias``; nothing happens when it is not set."""

    @abstractmethod
    def run(self, name: str, tags: Mapping[str, str] | None = None) -> AbstractContextManager[RunHandle]:
        """A tracked run that ends FINISHED, or FAILED when the block raises."""

    @abstractmethod
    def _by_number(self, version: str) -> ModelVersionInfo: ...

    @abstractmethod
    def _by_semver(self, semver: str) -> ModelVersionInfo: ...

    @abstractmethod
    def _set_tags(self, version: str, tags: Mapping[str, str]) -> None: ...

    @abstractmethod
    def _delete_tags(self, version: str, keys: Sequence[str]) -> None: ...

    @abstractmethod
    def _delete_version(self, version: str) -> None: ...

    @abstractmethod
    def _artifact_dir(self, info: ModelVersionInfo, dst: Path | None) -> Path:
        """The stored artifact as a local directory (downloaded into ``dst`` when given)."""

    def collect_blobs(self, *, grace_s: float = GRACE_S, dry_run: bool = False) -> BlobCollection:
        """Remove stored files shared by content that no registered version uses any more (a store that
        shares none has nothing to collect)."""
        return BlobCollection(removed=(), stray_links=0, freed_bytes=0, kept=0, kept_young=0, dry_run=dry_run)

    def _exclusive(self) -> AbstractContextManager[object]:
        """Held around read-modify-write sequences; a store shared by processes overrides it."""
        return contextlib.nullcontext()

    # -- lookups and edits -----------------------------------------------------------------------
    def get(self, ref: VersionRef) -> ModelVersionInfo:
        ref = str(ref)
        if ref.isascii() and ref.isdigit():
            if not 0 < int(ref) <= _MAX_VERSION:  # beyond the store's integer column: no such version
                raise NoSuchVersion(self.model_name, ref)
            return self._by_number(str(int(ref)))
        if Semver.is_semver(ref):
            return self._by_semver(ref)
        version = self.aliases().get(ref)
        if version is not None:
            return self._by_number(version)
        if ref == CHAMPION:
            raise NoChampion(self.model_name)
        if ref == PREVIOUS:
            raise NoPrevious(self.model_name)
        raise NoSuchVersion(self.model_name, ref)

    def champion(self) -> ModelVersionInfo | None:
        version = self.aliases().get(CHAMPION)
        return None if version is None else self._by_number(version)

    def set_tag(self, ref: VersionRef, key: str, value: str) -> None:
        if key in IDENTITY_TAGS:
            raise InvalidRequest(self.model_name, f"tag {key!r} is part of the registered identity")
        self._set_tags(self.get(ref).version, {key: value})

    def delete_version(self, ref: VersionRef) -> None:
        """Drop a version no alias points at (e.g. one registered by a run that then crashed)."""
        with self._exclusive():
            info = self.get(ref)
            if info.aliases:
                raise InvalidRequest(self.model_name, f"version {info.version} is {', '.join(info.aliases)}")
            self._delete_version(info.version)

    # -- alias policy ----------------------------------------------------------------------------
    def promote(self, ref: VersionRef, reason: str, *, expected: Expected = UNCHECKED) -> Transition:
        """``champion`` -> ``ref``; the old champion becomes ``previous``; the challenger is cleared (it was
        ``ref``, or its canary ends with the champion it was measured against: the ``promote`` event ends
        every canary for the pods too). Promoting the champion again changes nothing (safe to retry).
        A version whose artifact does not verify is refused (:class:`TamperedArtifact`).
        ``expected``: the champion ``ref`` was judged against (None: there was none, a bootstrap); when another
        version (or none) is the champion by now (a promotion or rollback came in between), nothing changes
        and :class:`ChampionChanged` is raised."""
        with self._exclusive():
            target, aliases = self.get(ref), self.aliases()
            old = aliases.get(CHAMPION)
            self._still_champion(expected, old, "promotion")
            if old != target.version:  # tags first: the champion alias moving is the commit point
                self.fetch(target.version)
                tags = {"promotion_reason": reason} | ({} if old is None else {"previous_champion": old})
                self._set_tags(target.version, tags)
                stale = (*_ROLLBACK_TAGS, "previous_champion")
                self._delete_tags(target.version, [k for k in stale if k in target.tags and k not in tags])
                if old is not None:
                    self.set_alias(PREVIOUS, old)
                self.set_alias(CHAMPION, target.version)
            challenger = aliases.get(CHALLENGER)
            if challenger is not None and (challenger == target.version or old != target.version):
                self.delete_alias(CHALLENGER)
            return Transition("promote", self.model_name, old, target.version, reason, self.get(target.version))

    def mark_challenger(self, ref: VersionRef, reason: str = "") -> Transition:
        with self._exclusive():
            target, aliases = self.get(ref), self.aliases()
            if aliases.get(CHAMPION) == target.version:
                raise InvalidRequest(self.model_name, f"version {target.version} is the champion")
            self.fetch(target.version)
            self.set_alias(CHALLENGER, target.version)
            return Transition("challenger", self.model_name, aliases.get(CHALLENGER), target.version, reason,
                              self.get(target.version))

    def rollback(self, to: VersionRef | None = None, reason: str = "", *, expected: Expected = UNCHECKED
                 ) -> Transition:
        """``champion`` -> ``to`` (default: ``previous``). The version left is tagged ``rolled_back``;
        ``previous`` becomes the champion that preceded ``to`` (unless rolled back too), else is cleared;
        the challenger is cleared. A ``to`` whose artifact does not verify is refused (:class:`TamperedArtifact`).
        ``expected``: the champion the rollback was decided on; when another version is the champion by now
        (a promotion came in between), nothing changes and :class:`ChampionChanged` is raised."""
        with self._exclusive():
            aliases = self.aliases()
            current = aliases.get(CHAMPION)
            if current is None:
                raise NoChampion(self.model_name)
            self._still_champion(expected, current, "rollback")
            target = self.get(PREVIOUS if to is None else to)
            if target.version == current:
                raise InvalidRequest(self.model_name, f"version {current} is already the champion")
            self.fetch(target.version)
            self._set_tags(current, {"rolled_back": "true", "rollback_reason": reason,
                                     "rolled_back_to": target.version})
            self._delete_tags(target.version, [k for k in _ROLLBACK_TAGS if k in target.tags])  # reinstated
            self.set_alias(CHAMPION, target.version)
            before = self._maybe(target.tags.get("previous_champion"))
            if before is not None and before.version != current and not before.rolled_back:
                self.set_alias(PREVIOUS, before.version)
            else:
                self.delete_alias(PREVIOUS)
            if CHALLENGER in aliases:  # a rollback ends any canary, as its event does for the pods
                self.delete_alias(CHALLENGER)
            return Transition("rollback", self.model_name, current, target.version, reason,
                              self.get(target.version))

    def _still_champion(self, expected: Expected, current: str | None, action: str) -> None:
        """Raise :class:`ChampionChanged` when ``expected`` (None: no champion; UNCHECKED: not checked) is
        not ``current``."""
        if isinstance(expected, Unchecked):
            return
        wanted = None if expected is None else self.get(expected).version
        if wanted != current:
            raise ChampionChanged(self.model_name, wanted, current, action)

    def _maybe(self, ref: VersionRef | None) -> ModelVersionInfo | None:
        if ref is None or ref == "":
            return None
        with contextlib.suppress(NoSuchVersion):
            return self.get(ref)
        return None

    # -- artifacts -------------------------------------------------------------------------------
    def fetch(self, ref: VersionRef, dst: Path | None = None) -> Path:
        """The artifact directory of ``ref`` after checking its bytes against the registered sha256
        and the manifest's per-file hashes. For a local store without ``dst`` this is the stored copy
        itself: read it, never write."""
        info = self.get(ref)
        directory = self._artifact_dir(info, dst)
        verify_artifact(info, directory)
        return directory

    def load(self, ref: VersionRef, resources: Resources | None = None) -> ModelKind:
        """The model of ``ref`` from its verified artifact, bound to ``resources`` when given."""
        info = self.get(ref)
        directory = self.fetch(info.version)
        try:
            return load_model(directory, resources=resources)
        except TamperedArtifact as exc:  # changed between fetch and load
            raise TamperedArtifact(exc.path, exc.detail, model=self.model_name, version=info.version) from exc
