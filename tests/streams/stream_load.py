"""A reproducible event stream for crash, outage and rebalance tests: predictions, feedback (some
arriving before their prediction), ~1% exact resends, ~1% content resends with new ids, ~1% invalid."""

from __future__ import annotations

import random
import threading
import time
import uuid
from dataclasses import dataclass, field

from core.kafka import KafkaConnection
from core.settings import Topics
from tests.streams.helpers import LABELS, feedback, prediction, produce, producer


@dataclass
class Expected:
    predictions: set[str] = field(default_factory=set)
    feedback: set[str] = field(default_factory=set)
    invalid: int = 0
    records: int = 0


def build(n_predictions: int, seed: int = 7) -> tuple[list[tuple[str, bytes, bytes]], Expected]:
    """Records as (topic-kind, key, value) in produce order, and what must land."""
    rng = random.Random(seed)
    exp = Expected()
    out: list[tuple[str, bytes, bytes]] = []
    for i in range(n_predictions):
        pid = uuid.UUID(int=rng.getrandbits(128)).hex
        p = prediction(pid, rng.choice(LABELS), user_id=f"u{i % 97}")
        f = feedback(pid, rng.choice(LABELS), fid=uuid.UUID(int=rng.getrandbits(128)).hex, user_id=f"u{i % 97}")
        pair = [("p", pid.encode(), p.to_json()), ("f", pid.encode(), f.to_json())]
        if rng.random() < 0.1:
            pair.reverse()  # feedback before its prediction
        out.extend(pair)
        exp.predictions.add(pid)
        exp.feedback.add(f.feedback_id)
        r = rng.random()
        if r < 0.01:
            out.append(("f", pid.encode(), f.to_json()))  # exact resend
        elif r < 0.02:
            again = feedback(pid, f.label, fid=uuid.uuid4().hex, user_id=f.user_id)  # new id, same content
            out.append(("f", pid.encode(), again.to_json()))
        elif r < 0.03:
            out.append(("f", pid.encode(), b'{"type": "feedback", "broken": ' + str(i).encode()))
            exp.invalid += 1
    exp.records = len(out)
    return out, exp


def stream(kafka_conn: KafkaConnection, topics: Topics, records: list[tuple[str, bytes, bytes]],
           seconds: float) -> threading.Thread:
    """Produce ``records`` spread over about ``seconds`` in a background thread."""

    def run() -> None:
        p = producer(kafka_conn)
        chunks = max(1, int(seconds * 10))
        size = max(1, len(records) // chunks + 1)
        for start in range(0, len(records), size):
            chunk = records[start:start + size]
            for kind in ("p", "f"):
                topic = topics.predictions if kind == "p" else topics.feedback
                produce(p, topic, [(k, v) for c, k, v in chunk if c == kind])
            time.sleep(seconds / chunks)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread
