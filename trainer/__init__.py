"""Model kinds (one contract, one conformance suite); the trainer consumer comes with its issue."""

from trainer.base import ModelKind, artifact_sha256, read_manifest
from trainer.embeddings import (
    Embedder,
    EmbeddingCache,
    LayeredEmbeddingCache,
    MemoryEmbeddingCache,
    PostgresEmbeddingCache,
)
from trainer.encoder import Encoder, HashingEncoder, TextEncoder, shared_encoder
from trainer.exceptions import (
    ArtifactError,
    EmbeddingCacheError,
    EncoderError,
    EncoderMismatch,
    NotFitted,
    TamperedArtifact,
    TrainerError,
    UnknownLabel,
)
from trainer.kinds import KINDS, create, load_model
from trainer.minilm import MiniLMHead, default_embedder, set_default_embedder
from trainer.tfidf import TfidfLogReg

__all__ = [
    "KINDS",
    "ArtifactError",
    "Embedder",
    "EmbeddingCache",
    "EmbeddingCacheError",
    "Encoder",
    "EncoderError",
    "EncoderMismatch",
    "HashingEncoder",
    "LayeredEmbeddingCache",
    "MemoryEmbeddingCache",
    "MiniLMHead",
    "ModelKind",
    "NotFitted",
    "PostgresEmbeddingCache",
    "TamperedArtifact",
    "TextEncoder",
    "TfidfLogReg",
    "TrainerError",
    "UnknownLabel",
    "artifact_sha256",
    "create",
    "default_embedder",
    "load_model",
    "read_manifest",
    "set_default_embedder",
    "shared_encoder",
]
