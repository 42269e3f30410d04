"""Every boundary type of Flywheel: versioned events, their codec and the dead-letter reasons."""

from schemas.base import Event
from schemas.codec import EventDecoder, EventRules, split_wire_format
from schemas.events import (
    AnyEvent,
    Curated,
    DeadLetter,
    FeedbackEvent,
    IdRange,
    Landed,
    ModelAction,
    ModelEvent,
    PredictionEvent,
    RequestAction,
    RetrainRequest,
)
from schemas.exceptions import DecodeError, InvalidEvent, SchemaError
from schemas.reasons import Reason

__all__ = [
    "AnyEvent",
    "Curated",
    "DeadLetter",
    "DecodeError",
    "Event",
    "EventDecoder",
    "EventRules",
    "FeedbackEvent",
    "IdRange",
    "InvalidEvent",
    "Landed",
    "ModelAction",
    "ModelEvent",
    "PredictionEvent",
    "Reason",
    "RequestAction",
    "RetrainRequest",
    "SchemaError",
    "split_wire_format",
]
