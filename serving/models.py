"""Request (``*Create``) and response (``*Public``) bodies of the serving API. Sizes that depend on
settings (text length, label set) are checked in the routes, which know the settings."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

MAX_BATCH = 64
UserId = Annotated[str, Field(min_length=1, max_length=200)]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PredictCreate(_Body):
    text: str
    user_id: UserId | None = None


class BatchCreate(_Body):
    items: Annotated[list[PredictCreate], Field(min_length=1, max_length=MAX_BATCH)]


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
