"""Training data from Postgres: the accepted ``samples``, the bootstrap ``corpus``, and the holdout, of
one model (every read is scoped to its rows), as its task's inputs (a text, or a feature row).

A feedback sample is reserved for evaluation, for ever, when a hash of its feedback id falls under the
configured percentage: the same sample is never trained on by any run, and the holdout grows with the
stream (the evaluation gate uses its most recent part plus the corpus's fixed holdout split).
"""

from __future__ import annotations

import csv
import hashlib
import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg

from tasks import TASKS, FeatureSchema, Input, InputRejected, Task
from trainer.exceptions import TrainerError


@dataclass(frozen=True)
class Snapshot:
    """What a run trains on: accepted non-holdout samples with ``id <= watermark`` (``count`` of them)."""

    watermark: int
    count: int


@dataclass
class Frame:
    """Columns of labelled inputs (texts, or feature rows); ``ids`` are sample ids (negative for corpus
    rows: ``-corpus.id``)."""

    ids: list[int] = field(default_factory=list)
    inputs: list[Input] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)
    weights: list[float] = field(default_factory=list)
    slices: list[str | None] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.ids)

    def extend(self, rows: Iterable[tuple[int, Input, str, float, str | None]]) -> Frame:
        for id_, value, label, weight, slice_ in rows:
            self.ids.append(id_)
            self.inputs.append(value)
            self.labels.append(label)
            self.weights.append(float(weight))
            self.slices.append(slice_)
        return self

    def rows(self) -> Iterator[tuple[int, Input, str, float, str | None]]:
        """(id, input, label, weight, slice) per row: what ``extend`` takes."""
        return zip(self.ids, self.inputs, self.labels, self.weights, self.slices, strict=True)

    def take(self, indices: Sequence[int]) -> Frame:
        return Frame().extend(
            (self.ids[i], self.inputs[i], self.labels[i], self.weights[i], self.slices[i]) for i in indices)

    def digest(self) -> str:
        """sha256 over (id, label, weight, input) in id order: the data snapshot hash of a run (a text as
        its UTF-8 bytes, a feature row as its canonical JSON)."""
        h = hashlib.sha256()
        for i in sorted(range(len(self)), key=self.ids.__getitem__):
            h.update(f"{self.ids[i]}\x1f{self.labels[i]}\x1f{self.weights[i]!r}\x1f".encode())
            value = self.inputs[i]
            raw = value if isinstance(value, str) else json.dumps(dict(value), sort_keys=True, separators=(",", ":"))
            h.update(hashlib.sha256(raw.encode()).digest())
        return h.hexdigest()


def holdout_predicate(percent: int) -> str:
    """SQL true for samples reserved for evaluation (stable: md5 of the feedback id, mod 100)."""
    if not 0 <= percent <= 50:
        raise TrainerError(f"holdout percent must be within 0..50, got {percent}")
    return f"(mod(('x' || substr(md5(feedback_id), 1, 8))::bit(32)::bigint, 100) < {percent})"


_SLICE = "COALESCE(domain, segment)"


