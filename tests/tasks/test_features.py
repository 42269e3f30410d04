"""The feature schema: every violation has its own reason and a detail naming the feature; rows encode
to a matrix by the schema (stable category codes, NaN for absent)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from pydantic import ValidationError

from schemas.reasons import Reason
from tasks import FeatureSchema, InputRejected, row_key

SCHEMA = FeatureSchema.from_params([
    {"name": "duration_s", "type": "numeric", "min": 0, "max": 86400},
    {"name": "os", "type": "categorical", "categories": ["linux", "windows", "macos"]},
    {"name": "retried", "type": "boolean", "required": False},
    {"name": "load", "type": "numeric", "required": False},
])


def test_a_valid_row_is_completed_with_absent_optional_features() -> None:
    assert SCHEMA.validate_row({"duration_s": 3, "os": "linux"}) == {
        "duration_s": 3, "os": "linux", "retried": None, "load": None}


@pytest.mark.parametrize(("row", "reason", "detail"), [
    ({"os": "linux"}, Reason.FEATURE_MISSING, "required feature 'duration_s' is missing"),
    ({"duration_s": None, "os": "linux"}, Reason.FEATURE_MISSING, "feature 'duration_s' is required and is null"),
    ({"duration_s": "3", "os": "linux"}, Reason.FEATURE_WRONG_TYPE, "feature 'duration_s' must be a number, got \"3\""),
    ({"duration_s": True, "os": "linux"}, Reason.FEATURE_WRONG_TYPE, "feature 'duration_s' must be a number, got true"),
    ({"duration_s": -1, "os": "linux"}, Reason.FEATURE_OUT_OF_RANGE, "feature 'duration_s' = -1 is outside [0, 86400]"),
    ({"duration_s": math.inf, "os": "linux"}, Reason.FEATURE_OUT_OF_RANGE, "feature 'duration_s' is not finite"),
    ({"duration_s": 1, "os": "linux", "load": 10**400}, Reason.FEATURE_OUT_OF_RANGE, "feature 'load' is not finite"),
    ({"duration_s": 1, "os": "plan9"}, Reason.FEATURE_UNKNOWN_CATEGORY,
     "feature 'os' = 'plan9' is not one of ['linux', 'windows', 'macos']"),
    ({"duration_s": 1, "os": 3}, Reason.FEATURE_WRONG_TYPE, "feature 'os' must be a string category, got 3"),
    ({"duration_s": 1, "os": "linux", "retried": "yes"}, Reason.FEATURE_WRONG_TYPE,
     "feature 'retried' must be true or false, got \"yes\""),
    ({"duration_s": 1, "os": "linux", "cpu": 2}, Reason.FEATURE_UNKNOWN,
     "features ['cpu'] are not in the model's schema ['duration_s', 'os', 'retried', 'load']"),
    (["not", "an", "object"], Reason.WRONG_TYPE, "features must be an object, got list"),
])
def test_each_violation_has_its_reason_and_names_the_feature(row: object, reason: Reason, detail: str) -> None:
    with pytest.raises(InputRejected) as caught:
        SCHEMA.validate_row(row)
    assert (caught.value.reason, caught.value.detail) == (reason, detail)


def test_rows_encode_in_schema_order_with_stable_category_codes() -> None:
    m = SCHEMA.matrix([{"duration_s": 2.5, "os": "macos", "retried": True}, {"duration_s": 1, "os": "linux"}])
    assert m.shape == (2, 4)
    assert m[0, :3].tolist() == [2.5, 2.0, 1.0] and np.isnan(m[0, 3])
    assert m[1, :2].tolist() == [1.0, 0.0] and np.isnan(m[1, 2:]).all()
    assert SCHEMA.categorical_columns() == [1]


@pytest.mark.parametrize("features", [
    [{"name": "a", "type": "numeric", "min": 2, "max": 1}],
    [{"name": "a", "type": "categorical"}],
    [{"name": "a", "type": "categorical", "categories": ["x", "x"]}],
    [{"name": "a", "type": "boolean", "min": 0}],
    [{"name": "a", "type": "numeric"}, {"name": "a", "type": "boolean"}],
    [{"name": "1bad", "type": "numeric"}],
    [{"name": "a", "type": "text"}],
    [],
])
def test_an_inconsistent_schema_is_refused(features: list[dict[str, object]]) -> None:
    with pytest.raises(ValidationError):
        FeatureSchema.from_params(features)


def test_row_keys_are_equal_exactly_for_equal_values() -> None:
    assert row_key({"a": 1, "b": "x"}) == row_key({"b": "x", "a": 1})
    assert row_key({"a": 1, "b": "x"}) != row_key({"a": 1, "b": "y"})
    assert SCHEMA.to_params()[0] == {"name": "duration_s", "type": "numeric", "min": 0.0, "max": 86400.0}
