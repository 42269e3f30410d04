"""The registry of model kinds, and loading any saved model by the kind its manifest names."""

from __future__ import annotations

import inspect
from pathlib import Path

from kinds.base import ModelKind, Resources, read_manifest
from kinds.exceptions import ArtifactError, KindError
from kinds.lightgbm_kind import LightGBMKind
from kinds.minilm import MiniLMHead
from kinds.tfidf import TfidfLogReg
from kinds.xgboost_kind import XGBoostKind

KINDS: dict[str, type[ModelKind]] = {cls.kind: cls for cls in (TfidfLogReg, MiniLMHead, LightGBMKind, XGBoostKind)}


def create(kind: str, *, resources: Resources | None = None, **params: object) -> ModelKind:
    """An unfitted model of ``kind`` built from ``params``, bound to ``resources`` when given;
    :class:`KindError` if a parameter is missing or unknown."""
    try:
        cls = KINDS[kind]
    except KeyError:
        raise ArtifactError(Path(kind), f"unknown model kind; known: {sorted(KINDS)}") from None
    try:
        inspect.signature(cls).bind(**params)
    except TypeError as exc:  # a missing (the tree kinds' features) or unknown parameter
        raise KindError(f"{kind}: {exc}") from None
    model = cls(**params)
    return model.bind(resources) if resources is not None else model


def load_model(directory: Path, *, resources: Resources | None = None) -> ModelKind:
    """Verify every file against the manifest's sha256, then rebuild the model it describes, bound to
    ``resources`` when given."""
    manifest = read_manifest(directory)
    model = create(manifest["kind"], resources=resources, **manifest["params"])
    model.labels = tuple(manifest["labels"])
    model._load_files(directory)
    return model
