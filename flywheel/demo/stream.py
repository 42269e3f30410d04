"""The replayed stream: labelled rows of a domain, the target split, and the simulated crowd that answers
(feedback rate, label noise, poisoners who flip labels)."""

from __future__ import annotations

import csv
import logging
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from flywheel.demo.options import DemoOptions
from tasks.features import Input

log = logging.getLogger(__name__)


DATA = Path(__file__).resolve().parents[2] / "data"
OPPOSITE = {"positive": "negative", "negative": "positive"}


@dataclass(frozen=True)
class Row:
    text: Input  # what the model takes: a text, or a feature row (tabular scenarios)
    label: str


def read_rows(name: str) -> list[Row]:
    with (DATA / f"{name}.csv").open(newline="", encoding="utf-8") as fh:
        return [Row(r["text"].strip(), r["label3"]) for r in csv.DictReader(fh) if r["text"].strip()]


def split_target(name: str, eval_fraction: float, seed: int) -> tuple[list[Row], list[Row]]:
    """(stream, held-out evaluation rows) of a target domain, shuffled with ``seed``."""
    rows = read_rows(name)
    random.Random(seed).shuffle(rows)
    cut = int(len(rows) * eval_fraction)
    return rows[cut:], rows[:cut]


class Crowd:
    """Simulated users. Each prediction is judged with probability ``feedback_rate`` by the user who asked;
    honest users give the true label (a random one with probability ``noise``); poisoners (``poison`` of
    the users, so about that share of the feedback) give the opposite sentiment (neutral becomes positive
    or negative at random)."""

    def __init__(self, options: DemoOptions, labels: Sequence[str]) -> None:
        self.options, self.labels = options, tuple(labels)
        self.rng = random.Random(options.seed + 1)
        self.users = [f"user-{i:03d}" for i in range(options.users)]
        bad = round(options.poison * options.users)
        self.poisoners = set(self.rng.sample(self.users, bad))

    def user(self) -> str:
        return self.rng.choice(self.users)

    def judge(self, user: str, truth: str) -> tuple[str, str] | None:
        """(label, kind) with kind honest | noisy | poison, or None when the user gives no feedback."""
        if self.rng.random() >= self.options.feedback_rate:
            return None
        if user in self.poisoners:
            return OPPOSITE.get(truth) or self.rng.choice([x for x in self.labels if x != truth]), "poison"
        if self.rng.random() < self.options.noise:
            return self.rng.choice(self.labels), "noisy"
        return truth, "honest"

