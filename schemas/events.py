"""Versioned event types carried on Flywheel topics (see docs/events.md)."""

from __future__ import annotations

import base64
import uuid
from typing import Annotated, ClassVar, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    NonNegativeInt,
    PlainSerializer,
    WithJsonSchema,
    model_validator,
)
from pydantic_core import PydanticCustomError

from schemas.base import Event
from schemas.reasons import Reason

Id = Annotated[str, Field(min_length=1, max_length=128)]
Variant = Literal["champion", "canary", "shadow", "challenger"]


class PredictionEvent(Event):
    """One served prediction: what the model saw, what it answered, with which version."""

    type: Literal["prediction"] = "prediction"
    prediction_id: Id
    model: Annotated[str, Field(min_length=1, max_length=200)]
    model_version: Annotated[str, Field(min_length=1, max_length=64)]
    variant: Variant = "champion"
    text: str
    label: str
    probabilities: dict[str, Annotated[float, Field(ge=0.0, le=1.0, strict=True)]]  # strict: no "0.5", no true
    latency_ms: Annotated[float, Field(ge=0.0, strict=True, allow_inf_nan=False)]
    user_id: Annotated[str, Field(max_length=200)] | None = None
    domain: Annotated[str, Field(max_length=100)] | None = None
    segment: Annotated[str, Field(max_length=100)] | None = None

    @model_validator(mode="after")
    def _label_is_a_class(self) -> PredictionEvent:
        if self.label not in self.probabilities:
            raise ValueError("label must be one of the keys of probabilities")
        total = sum(self.probabilities.values())
        if abs(total - 1.0) > 1e-3:
            raise ValueError(f"probabilities must sum to 1 (got {total:.6f})")
        return self


class FeedbackEvent(Event):
    """A user's judgement of one prediction: a label, or thumbs up/down. ``feedback_id`` is the
    idempotency key: a resend with the same id is a duplicate, never a second row."""

    type: Literal["feedback"] = "feedback"
    feedback_id: Id
    prediction_id: Id
    label: str | None = None
    thumbs: Literal["up", "down"] | None = None
    user_id: Annotated[str, Field(max_length=200)] | None = None
    source: Annotated[str, Field(min_length=1, max_length=64)] = "api"

    @model_validator(mode="after")
    def _label_or_thumbs(self) -> FeedbackEvent:
        if (self.label is None) == (self.thumbs is None):
            raise ValueError("exactly one of label or thumbs is required")
        return self


# -- schema_version 2: every event names its model; input and output are typed by the model's task ----------
ModelName = Annotated[str, Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9._-]+$")]
FeatureValue = float | int | str | bool | None


