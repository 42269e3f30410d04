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
    "RetrainRequest",
    "SchemaError",
    "split_wire_format",
]
