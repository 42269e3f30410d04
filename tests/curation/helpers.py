"""Shared pieces of the curation tests: pending rows for the in-memory store, and feedback landed in
Postgres the way the ingest processor lands it (a prediction, then its joined feedback)."""

from __future__ import annotations

import functools
import itertools
import json
import random
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np

from core import db
from core.db import session_connector
from core.kafka import KafkaConnection
from curation import CurationConfig, CurationService, Pending
from kinds.tfidf import TfidfLogReg
from tests.trainer.lifecycle_helpers import rows

LABELS = ("negative", "neutral", "positive")
T0 = datetime(2026, 11, 22, tzinfo=UTC)
_ids = itertools.count(1)


def probs(top: str, p: float = 0.8) -> dict[str, float]:
    rest = (1.0 - p) / (len(LABELS) - 1)
    return {k: (p if k == top else rest) for k in LABELS}


def pending(text: str, label: str | None, *, user: str | None = "u1", served: str = "neutral",
            probabilities: object = None, thumbs: str | None = None, id: int | None = None,
            resolved_at: datetime = T0) -> Pending:
    i = id if id is not None else next(_ids)
    return Pending(id=i, feedback_id=f"f{i}", prediction_id=f"p{i}", text=text, label=label, thumbs=thumbs,
                   predicted_label=served, probabilities=probabilities if probabilities is not None else probs(served),
                   user_id=user, domain="movies", segment=None, ts=T0, resolved_at=resolved_at, model_version="1")


@dataclass(frozen=True)
class Feedback:
    text: str
    label: str | None = None
    thumbs: str | None = None
    user: str | None = "u1"
    served: str = "neutral"
    probabilities: dict[str, float] | None = None


def land(db_url: str, items: Sequence[Feedback], *, status: str = "joined") -> list[int]:
    """Predictions + their feedback, committed like ingest does (one transaction); feedback ids back."""
    with db.connect(db_url) as conn, conn.cursor() as cur:
        ids = []
        for item in items:
            pid = uuid.uuid4().hex
            p = item.probabilities or probs(item.served)
            cur.execute("INSERT INTO predictions (prediction_id, model, model_version, variant, text, label, "
                        "probabilities, latency_ms, user_id, domain, ts) VALUES (%s, 'sentiment', '1', 'champion', "
                        "%s, %s, %s, 3.0, %s, 'movies', %s)",
                        (pid, item.text, item.served, json.dumps(p), item.user, T0))
            joined = status == "joined"
            row = cur.execute(
                "INSERT INTO feedback (feedback_id, content_key, prediction_id, label, thumbs, user_id, source, ts, "
                "status, model, model_version, variant, predicted_label, probabilities, resolved_at) "
                "VALUES (%s, %s, %s, %s, %s, %s, 'test', %s, %s, %s, %s, %s, %s, %s, "
                "CASE WHEN %s THEN now() END) RETURNING id",
                (uuid.uuid4().hex, uuid.uuid4(), pid, item.label, item.thumbs, item.user, T0, status,
                 "sentiment" if joined else None, "1" if joined else None, "champion" if joined else None,
                 item.served if joined else None, json.dumps(p) if joined else None, joined)).fetchone()
            assert row is not None
            ids.append(int(row[0]))
        conn.commit()
    return ids


def join_late(db_url: str, feedback_ids: Sequence[int]) -> None:
    """Pending feedback whose prediction came: joined now, as ingest's late join does."""
    with db.connect(db_url) as conn:
        conn.execute(
            "UPDATE feedback f SET status = 'joined', model = p.model, model_version = p.model_version, "
            "variant = p.variant, predicted_label = p.label, probabilities = p.probabilities, resolved_at = now() "
            "FROM predictions p WHERE p.prediction_id = f.prediction_id AND f.id = ANY(%s)", (list(feedback_ids),))
        conn.commit()


def samples(db_url: str) -> dict[int, tuple[str, float, list[str], str | None]]:
    """id -> (status, weight, reasons, label)."""
    with db.connect(db_url) as conn:
        rows = conn.execute("SELECT id, status, weight, reasons, label FROM samples ORDER BY id").fetchall()
    return {int(r[0]): (r[1], float(r[2]), list(r[3]), r[4]) for r in rows}


