"""Model kinds (one contract, one conformance suite); the trainer consumer comes with its issue."""

from trainer.base import ModelKind, artifact_sha256, read_manifest
from trainer.exceptions import ArtifactError, NotFitted, TamperedArtifact, TrainerError, UnknownLabel
from trainer.kinds import KINDS, create, load_model
from trainer.tfidf import TfidfLogReg

__all__ = [
    "KINDS",
    "ArtifactError",
    "ModelKind",
    "NotFitted",
    "TamperedArtifact",
    "TfidfLogReg",
    "TrainerError",
    "UnknownLabel",
    "artifact_sha256",
    "create",
    "load_model",
    "read_manifest",
]
