"""The curation thresholds, one frozen model loaded from YAML (``FLYWHEEL_CURATION_CONFIG``).

Every field has a default, so an empty file (or none) is the documented default; unknown keys are
refused so that a typo never silently falls back to a default.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from core.yamlconfig import load_yaml_model
from curation.exceptions import CurationError


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class DuplicatesConfig(_Frozen):
    """Near-duplicates: MinHash over character shingles of the normalised text, banded for LSH."""

    shingle_size: int = Field(default=5, ge=1, le=32, description="Characters per shingle.")
    num_perm: int = Field(default=64, ge=8, le=512, description="MinHash permutations (signature length).")
    bands: int = Field(default=16, ge=1, description="LSH bands; num_perm / bands rows per band.")
    jaccard: float = Field(default=0.8, gt=0.0, le=1.0, description="Estimated Jaccard that makes a near-duplicate.")
    near_duplicate_weight: float = Field(default=0.5, ge=0.0, le=1.0,
                                         description="Weight factor of accepted near-duplicates of a cluster's first.")
    seed: int = Field(default=1, description="Seed of the permutations: changing it invalidates stored signatures.")

    @model_validator(mode="after")
    def _bands_divide(self) -> DuplicatesConfig:
        if self.num_perm % self.bands:
            raise ValueError(f"num_perm ({self.num_perm}) must be a multiple of bands ({self.bands})")
        return self


class LabelQualityConfig(_Frozen):
    """Confident learning on the served model's out-of-sample probabilities."""

    window: int = Field(default=5000, ge=10, description="Recent labelled samples the per-class thresholds use.")
    min_class_count: int = Field(default=20, ge=1, description="Samples of a class before its threshold is used.")


class AnnotatorsConfig(_Frozen):
    """Annotator trust: a Beta-smoothed rate of agreement with peers and with the served model, the model's
    part relative to the population's agreement with it (see ``curation.scoring.model_evidence``)."""

    prior_agree: float = Field(default=4.0, gt=0.0, description="Beta prior alpha (pseudo-agreements).")
    prior_disagree: float = Field(default=1.0, gt=0.0, description="Beta prior beta (pseudo-disagreements).")
    floor: float = Field(default=0.55, ge=0.0, le=1.0,
                         description="Below it (with min_evidence) a user is quarantined.")
    trusted: float = Field(default=0.65, ge=0.0, le=1.0,
                           description="At or above it (with min_evidence) a user's label issues are accepted at "
                                       "weights.label_issue instead of quarantined.")
    min_evidence: int = Field(default=5, ge=1, description="Judged labels before floor and trusted apply.")
    rule: Literal["floor", "fdr"] = Field(
        default="fdr",
        description="Who is low trust: 'floor' = trust below ``floor``; 'fdr' = that, and agreement significantly "
                    "below the population's (Benjamini-Hochberg over every judged user at false-discovery rate "
                    "``fdr``), so a clean stream quarantines no one by chance.")
    fdr: float = Field(default=0.3, gt=0.0, lt=1.0, description="False-discovery rate of the 'fdr' rule.")
    model_vote_weight: float = Field(default=1.0, ge=0.0,
                                     description="Weight of the served model's evidence about a label.")
    model_gain: float = Field(default=0.8, gt=0.0,
                              description="Agreement moved per population standard deviation of self-confidence.")
    consensus_min_share: float = Field(default=0.6, gt=0.5, le=1.0,
                                       description="Trust share the majority label needs to settle a conflict.")
    confirm_annotators: int = Field(default=2, ge=2,
                                    description="Distinct users agreeing on a label overrule a label issue.")

    @property
    def prior_mean(self) -> float:
        return self.prior_agree / (self.prior_agree + self.prior_disagree)

    @model_validator(mode="after")
    def _ordered(self) -> AnnotatorsConfig:
        if self.trusted < self.floor:
            raise ValueError(f"annotators.trusted ({self.trusted}) is below annotators.floor ({self.floor})")
        return self


class WeightsConfig(_Frozen):
    """Sample weight = clip(trust / prior mean, min, max) x duplicate factor x label-issue factor."""

    min: float = Field(default=0.2, ge=0.0)
    max: float = Field(default=1.0, gt=0.0)
    label_issue: float = Field(default=0.5, ge=0.0, le=1.0,
                               description="Weight factor of a label issue accepted from a trusted user.")

    @model_validator(mode="after")
    def _ordered(self) -> WeightsConfig:
        if self.min > self.max:
            raise ValueError(f"weights.min ({self.min}) exceeds weights.max ({self.max})")
        return self


class ServiceConfig(_Frozen):
    batch_size: int = Field(default=1000, ge=1, le=100_000, description="Feedback rows per curation transaction.")
    reconcile_interval_s: float = Field(default=10.0, gt=0, description="Check Postgres even without signals.")
    late_join_margin_s: float = Field(default=600.0, ge=0,
                                      description="Late joins resolved this long before the newest curated one "
                                                  "are still looked for (transactions commit out of order).")
    max_pass_s: float = Field(default=30.0, gt=0, description="A pass yields to the consumer loop after this.")
    retry_initial_s: float = Field(default=0.5, gt=0)
    retry_max_s: float = Field(default=10.0, gt=0)


class OutliersConfig(_Frozen):
    """Tabular rows far outside the model's recent accepted rows: a numeric feature whose robust z-score
    |x - median| / (1.4826 MAD) over the reference exceeds ``robust_z`` quarantines the sample [outlier]
    (valid by the schema, which ingest enforces, yet unlike anything the model learns from: a unit or
    sensor error to look at before training on it)."""

    robust_z: float = Field(default=8.0, gt=0.0)
    window: int = Field(default=2000, ge=10, description="Recent accepted rows of the model as the reference.")
    min_reference: int = Field(default=50, ge=5, description="Fewer reference rows: no outlier check.")


class PairsConfig(_Frozen):
    """A generator's samples (prompt -> response pairs): which response becomes the target, and which are
    refused as targets (``curation.pairs``)."""

    good_rating: int = Field(default=4, ge=1, le=5,
                             description="A rating at or above it makes the served response a target.")
    bad_rating: int = Field(default=2, ge=1, le=5,
                            description="A rating at or below it judges the served response bad (low_rating).")
    max_response_chars: int = Field(default=2000, ge=1,
                                    description="A longer target is quarantined [too_long].")
    toxicity_threshold: float | None = Field(
        default=None, gt=0.0, le=1.0,
        description="A target whose toxicity score reaches it is quarantined [toxic]; unset = the check's own "
                    "threshold.")

    @model_validator(mode="after")
    def _ordered(self) -> PairsConfig:
        if self.bad_rating >= self.good_rating:
            raise ValueError(f"pairs.bad_rating ({self.bad_rating}) must be below pairs.good_rating "
                             f"({self.good_rating})")
        return self


class CurationConfig(_Frozen):
    duplicates: DuplicatesConfig = DuplicatesConfig()
    pairs: PairsConfig = PairsConfig()
    outliers: OutliersConfig = OutliersConfig()
    label_quality: LabelQualityConfig = LabelQualityConfig()
    annotators: AnnotatorsConfig = AnnotatorsConfig()
    weights: WeightsConfig = WeightsConfig()
    service: ServiceConfig = ServiceConfig()


def load_curation_config(path: Path | None) -> CurationConfig:
    """The config at ``path`` (YAML), or the defaults when ``path`` is None."""
    return load_yaml_model(CurationConfig, path, "curation config", CurationError)
