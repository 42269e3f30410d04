"""The contract every model kind fulfils (river's ``base/classifier.py`` habit: small hooks, working
defaults). Constructor parameters are the whole configuration: ``params`` + ``kind`` rebuild the model.

A kind serves one or more tasks (``tasks``): its inputs are what the task takes, a text for
``text-classification``, a feature row (``Mapping[str, Scalar]``) for ``tabular-classification``.

Artifacts are safe formats only (JSON, ``.npz`` without pickle, safetensors), written with a manifest
that records the sha256 of every file; ``load_model`` refuses an artifact whose bytes changed.
"""

from __future__ import annotations

import hashlib
import json
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Self, cast

import numpy as np
import numpy.typing as npt

from kinds.exceptions import ArtifactError, KindError, NotFitted, TamperedArtifact, UnknownLabel
from kinds.search_space import Dimension
from tasks.features import Input

if TYPE_CHECKING:
    from kinds.embeddings import Embedder

MANIFEST = "manifest.json"
FORMAT_VERSION = 1
Probabilities = npt.NDArray[np.float64]


@dataclass(frozen=True)
class Resources:
    """The shared collaborators a model is bound to when created or loaded (:meth:`ModelKind.bind`):
    ``embedder``, the encoder and cache a ``minilm-head`` embeds through (None: the head's own)."""

    embedder: Embedder | None = None


class ModelKind(ABC):
    """A classifier of the inputs of its ``tasks`` with a fixed label set after ``fit``."""

    kind: ClassVar[str]
    tasks: ClassVar[frozenset[str]]  # the tasks whose inputs it takes ("text-classification", ...)
    search_space: ClassVar[dict[str, Dimension]] = {}  # constructor params worth tuning, and their ranges
    batches: ClassVar[bool] = False  # serving: many texts per predict_proba call are much cheaper per text
    inline: ClassVar[bool] = False  # serving: predict_proba is cheap (well under 1 ms a text): run it on the event loop

    def __init__(self, **params: Any) -> None:
        self.params: dict[str, Any] = dict(params)
        self.labels: tuple[str, ...] = ()

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in sorted(self.params.items()))
        return f"{type(self).__name__}({args})"

    def clone(self) -> Self:
        """The same configuration, unfitted."""
        return type(self)(**self.params)

    def bind(self, resources: Resources) -> Self:
        """Use the collaborators of ``resources`` this kind needs; the default needs none."""
        return self

    @property
    def fitted(self) -> bool:
        return bool(self.labels)

    # -- learning ------------------------------------------------------------------------------
    @abstractmethod
    def fit(self, inputs: Sequence[Input], labels: Sequence[str], weights: Sequence[float] | None = None) -> Self:
        """Train from scratch; the label set becomes the sorted distinct ``labels``."""

    def partial_fit(self, inputs: Sequence[Input], labels: Sequence[str],
                    weights: Sequence[float] | None = None) -> Self:
        """Warm start from the current state on new samples (plus whatever replay the caller adds).
        The label set is kept; the default refits from scratch on the given samples."""
        self._require_fitted()
        self._check_labels(labels)
        return self.fit(inputs, labels, weights)

    def solution(self) -> Any:
        """What another fit may start its solver at (:meth:`starting_at`), as plain data (it travels to the
        fit workers); None (the default): the kind's fit takes no start."""
        return None

    def starting_at(self, solution: Any) -> Self:
        """Start the next :meth:`fit` at ``solution`` (a fitted model's :meth:`solution`): for a kind whose
        objective has one optimum, the same model up to the solver's tolerance in fewer iterations. The
        default ignores it."""
        return self

    @abstractmethod
    def predict_proba(self, inputs: Sequence[Input]) -> Probabilities:
        """Shape (n, len(labels)); columns in ``labels`` order; rows sum to 1."""

    def predict_proba_parts(self, inputs: Sequence[Input]) -> Iterator[tuple[list[int], Probabilities]]:
        """``predict_proba(inputs)`` a part at a time, as (rows of ``inputs``, their probabilities), each row
        as ``predict_proba`` gives it: for a caller that can use the first rows before the last are done
        (the serving micro-batcher). The default: one part."""
        yield list(range(len(inputs))), self.predict_proba(inputs)

    def predict(self, inputs: Sequence[Input]) -> list[str]:
        proba = self.predict_proba(inputs)
        return [self.labels[i] for i in proba.argmax(axis=1)]

    # -- artifacts -----------------------------------------------------------------------------
    @abstractmethod
    def _save_files(self, directory: Path) -> list[str]:
        """Write the fitted state into ``directory``; return the file names written."""

    @abstractmethod
    def _load_files(self, directory: Path) -> None:
        """Restore the fitted state written by ``_save_files`` (``labels`` is restored by the caller)."""

    def save(self, directory: Path) -> dict[str, Any]:
        """Write the artifact and its manifest; return the manifest (with an ``sha256`` of its own)."""
        self._require_fitted()
        directory.mkdir(parents=True, exist_ok=True)
        files = self._save_files(directory)
        manifest: dict[str, Any] = {
            "format_version": FORMAT_VERSION, "kind": self.kind, "params": self.params, "labels": list(self.labels),
            "files": {name: _sha256(directory / name) for name in sorted(files)},
        }
        (directory / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True))
        return {**manifest, "sha256": artifact_sha256(directory)}

    def _require_fitted(self) -> None:
        if not self.fitted:
            raise NotFitted(f"{self!r} is not fitted")

    def _check_labels(self, labels: Sequence[str]) -> None:
        unknown = set(labels) - set(self.labels)
        if unknown:
            raise UnknownLabel(f"labels {sorted(unknown)} are not in the model's label set {list(self.labels)}")


def as_texts(inputs: Sequence[Input]) -> Sequence[str]:
    """``inputs`` as texts (the text kinds' narrowing), or :class:`KindError` if one is not a string."""
    if not all(isinstance(x, str) for x in inputs):
        bad = next(type(x).__name__ for x in inputs if not isinstance(x, str))
        raise KindError(f"this kind takes texts (text-classification), got a {bad}")
    return cast(Sequence[str], inputs)


def read_manifest(directory: Path) -> dict[str, Any]:
    """The manifest of a saved model, after checking every file against its recorded sha256."""
    try:
        manifest: dict[str, Any] = json.loads((directory / MANIFEST).read_text())
    except (OSError, ValueError) as exc:
        raise ArtifactError(directory, f"no readable {MANIFEST}: {exc}") from exc
    if manifest.get("format_version") != FORMAT_VERSION:
        raise ArtifactError(directory, f"unsupported format_version {manifest.get('format_version')!r}")
    for name, digest in manifest.get("files", {}).items():
        path = directory / name
        if not path.is_file() or _sha256(path) != digest:
            raise TamperedArtifact(path, "missing, or its sha256 differs from the manifest")
    return manifest


def artifact_sha256(directory: Path) -> str:
    """One digest for the whole artifact: the sha256 of its manifest (which pins every file)."""
    return _sha256(directory / MANIFEST)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
