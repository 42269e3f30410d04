"""Opening the registry of one model: imports MLflow (offline) on first use."""

from __future__ import annotations

from pathlib import Path

from registry._offline import IMPORT_LOCK, go_offline
from registry.base import ModelRegistry


def open_registry(backend: str, artifact_root: Path, model_name: str) -> ModelRegistry:
    """The MLflow registry of ``model_name`` on ``backend`` (see :func:`postgres_backend`,
    :func:`sqlite_backend`), artifacts under ``artifact_root``. Imports MLflow on first use, offline."""
    with IMPORT_LOCK:
        go_offline()
        from registry.mlflow_registry import MlflowRegistry

    return MlflowRegistry.open(backend, artifact_root, model_name)
