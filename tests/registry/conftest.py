"""Registry fixtures: real saved models, and Postgres databases that already hold MLflow's tables.

MLflow creates ~65 tables and runs its Alembic migrations on first use (~1.6-3.5 s per database), so a
session template gets them once (cloned from the migrated platform template) and each test clones it:
a fresh database per test that opens in ~0.1 s.
"""

from __future__ import annotations

import csv
import functools
import random
from dataclasses import dataclass
from pathlib import Path

import pytest

from kinds import ModelKind, TfidfLogReg, create
from registry import ModelRegistry, open_registry, postgres_backend

DATA = Path(__file__).resolve().parents[2] / "data"
MODEL = "sentiment"


class OtherKind(TfidfLogReg):
    """A second model kind (same code, another name) to exercise kind changes."""

    kind = "tfidf-logreg-test"


@functools.cache
def rows_by_label() -> dict[str, list[dict[str, str]]]:
    with (DATA / "vader_movies.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    random.Random(0).shuffle(rows)
    by_label: dict[str, list[dict[str, str]]] = {}
    for row in rows:
        by_label.setdefault(row["label3"], []).append(row)
    return by_label


def corpus(labels: tuple[str, ...], per_label: int = 12, offset: int = 0) -> tuple[list[str], list[str]]:
    picked = [row for label in labels for row in rows_by_label()[label][offset:offset + per_label]]
    return [r["text"] for r in picked], [r["label3"] for r in picked]


THREE = ("negative", "neutral", "positive")


@dataclass(frozen=True)
class Saved:
    path: Path
    model: ModelKind


@pytest.fixture(scope="session")
def saved(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Saved]:
    """Saved artifacts: ``a``/``b``/``c`` (three labels, different data), ``binary`` (two labels) and
    ``other`` (the three labels, another kind)."""
    root = tmp_path_factory.mktemp("models")
    specs: dict[str, tuple[ModelKind, tuple[str, ...], int]] = {
        "a": (create("tfidf-logreg"), THREE, 0), "b": (create("tfidf-logreg"), THREE, 12),
        "c": (create("tfidf-logreg"), THREE, 24), "binary": (create("tfidf-logreg"), THREE[::2], 0),
        "other": (OtherKind(), THREE, 0),
    }
    out = {}
    for name, (model, labels, offset) in specs.items():
        model.fit(*corpus(labels, offset=offset))
        model.save(root / name)
        out[name] = Saved(root / name, model)
    return out


@pytest.fixture
def backend(registry_db_url: str) -> str:
    return postgres_backend(registry_db_url)


@pytest.fixture
def registry(backend: str, tmp_path: Path) -> ModelRegistry:
    return open_registry(backend, tmp_path / "artifacts", MODEL)