class RecordingPublisher:
    """The fake of the Curated signal's producer: records what would have been sent."""

    def __init__(self) -> None:
        self.records: list[tuple[str, bytes | None, bytes]] = []

    def send_all(self, topic: str, records: Iterable[tuple[bytes | None, bytes]], timeout: float = 30.0) -> int:
        batch = [(topic, k, v) for k, v in records]
        self.records.extend(batch)
        return len(batch)


# -- real streams: a tfidf-logreg's out-of-sample probabilities, labelled by simulated users --------------
OPPOSITE = {"negative": "positive", "positive": "negative"}


@functools.cache
def movies_model(train_rows: int | None = None) -> TfidfLogReg:
    """tfidf-logreg trained on vader_movies (its first ``train_rows`` shuffled rows, or all of them)."""
    data = rows("vader_movies")[:train_rows] if train_rows else rows("vader_movies")
    return TfidfLogReg().fit([r.text for r in data], [r.label for r in data])


def flip(label: str, rng: random.Random) -> str:
    """What a poisoner says: the opposite sentiment (neutral becomes either), as ``flywheel.demo.Crowd``."""
    return OPPOSITE.get(label) or rng.choice(["negative", "positive"])


def land_stream(db_url: str, texts: Sequence[str], labels: Sequence[str], users: Sequence[str], proba: np.ndarray,
                classes: Sequence[str], domain: str) -> list[int]:
    """Predictions with ``proba`` and their joined label feedback, bulk-copied; feedback ids in order."""
    with db.connect(db_url) as conn, conn.cursor() as cur:
        pids = [uuid.uuid4().hex for _ in texts]
        with cur.copy("COPY predictions (prediction_id, model, model_version, variant, text, label, probabilities, "
                      "latency_ms, domain, ts) FROM STDIN") as copy:
            for pid, text, p in zip(pids, texts, proba, strict=True):
                copy.write_row((pid, "sentiment", "1", "champion", text, classes[int(p.argmax())],
                                json.dumps(dict(zip(classes, map(float, p), strict=True))), 3.0, domain,
                                "2026-11-22T00:00:00Z"))
        with cur.copy("COPY feedback (feedback_id, content_key, prediction_id, label, user_id, source, ts, status, "
                      "model, model_version, variant, predicted_label, probabilities, resolved_at) FROM STDIN") as copy:
            for pid, label, user, p in zip(pids, labels, users, proba, strict=True):
                copy.write_row((uuid.uuid4().hex, uuid.uuid4(), pid, label, user, "test", "2026-11-22T00:00:01Z",
                                "joined", "sentiment", "1", "champion", classes[int(p.argmax())],
                                json.dumps(dict(zip(classes, map(float, p), strict=True))), "2026-11-22T00:00:02Z"))
        ids = [int(r[0]) for r in cur.execute(
            "SELECT f.id FROM feedback f JOIN unnest(%s::text[]) WITH ORDINALITY AS u(pid, n) "
            "ON u.pid = f.prediction_id ORDER BY u.n", (pids,)).fetchall()]
        conn.commit()
    return ids


def curate_all(db_url: str, batch_size: int = 200, rule: str = "fdr") -> dict[int, tuple[str, list[str]]]:
    """Curate every landed row through Postgres as the service does (annotator trust rule ``rule``);
    sample id -> (status, reasons)."""
    config = CurationConfig.model_validate({"service": {"batch_size": batch_size}, "annotators": {"rule": rule}})
    service = CurationService(connector=session_connector(db_url), config=config, labels=LABELS,
                              kafka=KafkaConnection(bootstrap_servers="unused:9092"), group="g", landed_topic="l",
                              curated_topic="c", default_model="sentiment", producer=RecordingPublisher())
    assert service.curate_pass().outcome == "curated"
    while service.curate_pass().outcome == "curated":  # a pass yields after max_pass_s
        pass
    with db.connect(db_url) as conn:
        return {int(r[0]): (str(r[1]), list(r[2])) for r in conn.execute("SELECT id, status, reasons FROM samples")}


def low_trust_users(db_url: str) -> set[str]:
    with db.connect(db_url) as conn:
        return {str(r[0]) for r in conn.execute("SELECT user_id FROM annotators WHERE low_trust")}


def annotator_trust(db_url: str) -> dict[str, float]:
    with db.connect(db_url) as conn:
        return {str(r[0]): float(r[1]) for r in conn.execute("SELECT user_id, trust FROM annotators")}