class SampleStore:
    """Reads of one model's training interface (its ``samples`` and ``corpus`` rows) on one connection;
    ``task`` turns a stored row into the model's input."""

    def __init__(self, conn: psycopg.Connection[tuple[object, ...]], holdout_percent: int, *, model: str,
                 task: Task | None = None) -> None:
        self.conn = conn
        self.model = model
        self.task = task or TASKS["text-classification"]
        self._holdout = holdout_predicate(holdout_percent)

    def _frame(self, rows: Iterable[Sequence[Any]]) -> Frame:
        """Rows of (id, text, input, label, weight, slice) as a frame of the task's inputs."""
        model_input = self.task.model_input
        return Frame().extend((r[0], model_input(r[1], r[2]), r[3], r[4], r[5]) for r in rows)

    def snapshot(self) -> Snapshot:
        row = self.conn.execute(
            f"SELECT COALESCE(max(id), 0), count(*) FROM samples "
            f"WHERE model = %s AND status = 'accepted' AND NOT {self._holdout}", (self.model,)).fetchone()
        assert row is not None
        return Snapshot(watermark=int(row[0]), count=int(row[1]))  # type: ignore[call-overload]

    def samples(self, *, after: int, upto: int, landed_after: datetime | None = None) -> Frame:
        """Accepted training samples with ``after < id <= upto``; with ``landed_after``, also those with a
        lower id that became samples after that time (feedback joined late to its prediction)."""
        late = "OR landed_at > %s" if landed_after is not None else ""
        params = (self.model, after, landed_after, upto) if landed_after is not None else (self.model, after, upto)
        rows = self.conn.execute(
            f"SELECT id, text, input, label, weight, {_SLICE} FROM samples WHERE model = %s "
            f"AND status = 'accepted' AND NOT {self._holdout} AND (id > %s {late}) AND id <= %s ORDER BY id",
            params).fetchall()
        return self._frame(rows)

    def arrived(self, watermark: int) -> Frame:
        """Accepted training samples above ``watermark`` (a run's snapshot): those labelled since it began."""
        rows = self.conn.execute(
            f"SELECT id, text, input, label, weight, {_SLICE} FROM samples WHERE model = %s "
            f"AND status = 'accepted' AND NOT {self._holdout} AND id > %s ORDER BY id",
            (self.model, watermark)).fetchall()
        return self._frame(rows)

    def run_started(self, run_id: str | None) -> datetime | None:
        if not run_id:
            return None
        row = self.conn.execute("SELECT started_at FROM training_runs WHERE run_id::text = %s", (run_id,)).fetchone()
        return row[0] if row is not None and isinstance(row[0], datetime) else None

    def corpus(self, split: str) -> Frame:
        rows = self.conn.execute(
            f"SELECT -id, text, input, label, 1.0, {_SLICE} FROM corpus WHERE model = %s AND split = %s ORDER BY id",
            (self.model, split)).fetchall()
        return self._frame(rows)

    def recent_holdout(self, limit: int) -> Frame:
        """The most recent ``limit`` feedback samples no run trains on: reserved ones that were accepted,
        and every one quarantined only as a label issue (reserved or not). A label issue is the served
        model disagreeing with the user; leaving those out would keep only what the champion already gets
        right, an exam the champion chose: measured in bench/efficacy.py, judged on accepted samples alone
        a products candidate looked +0.065 better than the champion (p = 0.002) and was no better on
        held-out products, and a tweets candidate with less of the corpus looked worse when it was better."""
        rows = self.conn.execute(
            f"SELECT id, text, input, label, weight, {_SLICE} FROM samples WHERE model = %s "
            f"AND (({self._holdout} AND status = 'accepted') OR (status = 'quarantined' "
            f"AND reasons = '[\"label_issue\"]'::jsonb)) ORDER BY id DESC LIMIT %s", (self.model, limit)).fetchall()
        return self._frame(reversed(rows))

    def holdout(self, recent: int) -> Frame:
        """The evaluation set: the corpus's fixed holdout plus the most recent reserved feedback."""
        frame = self.corpus("holdout")
        recent_frame = self.recent_holdout(recent)
        return frame.extend(recent_frame.rows())


@dataclass(frozen=True)
class CorpusRow:
    """One labelled corpus row; ``text`` is the model's input (a text, or a feature row)."""

    text: Input
    label: str
    domain: str | None


def read_labelled_csv(path: Path, labels: Sequence[str], *, text_column: str = "text",
                      label_column: str | None = None) -> list[CorpusRow]:
    """A labelled CSV (``text`` + ``label`` or ``label3`` + optional ``domain``), every row checked: a bad
    row is an error naming its line, never silently dropped."""
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            columns = reader.fieldnames or []
            label_col = label_column or next((c for c in ("label", "label3") if c in columns), None)
            if text_column not in columns or label_col is None or label_col not in columns:
                raise TrainerError(f"{path}: needs a {text_column!r} and a label column ('label' or 'label3'), "
                                   f"has {columns}")
            rows, problems = [], []
            for line, raw in enumerate(reader, start=2):
                text, label = (raw.get(text_column) or "").strip(), (raw.get(label_col) or "").strip()
                if not text:
                    problems.append(f"line {line}: empty text")
                elif label not in labels:
                    problems.append(f"line {line}: label {label!r} is not one of {list(labels)}")
                else:
                    rows.append(CorpusRow(text, label, (raw.get("domain") or "").strip() or None))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise TrainerError(f"{path}: cannot read the CSV: {exc}") from exc
    return _all_good(path, rows, problems)


