"""Tabular data for the tests: the real NOAA rainfall rows (data/rainfall.csv, chronological, an abrupt
drift after row ~12,000) and a seeded synthetic set with every feature type (numeric, categorical,
boolean) and missing values, binary or 3-class."""

from __future__ import annotations

import csv
import functools
import random
from pathlib import Path

from tasks import FeatureSchema, Row

DATA = Path(__file__).resolve().parents[2] / "data"
# data/rainfall.csv's columns (after its unnamed index), as feature names
RAINFALL_COLUMNS = {"temperature": "temperature", "dew point": "dew_point",
                    "sea-level pressure": "sea_level_pressure", "visibility": "visibility",
                    "average wind speed": "average_wind_speed", "max sustained wind-speed": "max_sustained_wind_speed",
                    "minimum temperature": "minimum_temperature", "maximum temperature": "maximum_temperature"}
RAINFALL_FEATURES = FeatureSchema.from_params([{"name": name, "type": "numeric"} for name in RAINFALL_COLUMNS.values()])

COLOURS = ("red", "green", "blue", "grey")
MIXED_FEATURES = FeatureSchema.from_params([
    {"name": "x", "type": "numeric"},
    {"name": "z", "type": "numeric", "required": False},
    {"name": "colour", "type": "categorical", "categories": list(COLOURS)},
    {"name": "member", "type": "boolean", "required": False},
])


@functools.cache
def rainfall() -> tuple[tuple[Row, ...], tuple[str, ...]]:
    """Every row in file order: the features, and ``rain`` / ``dry``."""
    with (DATA / "rainfall.csv").open(newline="") as fh:
        records = list(csv.DictReader(fh))
    rows = tuple({name: float(r[column]) for column, name in RAINFALL_COLUMNS.items()} for r in records)
    return rows, tuple("rain" if r["rain"] == "1" else "dry" for r in records)


def mixed(n: int, *, seed: int = 0, classes: int = 3) -> tuple[list[Row], list[str]]:
    """``n`` rows of :data:`MIXED_FEATURES` (``z`` absent in ~20%, ``member`` null or absent in ~20%) whose
    label depends on every feature type: the colour (categorical), the membership (boolean) and x."""
    rng = random.Random(seed)
    rows: list[Row] = []
    labels: list[str] = []
    for _ in range(n):
        x, z, colour, member = rng.gauss(0, 1), rng.gauss(0, 1), rng.choice(COLOURS), rng.random() < 0.5
        row: dict[str, float | str | bool | None] = {"x": x, "colour": colour}
        if rng.random() < 0.8:
            row["z"] = z
        draw = rng.random()
        if draw < 0.8:
            row["member"] = member
        elif draw < 0.9:
            row["member"] = None
        score = x + (1.5 if colour in ("green", "grey") else -1.0) + (1.0 if row.get("member") else 0.0)
        if classes == 2:
            label = "yes" if score + rng.gauss(0, 0.3) > 0.5 else "no"
        else:
            label = "high" if score > 1.2 else "low" if score < -0.5 else "mid"
        if rng.random() < 0.05:  # a little label noise
            label = rng.choice(["yes", "no"] if classes == 2 else ["high", "mid", "low"])
        rows.append(row)
        labels.append(label)
    return rows, labels
