"""The training policy and gates, one frozen model loaded from YAML (``FLYWHEEL_TRAINER_CONFIG``).

Every field has a default, so an empty file (or none) is the documented default policy; unknown keys
are refused so that a typo never silently falls back to a default.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from core.yamlconfig import load_yaml_model
from trainer.exceptions import TrainerError
from trainer.gates import GatesConfig
from trainer.gates.generation import GenerationConfig
from trainer.schedule import Cron


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class SearchConfig(_Frozen):
    """A hyperparameter search (Optuna TPE) before a full run's candidates are fitted: for each candidate
    kind that declares a search space, on the training rows the run's evaluation never sees."""

    budget_s: float = Field(default=60.0, gt=0, description="Seconds per kind; a trial under way finishes.")
    max_trials: int = Field(default=20, ge=1)
    folds: int = Field(default=3, ge=2, le=10, description="Cross-validation folds per trial.")
    metric: Literal["accuracy", "log_loss"] = "accuracy"
    min_rows: int = Field(default=100, ge=10, description="Fewer searchable rows: no search, the policy's params.")
    kinds: tuple[str, ...] | None = Field(default=None, description="Kinds to search; unset = every kind with a space.")


class PolicyConfig(_Frozen):
    """When to train and on what."""

    incremental_threshold: int = Field(default=200, ge=1, description="New accepted samples for an incremental run.")
    full_threshold: int = Field(default=2000, ge=1, description="New accepted samples for a full run.")
    full_cron: str | None = Field(default=None, description="Cron schedule (5 fields, UTC) of full retrains.")
    drift_action: Literal["full", "incremental", "ignore"] = "full"
    drift_min_new: int = Field(
        default=20, ge=0,
        description="A drift alert retrains only with at least this many accepted samples newer than the last run of "
                    "its mode (whatever its outcome): fewer, and that run trained on this data already (a drift alert "
                    "often follows a threshold run on the same samples). 0 = always.")
    quiet_after_s: float | None = Field(
        default=30.0, gt=0,
        description="Seconds without a Landed or Curated signal after which the samples that came since the last "
                    "run are trained on although below the threshold (the stream went quiet: the last labels "
                    "would otherwise wait for more). Once per quiet spell; unset = off.")
    quiet_min_samples: int = Field(default=20, ge=1, description="Fewer new samples: a quiet spell trains nothing.")
    request_max_age_s: float = Field(default=3600.0, gt=0, description="Older retrain requests are ignored.")
    reconcile_interval_s: float = Field(default=30.0, gt=0, description="Check Postgres even without signals.")
    replay_size: int = Field(default=2000, ge=0, description="Older samples mixed into an incremental run.")
    corpus_weight: float = Field(
        default=0.2, gt=0.0,
        description="Training weight of a bootstrap-corpus row relative to a feedback sample (weight 1 x its "
                    "curation weight): feedback is what the model serves now, the corpus what it was built on.")
    corpus_weight_choices: tuple[float, ...] = Field(
        default=(),
        description="Full runs also train every kind with the corpus at each of these weights; the candidates are "
                    "judged side by side, and a choice replaces the kind at corpus_weight only if the evaluation gate "
                    "finds it better than that one (its weight is tagged on the version). A stream that drifted far "
                    "from the corpus learns faster with less of it, one close to it with more. 0 is the target-only "
                    "recipe (the feedback samples alone): it fits in a fraction of a corpus recipe's time and wins "
                    "where the stream no longer resembles the corpus.")
    kinds: tuple[str, ...] = Field(default=("tfidf-logreg",), min_length=1, description="Candidate kinds.")
    kind_params: dict[str, dict[str, Any]] = Field(default_factory=dict)
    holdout_percent: int = Field(default=10, ge=0, le=50, description="Share of feedback reserved for evaluation.")
    holdout_recent: int = Field(default=1000, ge=0, description="Most recent reserved feedback in the holdout.")
    recent_share: float = Field(
        default=0.5, ge=0.0, lt=1.0,
        description="Weight share of the recent reserved feedback in the evaluation (what the model serves now); "
                    "the rest is the corpus holdout. 0 = every row weighs the same.")
    recent_min: int = Field(default=30, ge=1, description="Fewer recent reserved rows: every row weighs the same.")
    uncovered_recent_share: float = Field(
        default=0.9, ge=0.0, lt=1.0,
        description="Weight share of recent feedback when none of it falls in a slice the corpus holdout covers "
                    "(traffic drifted away from the corpus); in between, the share moves from recent_share towards "
                    "it with the uncovered fraction. Never lowers recent_share.")
    cross_fit_folds: int = Field(
        default=5, ge=0, le=20,
        description="Folds for cross-fitted evaluation: the feedback samples a run trains on that the champion never "
                    "saw also join the holdout, predicted by the candidate's recipe trained without their fold. "
                    "0 or 1 = off (only reserved feedback and the corpus holdout).")
    cross_fit_min_rows: int = Field(default=20, ge=2, description="Fewer such samples: no cross-fitting.")
    cross_fit_champion: bool = Field(
        default=True,
        description="In a full run against a champion trained from scratch (full mode), the samples the champion "
                    "trained on join the evaluation too: the candidate's recipe and the champion's (its kind and "
                    "params on the corpus and the samples up to its watermark) each predict every fold trained "
                    "without it. Every collected label is evidence, not only those newer than the champion.")
    judge_arrivals: bool = Field(
        default=True,
        description="A run's candidates are judged once fitted, on the holdout read again then plus the training "
                    "samples labelled since the run's snapshot: neither they nor the champion trained on those, so "
                    "each is out-of-sample evidence (a fast stream labels many while a run fits).")
    start_at_champion: bool = Field(
        default=True,
        description="A full run starts the solver of every from-scratch fit of the champion's kind (candidates, "
                    "their folds, the champion's recipe per fold) at the champion's solution (kinds with one "
                    "optimum: tfidf-logreg): the same models up to the solver's tolerance, in fewer iterations.")
    search: SearchConfig | None = Field(
        default=None, description="Tune each kind's parameters in full runs (unset: the policy's kind_params).")
    seed: int = 0

    @field_validator("corpus_weight_choices")
    @classmethod
    def _weights_positive(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        if any(not w >= 0 for w in value):
            raise ValueError(f"corpus weights must be positive or 0 (target-only), got {list(value)}")
        return value

    @field_validator("full_cron")
    @classmethod
    def _cron_parses(cls, value: str | None) -> str | None:
        if value is not None:
            Cron(value)
        return value


class PromotionConfig(_Frozen):
    """What happens to a candidate that passed every gate."""

    mode: Literal["canary", "direct"] = Field(
        default="canary", description="canary = challenger at `canary_traffic`; direct = promote at once.")
    canary_traffic: float = Field(default=0.1, gt=0.0, le=1.0)


class TrainerConfig(_Frozen):
    workers: int = Field(
        default=2, ge=1, le=64,
        description="Processes that fit a run's cross-fit folds and the champion's refits side by side (started "
                    "once with the trainer, shared by its models; one BLAS thread each). 1 = every fit in the "
                    "trainer's process, one after the other. The results are the same either way.")
    policy: PolicyConfig = PolicyConfig()
    gates: GatesConfig = GatesConfig()
    promotion: PromotionConfig = PromotionConfig()
    generation: GenerationConfig = GenerationConfig()


def load_trainer_config(path: Path | None) -> TrainerConfig:
    return load_yaml_model(TrainerConfig, path, "trainer config", TrainerError)
