"""The registry of model kinds, and loading any saved model by the kind its manifest names.

``KINDS`` holds the classifier kinds (:class:`ModelKind`), ``GENERATORS`` the generator kinds
(:class:`GeneratorKind`, task ``text-generation``); ``create`` and ``load_model`` know both: a generator is
created or loaded with :class:`GeneratorResources` (the shared base model), typed by the overloads."""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Literal, overload

from kinds.base import ModelKind, Resources, read_manifest
from kinds.exceptions import ArtifactError, KindError
from kinds.generation import GeneratorKind, GeneratorResources
from kinds.lightgbm_kind import LightGBMKind
from kinds.minilm import MiniLMHead
from kinds.tfidf import TfidfLogReg
from kinds.xgboost_kind import XGBoostKind

KINDS: dict[str, type[ModelKind]] = {cls.kind: cls for cls in (TfidfLogReg, MiniLMHead, LightGBMKind, XGBoostKind)}



class _Generators(Mapping[str, type[GeneratorKind]]):
    """The generator kinds by name, each imported on first use: a generator kind needs torch and peft, which
    a classifier's serving pod never imports (its MiniLM encoder runs on onnxruntime, issue 22)."""

    _where = {"smollm2-lora": ("kinds.smollm2_lora", "SmolLM2LoRA")}

    def __getitem__(self, kind: str) -> type[GeneratorKind]:
        module, name = self._where[kind]
        cls: type[GeneratorKind] = getattr(importlib.import_module(module), name)
        return cls

    def __contains__(self, kind: object) -> bool:
        return kind in self._where

    def __iter__(self) -> Iterator[str]:
        return iter(self._where)

    def __len__(self) -> int:
        return len(self._where)


GENERATORS: Mapping[str, type[GeneratorKind]] = _Generators()
GeneratorKindName = Literal["smollm2-lora"]


def kind_class(kind: str) -> type[ModelKind] | type[GeneratorKind]:
    """The class of ``kind``, a classifier or a generator kind (:class:`ArtifactError` if unknown)."""
    cls = KINDS.get(kind) or GENERATORS.get(kind)
    if cls is None:
        raise ArtifactError(Path(kind), f"unknown model kind; known: {sorted([*KINDS, *GENERATORS])}")
    return cls


@overload
def create(kind: GeneratorKindName, *, resources: GeneratorResources | None = None,  # type: ignore[overload-overlap]
           **params: object) -> GeneratorKind: ...
@overload
def create(kind: str, *, resources: Resources | None = None, **params: object) -> ModelKind: ...
def create(kind: str, *, resources: Resources | GeneratorResources | None = None, **params: object) -> Any:
    """An unfitted model of ``kind`` built from ``params``, bound to ``resources`` when given;
    :class:`KindError` if a parameter is missing or unknown, or the resources are not the kind's."""
    cls = kind_class(kind)
    try:
        inspect.signature(cls).bind(**params)
    except TypeError as exc:  # a missing (the tree kinds' features) or unknown parameter
        raise KindError(f"{kind}: {exc}") from None
    model = cls(**params)
    if resources is None:
        return model
    if isinstance(model, GeneratorKind) != isinstance(resources, GeneratorResources):
        raise KindError(f"{kind} cannot bind {type(resources).__name__}")
    return model.bind(resources)  # type: ignore[arg-type]  # matched just above


@overload
def load_model(directory: Path, *, resources: GeneratorResources) -> GeneratorKind: ...
@overload
def load_model(directory: Path, *, resources: Resources | None = None) -> ModelKind: ...
def load_model(directory: Path, *, resources: Resources | GeneratorResources | None = None) -> Any:
    """Verify every file against the manifest's sha256, then rebuild the model it describes, bound to
    ``resources`` when given (a generator needs :class:`GeneratorResources`: its adapter goes on that
    base, which is not loaded again)."""
    manifest = read_manifest(directory)
    kind = manifest["kind"]
    if kind in GENERATORS:
        if not isinstance(resources, GeneratorResources):
            raise KindError(f"{directory}: a {kind} generator loads onto a base model: pass "
                            "resources=GeneratorResources(base=load_base(...))")
        generator = GENERATORS[kind](**manifest["params"]).bind(resources)
        generator._load_files(directory)
        return generator
    model = KINDS[kind](**manifest["params"]) if kind in KINDS else create(kind, **manifest["params"])
    if resources is not None:
        if not isinstance(resources, Resources):
            raise KindError(f"{directory}: a {kind} model binds Resources, not {type(resources).__name__}")
        model = model.bind(resources)
    model.labels = tuple(manifest["labels"])
    model._load_files(directory)
    return model
