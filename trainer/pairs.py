"""A generator's training interface: prompt -> response pairs from its curated ``samples`` (the ``target``
curation chose, weighted by the sample's weight) and from its bootstrap ``corpus`` (the prompt document in
``input``, the reference response in ``label``).

Reserved samples (``md5(feedback_id)`` mod 100 below ``holdout_percent``, as for the classifiers) are
never trained on: those with a person's correction, with the corpus's holdout split, are the held-out
references of every run (:meth:`PairStore.holdout`).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import psycopg

from kinds.generation import Pair, Prompt
from trainer.data import Snapshot, holdout_predicate
from trainer.exceptions import TrainerError

__all__ = ["PairStore", "pair_of", "read_pairs_csv", "store_pair_corpus"]


def pair_of(document: object, response: str, weight: float = 1.0) -> Pair:
    """A :class:`Pair` from a stored prompt document (``prompt``, ``context``, ``persona``)."""
    doc = document if isinstance(document, dict) else {}
    return Pair(Prompt(str(doc.get("prompt") or ""), doc.get("context"), doc.get("persona")), response, float(weight))


class PairStore:
    """Reads of one generator's pairs on one connection."""

    def __init__(self, conn: psycopg.Connection[Any], holdout_percent: int, *, model: str) -> None:
        self.conn = conn
        self.model = model
        self._holdout = holdout_predicate(holdout_percent)

    def snapshot(self) -> Snapshot:
        row = self.conn.execute(
            f"SELECT COALESCE(max(id), 0), count(*) FROM samples WHERE model = %s AND status = 'accepted' "
            f"AND target IS NOT NULL AND NOT {self._holdout}", (self.model,)).fetchone()
        assert row is not None
        return Snapshot(watermark=int(row[0]), count=int(row[1]))

    def training(self, *, after: int, upto: int) -> list[tuple[int, Pair]]:
        """Accepted, unreserved samples with ``after < id <= upto`` (id, pair), in id order."""
        rows = self.conn.execute(
            f"SELECT id, input, target, weight FROM samples WHERE model = %s AND status = 'accepted' "
            f"AND target IS NOT NULL AND NOT {self._holdout} AND id > %s AND id <= %s ORDER BY id",
            (self.model, after, upto)).fetchall()
        return [(int(r[0]), pair_of(r[1], r[2], r[3])) for r in rows]

    def replay(self, *, upto: int, limit: int) -> list[tuple[int, Pair]]:
        """The ``limit`` most recent accepted, unreserved samples with ``id <= upto`` (earlier pairs mixed
        into an incremental run so that the adapter does not forget them)."""
        if limit <= 0:
            return []
        rows = self.conn.execute(
            f"SELECT id, input, target, weight FROM samples WHERE model = %s AND status = 'accepted' "
            f"AND target IS NOT NULL AND NOT {self._holdout} AND id <= %s ORDER BY id DESC LIMIT %s",
            (self.model, upto, limit)).fetchall()
        return [(int(r[0]), pair_of(r[1], r[2], r[3])) for r in reversed(rows)]

    def corpus(self, split: str) -> list[Pair]:
        rows = self.conn.execute("SELECT input, label FROM corpus WHERE model = %s AND split = %s ORDER BY id",
                                 (self.model, split)).fetchall()
        return [pair_of(r[0], r[1]) for r in rows]

    def holdout(self, recent: int) -> list[Pair]:
        """The held-out references: the corpus's holdout and the ``recent`` most recent reserved samples whose
        target a person wrote (a correction or preferred response).

        A served answer rated good is a training target, never a reference: it is the serving version's own
        greedy output, which that version reproduces word for word (BLEU 1.0 where another model scores ~0.1),
        so among the references it favours the version that served it, the champion a candidate must beat.
        Measured on one platform run of the dialogue bench: 19 of 311 targets were served answers; one among a
        gate's 28 references moves that version's mean score by ~0.03, more than the gains the gate ranks."""
        rows = self.conn.execute(
            f"SELECT input, target FROM samples WHERE model = %s AND status = 'accepted' AND target IS NOT NULL "
            f"AND {self._holdout} AND EXISTS (SELECT 1 FROM feedback f WHERE f.feedback_id = samples.feedback_id "
            f"AND f.correction IS NOT NULL) ORDER BY id DESC LIMIT %s", (self.model, recent)).fetchall()
        return self.corpus("holdout") + [pair_of(r[0], r[1]) for r in reversed(rows)]

    def counts(self) -> dict[str, Any]:
        """Samples by status and reason (the model card's data counts)."""
        status = dict(self.conn.execute("SELECT status, count(*) FROM samples WHERE model = %s GROUP BY status "
                                        "ORDER BY status", (self.model,)).fetchall())
        reasons = dict(self.conn.execute(
            "SELECT r, count(*) FROM samples, jsonb_array_elements_text(reasons) AS r WHERE model = %s "
            "GROUP BY r ORDER BY r", (self.model,)).fetchall())
        corpus = dict(self.conn.execute("SELECT split || ' (' || source || ')', count(*) FROM corpus "
                                        "WHERE model = %s GROUP BY 1 ORDER BY 1", (self.model,)).fetchall())
        return {"samples": {str(k): int(v) for k, v in status.items()},
                "reasons": {str(k): int(v) for k, v in reasons.items()},
                "corpus": {str(k): int(v) for k, v in corpus.items()}}


def store_pair_corpus(conn: psycopg.Connection[Any], source: str, train: Sequence[Pair], holdout: Sequence[Pair],
                      *, model: str) -> None:
    """Replace ``model``'s corpus with these pairs (prompt document in ``input``, response in ``label``)."""
    conn.execute("DELETE FROM corpus WHERE model = %s", (model,))
    with conn.cursor() as cur, cur.copy("COPY corpus (model, input, label, split, source) FROM STDIN") as copy:
        for split, pairs in (("train", train), ("holdout", holdout)):
            for p in pairs:
                doc = {k: v for k, v in (("prompt", p.prompt.prompt), ("context", p.prompt.context),
                                         ("persona", p.prompt.persona)) if v is not None}
                copy.write_row((model, json.dumps(doc), p.response, split, source))


def read_pairs_csv(path: Path) -> list[Pair]:
    """A CSV of pairs (``prompt``, ``response``, optional ``context`` and ``persona``), every row checked:
    a bad row is an error naming its line, never silently dropped."""
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            missing = {"prompt", "response"} - set(reader.fieldnames or ())
            if missing:
                raise TrainerError(f"{path}: missing column(s) {sorted(missing)} (have {reader.fieldnames})")
            pairs = []
            for row in reader:
                prompt, response = (row.get("prompt") or "").strip(), (row.get("response") or "").strip()
                if not prompt or not response:
                    raise TrainerError(f"{path}:{reader.line_num}: empty prompt or response")
                pairs.append(Pair(Prompt(prompt, row.get("context") or None, row.get("persona") or None), response))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise TrainerError(f"{path}: cannot read the pairs: {exc}") from exc
    if not pairs:
        raise TrainerError(f"{path}: no pairs")
    return pairs
