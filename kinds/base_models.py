"""Base models for generator kinds (placeholder: being written; the BaseModel type is the contract)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True, eq=False)
class BaseModel:
    """A loaded base model: ``name`` (e.g. ``smollm2-135m-instruct``), the torch ``model``
    (a LlamaForCausalLM, frozen), its ``tokenizer``, the ``directory`` it was loaded from and the sha256 of
    its weights (``digest``)."""

    name: str
    model: Any
    tokenizer: Any
    directory: Path
    digest: str
