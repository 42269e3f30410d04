"""Machine-readable reasons a record is dead-lettered. Values are stable: dashboards key on them."""

from __future__ import annotations

from enum import StrEnum


class Reason(StrEnum):
    EMPTY_VALUE = "empty_value"
    INVALID_UTF8 = "invalid_utf8"
    MALFORMED_JSON = "malformed_json"
    NOT_AN_OBJECT = "not_an_object"
    UNKNOWN_EVENT_TYPE = "unknown_event_type"
    WRONG_TOPIC = "wrong_topic"
    UNKNOWN_SCHEMA_VERSION = "unknown_schema_version"
    UNKNOWN_SCHEMA_ID = "unknown_schema_id"
    MISSING_FIELD = "missing_field"
    WRONG_TYPE = "wrong_type"
    INVALID_VALUE = "invalid_value"
    TEXT_EMPTY = "text_empty"
    TEXT_TOO_LONG = "text_too_long"
    LABEL_NOT_IN_SET = "label_not_in_set"
    TIMESTAMP_IN_FUTURE = "timestamp_in_future"
    RECORD_TOO_LARGE = "record_too_large"
    SINK_REJECTED = "sink_rejected"
    # schema_version 2: per-model contracts (tasks/)
    UNKNOWN_MODEL = "unknown_model"
    TASK_MISMATCH = "task_mismatch"
    FEATURE_MISSING = "feature_missing"
    FEATURE_UNKNOWN = "feature_unknown"
    FEATURE_WRONG_TYPE = "feature_wrong_type"
    FEATURE_OUT_OF_RANGE = "feature_out_of_range"
    FEATURE_UNKNOWN_CATEGORY = "feature_unknown_category"
    FEEDBACK_WRONG_FOR_TASK = "feedback_wrong_for_task"  # e.g. a rating for a classifier, a label for a generator
