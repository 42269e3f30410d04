"""Model kinds: one contract (fit, warm start, predict_proba, sha256-pinned pickle-free artifacts), the
implementations (text-classification: ``tfidf-logreg``, ``minilm-head``; tabular-classification:
``lightgbm``, ``xgboost``), and loading any saved model by the kind its manifest names. Both the trainer
(which fits them) and serving (which loads and predicts with them) import this package; it imports
neither."""

from kinds.base import ModelKind, Probabilities, Resources, artifact_sha256, read_manifest
from kinds.catalog import KINDS, create, load_model
from kinds.embeddings import (
    Embedder,
    EmbeddingCache,
    LayeredEmbeddingCache,
    MemoryEmbeddingCache,
    PostgresEmbeddingCache,
)
from kinds.encoder import Encoder, TextEncoder, shared_encoder
from kinds.exceptions import (
    ArtifactError,
    EmbeddingCacheError,
    EncoderError,
    EncoderMismatch,
    KindError,
    NotFitted,
    TamperedArtifact,
    UnknownLabel,
)
from kinds.lightgbm_kind import LightGBMKind
from kinds.minilm import MiniLMHead
from kinds.search_space import Choice, Dimension, FloatRange, IntRange
from kinds.tabular import TabularKind
from kinds.tfidf import TfidfLogReg
from kinds.xgboost_kind import XGBoostKind

__all__ = [
    "KINDS",
    "ArtifactError",
    "Choice",
    "Dimension",
    "Embedder",
    "EmbeddingCache",
    "EmbeddingCacheError",
    "Encoder",
    "EncoderError",
    "EncoderMismatch",
    "FloatRange",
    "IntRange",
    "KindError",
    "LayeredEmbeddingCache",
    "LightGBMKind",
    "MemoryEmbeddingCache",
    "MiniLMHead",
    "ModelKind",
    "NotFitted",
    "PostgresEmbeddingCache",
    "Probabilities",
    "Resources",
    "TabularKind",
    "TamperedArtifact",
    "TextEncoder",
    "TfidfLogReg",
    "UnknownLabel",
    "XGBoostKind",
    "artifact_sha256",
    "create",
    "load_model",
    "read_manifest",
    "shared_encoder",
]
