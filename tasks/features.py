"""A tabular model's feature schema: what each feature is (numeric, categorical or boolean), whether it
must be present, and its allowed range or categories. Ingest validates every event's ``features`` with
it (a violation is dead-lettered with its reason), the data-quality gate checks training batches with
it, and the tabular kinds encode rows into a matrix by it, so a feature means the same everywhere.

Values: numeric = a JSON number (not a boolean, finite); categorical = a string from ``categories``;
boolean = true/false. An optional feature may be absent or null (the kinds see NaN). A feature the
schema does not name is refused: a producer sending a column the model has never seen is a mistake to
surface, not to drop silently.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from typing import Annotated, Literal, Self

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field, model_validator

from schemas.reasons import Reason
from tasks.exceptions import InputRejected

FeatureType = Literal["numeric", "categorical", "boolean"]
Scalar = float | int | str | bool | None
Row = Mapping[str, Scalar]
Input = str | Row  # what a model kind takes: a text (text-classification) or a feature row (tabular-classification)
Name = Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_.-]{0,99}$")]


class Feature(BaseModel):
    """One column of a tabular model's input."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: Name
    type: FeatureType
    required: bool = True
    min: float | None = None
    max: float | None = None
    categories: tuple[Annotated[str, Field(min_length=1, max_length=200)], ...] | None = None
    description: Annotated[str, Field(max_length=500)] = ""

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.type != "numeric" and (self.min is not None or self.max is not None):
            raise ValueError(f"feature {self.name!r}: min/max apply to numeric features only")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"feature {self.name!r}: min {self.min} > max {self.max}")
        if self.type == "categorical":
            if not self.categories:
                raise ValueError(f"feature {self.name!r}: a categorical feature needs its categories")
            if len(set(self.categories)) != len(self.categories):
                raise ValueError(f"feature {self.name!r}: categories repeat")
        elif self.categories is not None:
            raise ValueError(f"feature {self.name!r}: categories apply to categorical features only")
        return self

    def check(self, value: Scalar) -> Scalar:
        """``value`` if it is a valid value of this feature (None for an absent optional one), else
        :class:`InputRejected` with the reason."""
        if value is None:
            if self.required:
                raise InputRejected(Reason.FEATURE_MISSING, f"feature {self.name!r} is required and is null")
            return None
        if self.type == "numeric":
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise InputRejected(Reason.FEATURE_WRONG_TYPE,
                                    f"feature {self.name!r} must be a number, got {_shown(value)}")
            if not _finite(value):
                raise InputRejected(Reason.FEATURE_OUT_OF_RANGE, f"feature {self.name!r} is not finite")
            if (self.min is not None and value < self.min) or (self.max is not None and value > self.max):
                raise InputRejected(Reason.FEATURE_OUT_OF_RANGE,
                                    f"feature {self.name!r} = {value!r} is outside [{_bound(self.min, '-inf')}, "
                                    f"{_bound(self.max, 'inf')}]")
            return value
        if self.type == "boolean":
            if not isinstance(value, bool):
                raise InputRejected(Reason.FEATURE_WRONG_TYPE,
                                    f"feature {self.name!r} must be true or false, got {_shown(value)}")
            return value
        if not isinstance(value, str):
            raise InputRejected(Reason.FEATURE_WRONG_TYPE,
                                f"feature {self.name!r} must be a string category, got {_shown(value)}")
        assert self.categories is not None
        if value not in self.categories:
            raise InputRejected(Reason.FEATURE_UNKNOWN_CATEGORY,
                                f"feature {self.name!r} = {value[:100]!r} is not one of {list(self.categories)}")
        return value


class FeatureSchema(BaseModel):
    """The ordered features of a tabular model. The order is the column order of :meth:`matrix`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    features: tuple[Feature, ...] = Field(min_length=1, max_length=1000)

    @model_validator(mode="after")
    def _unique(self) -> Self:
        names = [f.name for f in self.features]
        if len(set(names)) != len(names):
            dup = sorted({n for n in names if names.count(n) > 1})
            raise ValueError(f"feature names repeat: {dup}")
        return self

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.features)

    def validate_row(self, row: object) -> dict[str, Scalar]:
        """The row with every declared feature (absent optional ones as None), or :class:`InputRejected`
        naming the first problem: not an object, a missing required feature, an undeclared feature, a
        wrong type, a value out of range, an unknown category."""
        if not isinstance(row, Mapping):
            raise InputRejected(Reason.WRONG_TYPE, f"features must be an object, got {_shown(row)}")
        unknown = sorted(set(row) - set(self.names))
        if unknown:
            raise InputRejected(Reason.FEATURE_UNKNOWN,
                                f"features {unknown[:10]} are not in the model's schema {list(self.names)[:20]}")
        out: dict[str, Scalar] = {}
        for feature in self.features:
            if feature.name not in row:
                if feature.required:
                    raise InputRejected(Reason.FEATURE_MISSING, f"required feature {feature.name!r} is missing")
                out[feature.name] = None
                continue
            out[feature.name] = feature.check(row[feature.name])
        return out

    def matrix(self, rows: Sequence[Row]) -> npt.NDArray[np.float64]:
        """Rows as a float matrix in schema order: numeric as is, boolean 0/1, categorical as the index of
        its category in the schema (so codes are stable across versions), absent as NaN."""
        out = np.full((len(rows), len(self.features)), np.nan, dtype=np.float64)
        for j, feature in enumerate(self.features):
            codes = {c: float(i) for i, c in enumerate(feature.categories or ())}
            for i, row in enumerate(rows):
                value = row.get(feature.name)
                if value is None:
                    continue
                if feature.type == "categorical":
                    out[i, j] = codes.get(str(value), np.nan)
                else:
                    out[i, j] = float(value)
        return out

    def categorical_columns(self) -> list[int]:
        return [j for j, f in enumerate(self.features) if f.type == "categorical"]

    def to_params(self) -> list[dict[str, object]]:
        """The schema as plain JSON values (a model kind's ``features`` parameter, the spec's YAML)."""
        return [f.model_dump(mode="json", exclude_defaults=True) for f in self.features]

    @classmethod
    def from_params(cls, features: Sequence[Mapping[str, object]]) -> FeatureSchema:
        return cls.model_validate({"features": list(features)})


def row_key(row: Mapping[str, object]) -> bytes:
    """16 bytes identifying a row's values (md5 of its canonical JSON): exact duplicates share it."""
    canonical = json.dumps(dict(row), sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.md5(canonical.encode(), usedforsecurity=False).digest()


def _finite(value: float) -> bool:
    try:
        return math.isfinite(value)
    except OverflowError:  # an integer beyond every float (JSON allows any number of digits)
        return False


def _shown(value: object) -> str:
    text = json.dumps(value) if isinstance(value, str | int | float | bool | type(None)) else type(value).__name__
    return text if len(text) <= 60 else text[:57] + "..."


def _bound(value: float | None, unbounded: str) -> str:
    return unbounded if value is None else f"{value:g}"
