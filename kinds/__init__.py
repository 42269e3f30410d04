"""Model kinds: one contract (fit, warm start, predict_proba, sha256-pinned pickle-free artifacts), the
implementations (text-classification: ``tfidf-logreg``, ``minilm-head``; tabular-classification:
``lightgbm``, ``xgboost``), the generator contract and kind (text-generation: ``smollm2-lora``, a LoRA
adapter on a shared base model, :mod:`kinds.generation`, :mod:`kinds.base_models`), and loading any saved
model by the kind its manifest names. Both the trainer
(which fits them) and serving (which loads and predicts with them) import this package; it imports
neither."""

from kinds.base import ModelKind, Probabilities, Resources, artifact_sha256, read_manifest
from kinds.base_models import BASE_MODELS, BaseModel, load_base
from kinds.catalog import GENERATORS, KINDS, create, kind_class, load_model
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
    BaseModelError,
    EmbeddingCacheError,
    EncoderError,
    EncoderMismatch,
    KindError,
    NotFitted,
    TamperedArtifact,
    UnknownLabel,
)
from kinds.generation import Generation, GeneratorKind, GeneratorResources, Pair, Prompt
from kinds.lightgbm_kind import LightGBMKind
from kinds.minilm import MiniLMHead
from kinds.search_space import Choice, Dimension, FloatRange, IntRange
from kinds.tabular import TabularKind
from kinds.tfidf import TfidfLogReg
from kinds.xgboost_kind import XGBoostKind


def __getattr__(name: str) -> object:
    """``SmolLM2LoRA`` on first use (``from kinds import SmolLM2LoRA`` works; it is not in ``__all__``, so a
    star import does not pull it): it imports torch and peft, which a classifier's pod never needs."""
    if name == "SmolLM2LoRA":
        from kinds.smollm2_lora import SmolLM2LoRA

        return SmolLM2LoRA
    raise AttributeError(f"module 'kinds' has no attribute {name!r}")


__all__ = [
    "BASE_MODELS",
    "GENERATORS",
    "KINDS",
    "ArtifactError",
    "BaseModel",
    "BaseModelError",
    "Choice",
    "Dimension",
    "Embedder",
    "EmbeddingCache",
    "EmbeddingCacheError",
    "Encoder",
    "EncoderError",
    "EncoderMismatch",
    "FloatRange",
    "Generation",
    "GeneratorKind",
    "GeneratorResources",
    "IntRange",
    "KindError",
    "LayeredEmbeddingCache",
    "LightGBMKind",
    "MemoryEmbeddingCache",
    "MiniLMHead",
    "ModelKind",
    "NotFitted",
    "Pair",
    "PostgresEmbeddingCache",
    "Probabilities",
    "Prompt",
    "Resources",
    "TabularKind",
    "TamperedArtifact",
    "TextEncoder",
    "TfidfLogReg",
    "UnknownLabel",
    "XGBoostKind",
    "artifact_sha256",
    "create",
    "kind_class",
    "load_base",
    "load_model",
    "read_manifest",
    "shared_encoder",
]
