"""Tasks and model specs: what a model takes and answers (text -> label, features -> label, ...), how
its inputs are validated, and the declared models of one platform. Ingest, curation, the trainer and
serving ask a model's task instead of assuming text; a new task plugs in here."""

from tasks.base import StoredInput, Task
from tasks.catalog import TASKS, TabularClassification, TextClassification, task_of
from tasks.exceptions import InputRejected, SpecError, TaskError, UnknownModel
from tasks.features import Feature, FeatureSchema, FeatureType, Input, Row, Scalar, row_key
from tasks.spec import ModelSpec, TaskName, load_specs, parse_spec
from tasks.store import ModelCatalog, ModelStore

__all__ = [
    "TASKS",
    "Feature",
    "FeatureSchema",
    "FeatureType",
    "Input",
    "InputRejected",
    "ModelCatalog",
    "ModelSpec",
    "ModelStore",
    "Row",
    "Scalar",
    "SpecError",
    "StoredInput",
    "TabularClassification",
    "Task",
    "TaskError",
    "TaskName",
    "TextClassification",
    "UnknownModel",
    "load_specs",
    "parse_spec",
    "row_key",
    "task_of",
]