class _Part(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class TextInput(_Part):
    """The input of a text task: one text."""

    text: str


class TabularInput(_Part):
    """The input of a tabular task: one row, feature name -> value (checked against the model's feature
    schema at ingest: types, required, ranges, categories)."""

    features: dict[Annotated[str, Field(min_length=1, max_length=100)], FeatureValue]


class ClassificationOutput(_Part):
    """What a classifier answered: a label and the probability of every label (summing to 1)."""

    label: Annotated[str, Field(min_length=1, max_length=200)]
    probabilities: dict[str, Annotated[float, Field(ge=0.0, le=1.0)]]

    @model_validator(mode="after")
    def _label_is_a_class(self) -> ClassificationOutput:
        if self.label not in self.probabilities:
            raise ValueError("label must be one of the keys of probabilities")
        total = sum(self.probabilities.values())
        if abs(total - 1.0) > 1e-3:
            raise ValueError(f"probabilities must sum to 1 (got {total:.6f})")
        return self


class GenerationInput(_Part):
    """The input of a text-generation task: a prompt, and optionally the context (e.g. the game state as
    short text) and the persona (e.g. the NPC) it is asked in."""

    prompt: Annotated[str, Field(min_length=1, max_length=8000)]
    context: Annotated[str, Field(max_length=8000)] | None = None
    persona: Annotated[str, Field(max_length=2000)] | None = None


class GenerationOutput(_Part):
    """What a generator answered: the text, its token counts and why it stopped (a stop string or the end
    of turn, the token budget, the request's time-out, or ``error``: the generator raised, the text is
    empty and ``error`` says what)."""

    text: Annotated[str, Field(max_length=32000)]
    prompt_tokens: NonNegativeInt
    completion_tokens: NonNegativeInt
    finish_reason: Literal["stop", "length", "timeout", "error"] = "stop"
    error: Annotated[str, Field(max_length=500)] | None = None


TaskInput = TextInput | TabularInput | GenerationInput
TaskOutput = ClassificationOutput | GenerationOutput
Rating = Annotated[int, Field(ge=1, le=5, strict=True)]
Signal = Literal["continued", "abandoned"]


class PredictionEventV2(Event):
    """One served prediction of a named model (schema_version 2, on the same topic as version 1): the
    task-typed ``input`` it saw and ``output`` it answered. Which task (and so which input shape, labels
    and features) is the model's, declared once (``flywheel models``); ingest checks the event against it."""

    SCHEMA_VERSION: ClassVar[int] = 2

    type: Literal["prediction"] = "prediction"
    schema_version: Literal[2] = 2  # type: ignore[assignment]
    prediction_id: Id
    model: ModelName
    model_version: Annotated[str, Field(min_length=1, max_length=64)]
    variant: Variant = "champion"
    input: TaskInput
    output: TaskOutput
    latency_ms: Annotated[float, Field(ge=0.0)]
    user_id: Annotated[str, Field(max_length=200)] | None = None
    domain: Annotated[str, Field(max_length=100)] | None = None
    segment: Annotated[str, Field(max_length=100)] | None = None


class FeedbackEventV2(Event):
    """Feedback on one prediction of a named model (schema_version 2): a label (for a tabular model
    usually the observed outcome, e.g. the automation ``failed``) or thumbs; for a generator, thumbs, a
    ``rating`` (1-5), a ``correction`` (the response the user preferred: it becomes a reference) and/or an
    interaction ``signal`` (the player continued or abandoned). Which of these a model takes is its task's
    rule, checked at ingest (``feedback_wrong_for_task``). ``feedback_id`` is the idempotency key; a batch
    import derives it from the task id, so a re-import is a duplicate."""

    SCHEMA_VERSION: ClassVar[int] = 2

    type: Literal["feedback"] = "feedback"
    schema_version: Literal[2] = 2  # type: ignore[assignment]
    feedback_id: Id
    prediction_id: Id
    model: ModelName
    label: Annotated[str, Field(min_length=1, max_length=200)] | None = None
    thumbs: Literal["up", "down"] | None = None
    rating: Rating | None = None
    correction: Annotated[str, Field(min_length=1, max_length=8000)] | None = None
    signal: Signal | None = None
    user_id: Annotated[str, Field(max_length=200)] | None = None
    source: Annotated[str, Field(min_length=1, max_length=64)] = "api"

    @model_validator(mode="after")
    def _some_judgement(self) -> FeedbackEventV2:
        if self.label is not None and self.thumbs is not None:
            raise ValueError("label and thumbs are exclusive")
        if all(v is None for v in (self.label, self.thumbs, self.rating, self.correction, self.signal)):
            raise ValueError("one of label, thumbs, rating, correction or signal is required")
        return self


def _to_base64(value: bytes) -> str:
    return base64.b64encode(value).decode("ascii")


def _from_base64(value: object) -> object:
    """Text is base64: the standard alphabet (RFC 4648 section 4, padded), or the URL-safe one that dead
    letters were written in before (and unpadded)."""
    if not isinstance(value, str):
        return value
    text = value.translate(_URLSAFE_TO_STANDARD)
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except ValueError as exc:  # binascii.Error
        raise PydanticCustomError("bytes_invalid_encoding", "Data should be valid base64: {error}",
                                  {"error": str(exc)}) from None


_URLSAFE_TO_STANDARD = str.maketrans("-_", "+/")
# bytes as standard base64 text in JSON (any decoder reads it); still read from URL-safe text
Base64Bytes = Annotated[bytes, BeforeValidator(_from_base64), PlainSerializer(_to_base64, return_type=str,
                        when_used="json"), WithJsonSchema({"type": "string", "contentEncoding": "base64"})]


class DeadLetter(Event):
    """A record that could not be landed, with why and the original bytes (standard base64 in JSON)."""

    type: Literal["dead_letter"] = "dead_letter"
    reason: Reason
    detail: Annotated[str, Field(max_length=2000)]
    source_topic: str
    source_partition: NonNegativeInt
    source_offset: NonNegativeInt
    group: str
    original: Base64Bytes
    original_key: Base64Bytes | None = None


class IdRange(BaseModel):
    """Inclusive range of ``id`` values of rows touched by one committed batch."""

    model_config = ConfigDict(frozen=True)

    first: int
    last: int


class Landed(Event):
    """Wake-up signal after a committed ingest batch. Postgres stays the truth: a consumer that misses
    this signal finds the rows when it reconciles."""

    type: Literal["landed"] = "landed"
    group: str
    predictions: NonNegativeInt = 0
    feedback: NonNegativeInt = 0
    joined: NonNegativeInt = 0
    pending: NonNegativeInt = 0
    orphans: NonNegativeInt = 0
    duplicates: NonNegativeInt = 0
    dead_letters: NonNegativeInt = 0
    prediction_ids: IdRange | None = None
    feedback_ids: IdRange | None = None


class Curated(Event):
    """Signal after curation scored new samples (filled by the curation stage)."""

    type: Literal["curated"] = "curated"
    accepted: NonNegativeInt = 0
    quarantined: NonNegativeInt = 0
    rejected: NonNegativeInt = 0
    sample_ids: IdRange | None = None


ModelAction = Literal["canary", "promote", "rollback", "retire"]


class ModelEvent(Event):
    """A change of a model's desired serving state, on ``flywheel.models.v1`` keyed by model name.

    The topic is the desired state: serving pods fold every event from the beginning to the latest
    state per model (the embedded broker does not compact). ``canary`` sends ``traffic`` of requests to
    ``version`` beside the champion; ``promote`` makes ``version`` the champion; ``rollback`` makes
    ``version`` (the restored one) the champion again; ``retire`` takes ``version`` out of any traffic.
    """

    type: Literal["model"] = "model"
    model: Annotated[str, Field(min_length=1, max_length=200)]
    version: Annotated[str, Field(min_length=1, max_length=64)]
    semver: Annotated[str, Field(pattern=r"^\d+\.\d+\.\d+$")]
    action: ModelAction
    traffic: Annotated[float, Field(ge=0.0, le=1.0)]
    kind: Annotated[str, Field(min_length=1, max_length=64)]
    artifact_uri: Annotated[str, Field(min_length=1, max_length=2000)]
    sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
    reason: Annotated[str, Field(max_length=2000)] = ""
    previous_version: Annotated[str, Field(max_length=64)] | None = None


RequestAction = Literal["retrain", "bootstrap", "evaluate"]


class RetrainRequest(Event):
    """Ask the trainers for work: a drift alert, a schedule or an operator. ``request_id`` makes a replay
    harmless: one request is worked on at most once.

    ``action`` (absent in older records: ``retrain``) says which work:

    * ``retrain``: ``mode`` unset lets the trainer's policy choose (``drift_action`` for drift, full
      otherwise); one request starts at most one training run.
    * ``bootstrap``: train the first champion from a labelled corpus. The corpus and its options are not
      on the topic: they are the ``params`` of the ``admin_requests`` row with this ``request_id``.
    * ``evaluate``: the gate verdicts of ``version`` (default: the challenger, else the champion); the
      report is the ``result`` of the ``admin_requests`` row.
    """

    type: Literal["retrain_request"] = "retrain_request"
    request_id: Id = Field(default_factory=lambda: uuid.uuid4().hex)
    model: Annotated[str, Field(min_length=1, max_length=200)]
    action: RequestAction = "retrain"
    mode: Literal["incremental", "full"] | None = None
    version: Annotated[str, Field(min_length=1, max_length=100)] | None = None
    trigger: Literal["drift", "schedule", "admin"]
    reason: Annotated[str, Field(max_length=2000)] = ""


AnyEvent = Annotated[
    PredictionEvent | FeedbackEvent | DeadLetter | Landed | Curated | ModelEvent | RetrainRequest,
    Field(discriminator="type"),
]
