"""Real labelled data for the gate tests (``data/*.csv``, shuffled with a seeded Random: the files are
ordered by sentiment) and a scripted model kind for hand-computable cases."""

from __future__ import annotations

import csv
import functools
import random
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Self

import numpy as np
import pandas as pd

from kinds.base import ModelKind, Probabilities

DATA = Path(__file__).resolve().parents[3] / "data"
LABELS = ("negative", "neutral", "positive")
FLIP = {"negative": "positive", "positive": "negative", "neutral": "neutral"}


@functools.cache
def rows(name: str) -> tuple[dict[str, str], ...]:
    with (DATA / f"{name}.csv").open(newline="") as fh:
        out = list(csv.DictReader(fh))
    random.Random(0).shuffle(out)
    return tuple(out)


def texts_labels(name: str, start: int, stop: int | None) -> tuple[list[str], list[str]]:
    chunk = rows(name)[start:stop]
    return [r["text"] for r in chunk], [r["label3"] for r in chunk]


def frame(name: str, start: int, stop: int | None) -> pd.DataFrame:
    """A training frame as the trainer builds it: text, label, weight, domain."""
    chunk = rows(name)[start:stop]
    return pd.DataFrame({"text": [r["text"] for r in chunk], "label": [r["label3"] for r in chunk],
                         "weight": [1.0] * len(chunk), "domain": [r["domain"] for r in chunk]})


class Scripted(ModelKind):
    """A test double: each known text gets a fixed probability row (``script[text]``, in ``labels`` order)."""

    kind = "scripted"
    tasks = frozenset({"text-classification"})

    def __init__(self, *, labels: Sequence[str] = LABELS, script: Mapping[str, Sequence[float]] | None = None) -> None:
        super().__init__(labels=tuple(labels), script=dict(script or {}))
        self.labels = tuple(labels)
        self.seen: list[list[str]] = []

    def fit(self, texts: Sequence[str], labels: Sequence[str], weights: Sequence[float] | None = None) -> Self:
        return self

    def predict_proba(self, texts: Sequence[str]) -> Probabilities:
        self.seen.append(list(texts))
        uniform = [1.0 / len(self.labels)] * len(self.labels)
        return np.array([self.params["script"].get(t, uniform) for t in texts], dtype=np.float64)

    def _save_files(self, directory: Path) -> list[str]:
        return []

    def _load_files(self, directory: Path) -> None:
        return None


def confident(label: str, p: float = 0.9, labels: Sequence[str] = LABELS) -> list[float]:
    """A probability row giving ``label`` probability ``p`` and sharing the rest equally."""
    rest = (1.0 - p) / (len(labels) - 1)
    return [p if lbl == label else rest for lbl in labels]

