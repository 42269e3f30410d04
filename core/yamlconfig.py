"""Frozen pydantic configs read from YAML files (trainer policy, canary controller): one reader, one
error wording. A missing path means the model's defaults; unknown keys are the model's to refuse."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import yaml
from pydantic import BaseModel, ValidationError

M = TypeVar("M", bound=BaseModel)


def load_yaml_model(model: type[M], path: Path | None, what: str, error: Callable[[str], Exception]) -> M:
    """``model`` from the YAML at ``path``; problems raise ``error(message)`` naming the file and keys."""
    if path is None:
        return model()
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise error(f"{path}: cannot read the {what}: {exc}") from exc
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        errors = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise error(f"{path}: invalid {what}: {errors}") from exc
