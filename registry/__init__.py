"""The model registry: MLflow versions, semver tags, aliases and lineage.

``open_registry(backend, artifact_root, model_name)`` opens the MLflow implementation; importing this
package does not import MLflow (that happens, offline, on the first open).
"""

from registry.backend import postgres_backend, sqlite_backend
from registry.base import ModelRegistry, RunHandle
from registry.exceptions import (
    ChampionChanged,
    DeployRecordError,
    InvalidRequest,
    NoChampion,
    NoPrevious,
    NoSuchVersion,
    RegistryError,
    RegistryStoreError,
    TamperedArtifact,
)
from registry.opening import artifact_root, open_from_settings, open_registry, registry_backend
from registry.semver import Mode, Semver, next_semver
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
    VersionRef,
)

__all__ = [
    "CHALLENGER",
    "CHAMPION",
    "IDENTITY_TAGS",
    "PREVIOUS",
    "UNCHECKED",
    "BlobCollection",
    "ChampionChanged",
    "DeployRecordError",
    "Expected",
    "InvalidRequest",
    "Lineage",
    "Mode",
    "ModelRegistry",
    "ModelVersionInfo",
    "NoChampion",
    "NoPrevious",
    "NoSuchVersion",
    "RegistryError",
    "RegistryStoreError",
    "RunHandle",
    "Semver",
    "TamperedArtifact",
    "Transition",
    "VersionRef",
    "artifact_root",
    "next_semver",
    "open_from_settings",
    "open_registry",
    "postgres_backend",
    "registry_backend",
    "sqlite_backend",
]
