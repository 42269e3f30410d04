"""The curation stage: joined feedback becomes ``samples`` (accepted | quarantined | rejected, weight,
reasons) by near-duplicates, disagreement, confident-learning label quality and annotator trust; a
generator's feedback becomes prompt -> target pairs (:mod:`curation.pairs`)."""

from curation.base import (
    REASONS,
    Annotator,
    BatchWrite,
    CurationStore,
    Member,
    NewSample,
    Pending,
    Status,
    Verdict,
)
from curation.clusters import decide_cluster
from curation.config import CurationConfig, load_curation_config
from curation.exceptions import CurationError, CurationStoreError
from curation.memory import MemoryCurationStore
from curation.metrics import CurationMetrics
from curation.minhash import MinHasher, Signature, normalise
from curation.pairs import PairCurator, ToxicityScorer
from curation.pipeline import BatchResult, Curator
from curation.postgres import PostgresCurationStore
from curation.scoring import LabelQuality, class_thresholds, label_quality, trust
from curation.service import CurationService, PassResult

__all__ = [
    "REASONS",
    "Annotator",
    "BatchResult",
    "BatchWrite",
    "CurationConfig",
    "CurationError",
    "CurationMetrics",
    "CurationService",
    "CurationStore",
    "CurationStoreError",
    "Curator",
    "LabelQuality",
    "Member",
    "MemoryCurationStore",
    "MinHasher",
    "NewSample",
    "PairCurator",
    "PassResult",
    "Pending",
    "PostgresCurationStore",
    "Signature",
    "Status",
    "ToxicityScorer",
    "Verdict",
    "class_thresholds",
    "decide_cluster",
    "label_quality",
    "load_curation_config",
    "normalise",
    "trust",
]
