"""Tasks and model specs: what a model takes and answers (text -> label, features -> label, ...), how
its inputs are validated, and the declared models of one platform. Ingest, curation, the trainer and
serving ask a model's task instead of assuming text; a new task plugs in here."""

from tasks.exceptions import InputRejected, SpecError, TaskError, UnknownModel
from tasks.features import Feature, FeatureSchema, FeatureType, Input, Row, Scalar, row_key

__all__ = [
    "Feature",
    "FeatureSchema",
    "FeatureType",
    "Input",
    "InputRejected",
    "Row",
    "Scalar",
    "SpecError",
    "TaskError",
    "UnknownModel",
    "row_key",
]