def read_tabular_csv(path: Path, features: FeatureSchema, labels: Sequence[str], *,
                     label_column: str = "label") -> list[CorpusRow]:
    """A labelled tabular CSV: one column per feature of ``features`` (by name; others are ignored) and a
    ``label`` column, every row checked against the schema (empty cell = absent; numbers, booleans
    ``true``/``false``/``1``/``0`` and categories parsed by the feature's type): a bad row is an error
    naming its line and the problem, never silently dropped."""
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            columns = reader.fieldnames or []
            absent = [f.name for f in features.features if f.required and f.name not in columns]
            if label_column not in columns or absent:
                raise TrainerError(f"{path}: needs a {label_column!r} column and every required feature; missing "
                                   f"{([label_column] if label_column not in columns else []) + absent}")
            rows, problems = [], []
            for line, raw in enumerate(reader, start=2):
                label = (raw.get(label_column) or "").strip()
                try:
                    present = [f for f in features.features if (raw.get(f.name) or "").strip()]
                    values = features.validate_row({f.name: _cell(raw[f.name], f.type) for f in present})
                except (InputRejected, ValueError) as exc:
                    problems.append(f"line {line}: {exc}")
                    continue
                if label not in labels:
                    problems.append(f"line {line}: label {label!r} is not one of {list(labels)}")
                else:
                    rows.append(CorpusRow(values, label, (raw.get("domain") or "").strip() or None))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise TrainerError(f"{path}: cannot read the CSV: {exc}") from exc
    return _all_good(path, rows, problems)


def _all_good(path: Path, rows: list[CorpusRow], problems: list[str]) -> list[CorpusRow]:
    """``rows`` when no row had a problem and there is one at least; else the error naming the first five."""
    if problems:
        more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
        raise TrainerError(f"{path}: {len(problems)} bad rows: {'; '.join(problems[:5])}{more}")
    if not rows:
        raise TrainerError(f"{path}: no rows")
    return rows


def _cell(text: str, kind: str) -> float | str | bool:
    value = text.strip()
    if kind == "numeric":
        return float(value)
    if kind == "boolean":
        lowered = value.lower()
        if lowered not in ("true", "false", "1", "0"):
            raise ValueError(f"{value!r} is not a boolean (true/false/1/0)")
        return lowered in ("true", "1")
    return value


def split_holdout(rows: Sequence[CorpusRow], fraction: float, seed: int) -> tuple[list[CorpusRow], list[CorpusRow]]:
    """A stratified-by-label random split (seeded) into (train, holdout)."""
    import random

    rng = random.Random(seed)
    train: list[CorpusRow] = []
    holdout: list[CorpusRow] = []
    by_label: dict[str, list[CorpusRow]] = {}
    for row in rows:
        by_label.setdefault(row.label, []).append(row)
    for label in sorted(by_label):
        group = by_label[label][:]
        rng.shuffle(group)
        cut = round(len(group) * fraction)
        holdout.extend(group[:cut])
        train.extend(group[cut:])
    return train, holdout


def store_corpus(conn: psycopg.Connection[tuple[object, ...]], source: str, train: Sequence[CorpusRow],
                 holdout: Sequence[CorpusRow], *, model: str) -> None:
    """Replace ``model``'s corpus (and only its) with ``train`` and ``holdout``."""
    conn.execute("DELETE FROM corpus WHERE model = %s", (model,))
    with conn.cursor() as cur, cur.copy(
            "COPY corpus (model, text, input, label, domain, split, source) FROM STDIN") as copy:
        for split, rows in (("train", train), ("holdout", holdout)):
            for row in rows:
                text, data = (row.text, None) if isinstance(row.text, str) else (
                    None, json.dumps({"features": dict(row.text)}, allow_nan=False))
                copy.write_row((model, text, data, row.label, row.domain, split, source))
