"""Request (``*Create``) and response (``*Public``) bodies of the serving API. Sizes that depend on
settings (text length, label set) are checked in the routes, which know the settings."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, model_validator

MAX_BATCH = 64
MAX_BOOTSTRAP_ROWS = 200_000
NO_NUL = r"^[^\x00]*$"  # Postgres text cannot hold NUL: refused at the door (422), not by the database
UserId = Annotated[str, Field(min_length=1, max_length=200, pattern=NO_NUL)]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


SliceName = Annotated[str, Field(min_length=1, max_length=100)]


class PredictCreate(_Body):
    text: str
    user_id: UserId | None = None
    domain: SliceName | None = Field(default=None, description="Where the text comes from (a slice: gates, "
                                     "monitors and dashboards break results down by it).")
    segment: SliceName | None = Field(default=None, description="A user segment (the slice when no domain).")


class BatchCreate(_Body):
    items: Annotated[list[PredictCreate], Field(min_length=1, max_length=MAX_BATCH)]


FeatureValue = float | int | str | bool | None


class TabularPredictCreate(_Body):
    """A tabular model's input: feature name -> value, checked against the model's feature schema
    (``GET /v1/models/{name}`` shows it): types, required features, ranges, categories."""

    features: dict[Annotated[str, Field(min_length=1, max_length=100)], FeatureValue]
    user_id: UserId | None = None
    domain: SliceName | None = None
    segment: SliceName | None = None


ModelPredictCreate = PredictCreate | TabularPredictCreate
"""The body of ``/v1/models/{name}/predict``: a text for a text model, features for a tabular one."""


class ModelBatchCreate(_Body):
    items: Annotated[list[ModelPredictCreate], Field(min_length=1, max_length=MAX_BATCH)]


class HostedPublic(BaseModel):
    """One model a pod hosts: its task and what it serves now."""

    model: str
    task: str
    labels: list[str]
    features: list[dict[str, Any]] | None = None
    default: bool
    ready: bool
    champion: LoadedPublic | None
    canary: LoadedPublic | None
    canary_traffic: float


class HostedListPublic(BaseModel):
    models: list[HostedPublic]


class PredictionPublic(BaseModel):
    prediction_id: str
    label: str
    probabilities: dict[str, float]
    model: str
    version: str  # the MLflow version number
    semver: str
    variant: Literal["champion", "canary"]


class BatchPublic(BaseModel):
    predictions: list[PredictionPublic]


class FeedbackCreate(_Body):
    prediction_id: Annotated[str, Field(min_length=1, max_length=128)]
    label: str | None = None
    thumbs: Literal["up", "down"] | None = None
    user_id: UserId | None = None

    @model_validator(mode="after")
    def _label_or_thumbs(self) -> FeedbackCreate:
        if (self.label is None) == (self.thumbs is None):
            raise ValueError("exactly one of label or thumbs is required")
        return self


class ModelFeedbackCreate(FeedbackCreate):
    """Feedback on one prediction of a named model: a classifier takes a ``label`` or ``thumbs``; a text
    generator takes ``thumbs``, a 1-5 ``rating``, a ``correction`` (the response the user preferred: it
    becomes a reference) and/or an interaction ``signal``. A field the model's task does not take is
    refused with 422 naming it."""

    rating: Annotated[int, Field(ge=1, le=5)] | None = None  # 4.0 is 4 (JSON Schema: an integer), 4.5 is refused
    correction: Annotated[str, Field(min_length=1, max_length=8000, pattern=NO_NUL)] | None = None
    signal: Literal["continued", "abandoned"] | None = None

    @model_validator(mode="after")
    def _label_or_thumbs(self) -> ModelFeedbackCreate:
        if self.label is not None and self.thumbs is not None:
            raise ValueError("label and thumbs are exclusive")
        if all(v is None for v in (self.label, self.thumbs, self.rating, self.correction, self.signal)):
            raise ValueError("one of label, thumbs, rating, correction or signal is required")
        return self


MAX_GENERATE_TOKENS = 4096  # the schema's bound; FLYWHEEL_GENERATE_MAX_TOKENS is the pod's (checked in the route)
PromptText = Annotated[str, Field(min_length=1, max_length=8000, pattern=NO_NUL)]


class GenerateCreate(_Body):
    """A text generator's input: the ``prompt`` and optional ``context`` (e.g. the game state) and
    ``persona`` (e.g. the NPC). Greedy decoding at ``temperature`` 0 (the default) is deterministic.
    ``stream``: the answer as server-sent events, one ``token`` event per text piece, then one ``done``
    event with the fields of the non-streamed answer."""

    prompt: PromptText
    context: Annotated[str, Field(max_length=8000, pattern=NO_NUL)] | None = None
    persona: Annotated[str, Field(max_length=2000, pattern=NO_NUL)] | None = None
    max_tokens: Annotated[int, Field(ge=1, le=MAX_GENERATE_TOKENS, description=(
        "Most new tokens; at most FLYWHEEL_GENERATE_MAX_TOKENS (256 by default).")) ] = 64
    temperature: Annotated[float, Field(ge=0.0, le=2.0)] = 0.0
    stop: Annotated[list[Annotated[str, Field(min_length=1, max_length=100, pattern=NO_NUL)]],
                    Field(max_length=4, description="Strings that end the answer (not included in it).")] = []
    stream: bool = False
    user_id: UserId | None = None
    domain: SliceName | None = None
    segment: SliceName | None = None


class GenerationPublic(BaseModel):
    """A generated answer. ``finish_reason``: ``stop`` (end of turn or a stop string), ``length``
    (``max_tokens`` reached) or ``timeout`` (a stream cut at the request's deadline)."""

    prediction_id: str
    text: str
    model: str
    model_version: str  # the MLflow version number
    semver: str
    variant: Literal["champion", "canary"]
    latency_ms: float
    prompt_tokens: int
    completion_tokens: int
    finish_reason: Literal["stop", "length", "timeout"]


class FeedbackPublic(BaseModel):
    feedback_id: str


class ErrorPublic(BaseModel):
    error: str
    detail: str


class LoadedPublic(BaseModel):
    version: str
    semver: str
    kind: str
    loaded_at: datetime
    load_ms: float


class LoadErrorPublic(BaseModel):
    version: str
    detail: str
    at: datetime


class DeploymentPublic(BaseModel):
    ready: bool
    champion: LoadedPublic | None
    canary: LoadedPublic | None
    canary_traffic: float
    shadow: LoadedPublic | None
    generation: int
    last_error: LoadErrorPublic | None
    fallback_for: str | None = Field(default=None, description="The announced champion version that failed to "
                                     "load or verify, when `champion` answers in its place.")


class VersionPublic(BaseModel):
    version: str
    semver: str
    kind: str
    aliases: list[str]
    created_at: datetime


class ModelsPublic(BaseModel):
    model: str
    versions: list[VersionPublic]
    aliases: dict[str, str]
    registry_error: str | None = None
    deployment: DeploymentPublic


class StatusPublic(BaseModel):
    status: str


class ReadyPublic(BaseModel):
    status: Literal["ready", "degraded"]
    detail: str | None = Field(default=None, description="Why the pod is degraded: which version answers in "
                               "place of the announced champion, and why that one failed.")


# -- admin routes (bearer token) ---------------------------------------------------------------------
Reason = Annotated[str, Field(max_length=2000, pattern=NO_NUL)]
VersionRef = Annotated[str, Field(min_length=1, max_length=100, pattern=NO_NUL,
                                  description="Version number, semver or alias.")]


class RetrainCreate(_Body):
    mode: Literal["incremental", "full"] | None = Field(
        default=None, description="Unset: the trainer's policy chooses (full for an admin request).")
    reason: Reason = "admin retrain"
    force_deploy: StrictBool = Field(
        default=False, description="A text-generation model's candidate deploys even past a failed gate (every "
        "verdict is still recorded, the version tagged force_deployed). Refused (409) for a classifier.")


class RetrainPublic(BaseModel):
    request_id: str
    status: Literal["queued"]


class EvaluateCreate(_Body):
    version: VersionRef | None = Field(default=None, description="Default: the challenger, else the champion.")


class VerdictPublic(BaseModel):
    gate: str
    passed: bool
    reason: str
    details: dict[str, Any]


class EvaluationPublic(BaseModel):
    version: str
    semver: str
    passed: bool
    verdicts: list[VerdictPublic]


class PromoteCreate(_Body):
    reason: Reason = "admin promote"


class RollbackCreate(_Body):
    to: VersionRef | None = Field(default=None, description="Default: the `previous` alias.")
    reason: Reason = "admin rollback"


class ModelEventPublic(BaseModel):
    action: str
    model: str
    version: str
    semver: str
    previous_version: str | None
    traffic: float
    reason: str


class CorpusRowCreate(_Body):
    text: Annotated[str, Field(min_length=1, pattern=NO_NUL)]
    label: Annotated[str, Field(min_length=1, max_length=100)]
    domain: Annotated[str, Field(max_length=200, pattern=NO_NUL)] | None = None


class BootstrapCreate(_Body):
    rows: Annotated[list[CorpusRowCreate], Field(min_length=2, max_length=MAX_BOOTSTRAP_ROWS)]
    kind: Annotated[str, Field(max_length=100)] = "tfidf-logreg"
    holdout: Annotated[float, Field(gt=0.0, lt=1.0)] = 0.2
    force: bool = False
    source: Annotated[str, Field(min_length=1, max_length=200, pattern=NO_NUL)] = "api"


class TrainingPublic(BaseModel):
    """An admin request or a training run: ``id`` is what the admin route returned (a request id) or a run
    id. ``status`` is the run's when the request has one (running | promoted | canary | refused | failed |
    abandoned), else the request's (queued | running | done | failed); ``outcome`` what the trainer
    recorded (a run's status, skipped, evaluated, expired); ``evaluation`` the report of an ``evaluate``."""

    id: str
    status: str
    action: Literal["retrain", "bootstrap", "evaluate"] | None = None
    outcome: str | None = None
    error: str | None = None
    evaluation: EvaluationPublic | None = None
    requested_at: datetime | None = None
    run_id: str | None = None
    request_id: str | None = None
    trigger: str | None = None
    mode: str | None = None
    version: str | None = None
    kind: str | None = None
    reason: str = ""
    started_at: datetime | None = None
    finished_at: datetime | None = None
    duration_s: float | None = None
    candidates: list[dict[str, Any]] = Field(default_factory=list)


class ReviewItemPublic(BaseModel):
    prediction_id: str
    text: str
    label: str
    margin: float
    probabilities: dict[str, float]
    model_version: str
    variant: str
    prompt: str | None = Field(default=None, description="A generator's prediction: the prompt it was asked.")
    context: str | None = None
    persona: str | None = None
    response: str | None = Field(default=None, description="A generator's prediction: the response it gave.")


class ReviewPublic(BaseModel):
    items: list[ReviewItemPublic]


class ReviewLabelCreate(_Body):
    prediction_id: Annotated[str, Field(min_length=1, max_length=200, pattern=NO_NUL)]
    label: Annotated[str, Field(min_length=1, max_length=100)]
    reviewer: UserId = "api"
