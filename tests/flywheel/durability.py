"""The durability scenario of issue 21, shared by tests/flywheel/test_durability.py and bench/durability.py:
an idempotent acks=all producer sends feedback events at a fixed rate to ``flywheel up`` (durable embedded
broker on a fixed port), which is stopped mid-stream by each given signal and started again; at the end,
every acknowledged event must be in Postgres exactly once."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import psycopg
from confluent_kafka import KafkaError, Message, Producer

SOURCE = "durability"


@dataclass
class Ledger:
    """What the producer was told: acknowledged ids and delivery errors."""

    acknowledged: set[str] = field(default_factory=set)
    errors: list[str] = field(default_factory=list)
    sent: int = 0


class RateProducer(threading.Thread):
    """Feedback events at ``rate`` per second for ``seconds``, through restarts of the broker: the address
    is read once, and librdkafka retries what is not acknowledged for up to ``message.timeout.ms``."""

    def __init__(self, bootstrap: str, topic: str, rate: float, seconds: float) -> None:
        super().__init__(daemon=True)
        self.ledger = Ledger()
        self.topic, self.rate, self.seconds = topic, rate, seconds
        self.producer = Producer({
            "bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all", "linger.ms": 5,
            "message.timeout.ms": 300_000, "reconnect.backoff.max.ms": 500, "log_level": 0})

    def _delivered(self, err: KafkaError | None, msg: Message) -> None:
        if err is None:
            self.ledger.acknowledged.add(json.loads(msg.value())["feedback_id"])
        else:
            self.ledger.errors.append(str(err))

    def run(self) -> None:
        now = datetime.now(UTC).isoformat()
        total = int(self.rate * self.seconds)
        start = time.perf_counter()
        for i in range(total):
            while time.perf_counter() - start < i / self.rate:
                self.producer.poll(0.002)
            fid = uuid.uuid4().hex
            event = {"type": "feedback", "schema_version": 1, "feedback_id": fid, "prediction_id": uuid.uuid4().hex,
                     "label": ("negative", "neutral", "positive")[i % 3], "user_id": f"user-{i % 500}",
                     "source": SOURCE, "ts": now}
            self.producer.produce(self.topic, json.dumps(event).encode(), fid.encode(), on_delivery=self._delivered)
            self.ledger.sent += 1
            self.producer.poll(0)
        self.producer.flush(300)


class Up:
    """``flywheel up`` as a subprocess, restartable on the same data dir, broker port and database."""

    def __init__(self, workdir: Path, database_url: str, kafka_port: int, prefix: str, **extra: str) -> None:
        self.workdir, self.log = workdir, workdir / "up.log"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("FLYWHEEL_")}
        self.env.update(FLYWHEEL_DATA_DIR=str(workdir / "data"), FLYWHEEL_DATABASE_URL=database_url,
                        FLYWHEEL_KAFKA_PORT=str(kafka_port), FLYWHEEL_TOPIC_PREFIX=prefix,
                        FLYWHEEL_METRICS_PORT="0", FLYWHEEL_SERVING_PORT="0", FLYWHEEL_SCHEMA_REGISTRY_PORT="0",
                        FLYWHEEL_RUN_TRAINER="false", **extra)
        self.proc: subprocess.Popen[bytes] | None = None
        self.exits: list[int] = []

    def start(self, timeout: float = 60.0) -> None:
        state = self.workdir / "data" / "stack.json"
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "flywheel", "up"], env=self.env, stdout=out,
                                         stderr=subprocess.STDOUT, cwd=self.workdir)
        deadline = time.monotonic() + timeout
        while not (state.exists() and json.loads(state.read_text() or "{}").get("pid") == self.proc.pid):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"flywheel up did not start:\n{self.log.read_text()[-3000:]}")
            time.sleep(0.1)

    def stop(self, sig: signal.Signals, timeout: float = 60.0) -> int:
        assert self.proc is not None
        self.proc.send_signal(sig)
        code = self.proc.wait(timeout)
        self.exits.append(code)
        return code


def landed(database_url: str) -> tuple[set[str], int]:
    """(distinct feedback ids of this scenario in Postgres, their row count)."""
    with psycopg.connect(database_url) as conn:
        rows = [r[0] for r in conn.execute("SELECT feedback_id FROM feedback WHERE source = %s", (SOURCE,))]
    return set(rows), len(rows)


def redelivered(database_url: str) -> int:
    """Records ingest recognised as resends (the broker held them twice) and did not land again."""
    with psycopg.connect(database_url) as conn:
        row = conn.execute("SELECT coalesce(sum(value), 0) FROM stream_counters WHERE name LIKE 'duplicates%%'"
                           ).fetchone()
    return int(row[0]) if row else 0


def run(workdir: Path, database_url: str, kafka_port: int, *, rate: float, seconds: float,
        stops: list[tuple[float, signal.Signals]], land_timeout: float = 120.0, **env: str) -> dict[str, object]:
    """Produce for ``seconds``; at each (time, signal) of ``stops`` stop ``up`` with that signal and start it
    again at once; then wait until every acknowledged event has landed (or ``land_timeout``). ``env``: more
    FLYWHEEL_* settings of ``up``."""
    prefix = f"dur{uuid.uuid4().hex[:6]}"
    up = Up(workdir, database_url, kafka_port, prefix, **env)
    up.start()
    producer = RateProducer(f"127.0.0.1:{kafka_port}", f"{prefix}.feedback.v1", rate, seconds)
    began = time.monotonic()
    producer.start()
    for at, sig in stops:
        time.sleep(max(0.0, began + at - time.monotonic()))
        up.stop(sig)
        up.start()
    producer.join(seconds + 330)
    acked = producer.ledger.acknowledged
    flushed = time.monotonic()
    got, rows = landed(database_url)
    while not acked <= got and time.monotonic() - flushed < land_timeout:
        time.sleep(0.5)
        got, rows = landed(database_url)
    landed_s = time.monotonic() - began
    up.stop(signal.SIGTERM)
    return {"acknowledged": len(acked), "landed": len(got & acked), "lost": len(acked - got),
            "duplicated": rows - len(got), "stops": len(stops), "landed_per_s": round(len(got & acked) / landed_s, 1),
            "sent": producer.ledger.sent, "delivery_errors": len(producer.ledger.errors),
            "landed_unacknowledged": len(got - acked), "redelivered": redelivered(database_url),
            "exit_codes": up.exits}
