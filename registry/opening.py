"""Opening the registry of one model (from a backend URI, or as every Flywheel process does from its
settings): imports MLflow (offline) on first use."""

from __future__ import annotations

from pathlib import Path

from core.settings import FlywheelSettings
from registry._offline import IMPORT_LOCK, go_offline
from registry.backend import postgres_backend
from registry.base import ModelRegistry


def open_registry(backend: str, artifact_root: Path, model_name: str) -> ModelRegistry:
    """The MLflow registry of ``model_name`` on ``backend`` (see :func:`postgres_backend`,
    :func:`sqlite_backend`), artifacts under ``artifact_root``. Imports MLflow on first use, offline."""
    with IMPORT_LOCK:
        go_offline()
        from registry.mlflow_registry import MlflowRegistry

    return MlflowRegistry.open(backend, artifact_root, model_name)


def registry_backend(settings: FlywheelSettings, database_url: str) -> str:
    """The platform's registry backend: ``FLYWHEEL_REGISTRY_URI``, else the ``mlflow`` schema of the
    platform database at ``database_url``."""
    if settings.registry_uri is not None:
        return settings.registry_uri.get_secret_value()
    return postgres_backend(database_url)


def artifact_root(settings: FlywheelSettings) -> Path:
    """Where the platform's model artifacts live (``<data_dir>/mlartifacts``, absolute)."""
    return (settings.data_dir / "mlartifacts").resolve()


def open_from_settings(settings: FlywheelSettings, database_url: str) -> ModelRegistry:
    """The registry of ``settings.model_name`` every Flywheel process opens: trainer, pods, CLI, MLflow UI."""
    return open_registry(registry_backend(settings, database_url), artifact_root(settings), settings.model_name)
