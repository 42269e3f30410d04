"""Feedback-to-promotion latency: the platform (ingest + trainer) runs on the embedded broker and a fresh
Postgres database with a champion deployed; feedback is produced until one record short of the
incremental threshold and has landed; then the crossing record is produced and the clock runs until the
announcement (``canary`` or ``promote``) appears on ``flywheel.models.v1``. Once per model kind.

The gates run in full, but with thresholds that let the candidate through (``min_improvement: -1``,
``alpha: 0.999999``, no slice tolerance, behaviour rates 0): this measures how fast the loop is, not
whether 200 samples make a better model. Last line of output is JSON: {"kind_seconds": {kind: seconds}, ...}.

    .venv/bin/python bench/loop_latency.py [--kinds tfidf-logreg minilm-head] [--threshold 200]
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as `python bench/loop_latency.py`: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import hashlib
import json
import random
import tempfile
import time
import uuid
from typing import Any

import yaml
from confluent_kafka import Consumer, TopicPartition

from bench._stack import bench_stack
from flywheel import db
from flywheel.platform import Platform
from flywheel.settings import FlywheelSettings
from schemas import FeedbackEvent, ModelEvent, PredictionEvent
from streams.kafka import consumer_config, high_watermarks
from streams.producer import EventProducer
from trainer.announce import now
from trainer.data import CorpusRow, read_labelled_csv

DATA = Path(__file__).resolve().parents[1] / "data"


def rows(name: str) -> list[CorpusRow]:
    found = read_labelled_csv(DATA / f"{name}.csv", ("negative", "neutral", "positive"))
    random.Random(7).shuffle(found)  # the files are ordered by sentiment
    return found


def reserved(feedback_id: str, percent: int) -> bool:
    """Mirror of trainer.data.holdout_predicate: feedback kept for evaluation, not counted."""
    return int(hashlib.md5(feedback_id.encode()).hexdigest()[:8], 16) % 100 < percent


def lenient_config(path: Path, kind: str, threshold: int) -> Path:
    path.write_text(yaml.safe_dump({
        "policy": {"incremental_threshold": threshold, "full_threshold": 100 * threshold, "kinds": [kind],
                   "reconcile_interval_s": 3600},
        "gates": {"evaluation": {"min_improvement": -1.0, "alpha": 0.999999, "slice_tolerance": 1.0},
                  "behaviour": {"min_pass_rate": {"invariance": 0.0, "directional": 0.0, "mft": 0.0}}},
        "promotion": {"mode": "direct"},
    }))
    return path


def samples_landed(url: str) -> int:
    with db.connect(url) as conn:
        row = conn.execute("SELECT count(*) FROM feedback WHERE status = 'joined'").fetchone()
    return int(row[0]) if row else 0


def measure(kind: str, threshold: int, bootstrap_rows: int) -> dict[str, Any]:
    with bench_stack() as (bootstrap, url), tempfile.TemporaryDirectory() as tmp:
        prefix = f"bench{uuid.uuid4().hex[:6]}"
        settings = FlywheelSettings(kafka_bootstrap=bootstrap, database_url=url, topic_prefix=prefix,  # type: ignore[arg-type]
                                    data_dir=Path(tmp) / "data", metrics_port=0, schema_registry_port=0,
                                    batch_max_wait_ms=20, trainer_config=lenient_config(Path(tmp) / "t.yaml", kind,
                                                                                        threshold))
        with Platform(settings) as platform:
            if not platform.trainer_ready.wait(300) or platform.lifecycle is None:
                raise SystemExit("the trainer did not start")
            lc = platform.lifecycle
            started = time.perf_counter()
            boot = lc.trainer.bootstrap(rows("vader_movies")[:bootstrap_rows], source="vader_movies.csv", kind=kind)
            bootstrap_s = time.perf_counter() - started
            if boot.status != "promoted":
                raise SystemExit(f"bootstrap of {kind} was {boot.status}: {boot.reason}")
            topic = settings.topics.models
            ends = high_watermarks(bootstrap, [(topic, p) for p in range(settings.topic_partitions)])
            watcher = Consumer(consumer_config(bootstrap, f"bench-watch-{prefix}"))
            watcher.assign([TopicPartition(t, p, off) for (t, p), off in ends.items()])
            percent = lc.config.policy.holdout_percent
            stream = iter(rows("vader_tweets"))
            with EventProducer(bootstrap, settings.topics) as producer:
                def send_one() -> bool:
                    row = next(stream)
                    pid, fid = uuid.uuid4().hex, uuid.uuid4().hex
                    producer.send(PredictionEvent(ts=now(), prediction_id=pid, model=settings.model_name,
                                                  model_version=boot.version.version if boot.version else "1",
                                                  text=row.text, label="neutral", latency_ms=2.0, domain=row.domain,
                                                  probabilities={"negative": 0.2, "neutral": 0.6, "positive": 0.2}))
                    producer.send(FeedbackEvent(ts=now(), feedback_id=fid, prediction_id=pid, label=row.label))
                    return not reserved(fid, percent)

                counted = sent = 0
                while counted < threshold - 1:
                    counted += send_one()
                    sent += 1
                producer.flush(30)
                deadline = time.monotonic() + 120
                while samples_landed(url) < sent and time.monotonic() < deadline:
                    time.sleep(0.1)
                time.sleep(1.0)  # let the trainer see "below threshold" first
                t0 = time.perf_counter()
                while not send_one():
                    pass
                producer.flush(30)
            event = None
            deadline = time.monotonic() + 600
            while event is None and time.monotonic() < deadline:
                for msg in watcher.consume(num_messages=10, timeout=0.2):
                    if not msg.error():
                        event = ModelEvent.model_validate_json(msg.value() or b"")
                        break
            elapsed = time.perf_counter() - t0
            watcher.close()
            runs = lc.trainer.recent_runs()
        if event is None:
            return {"kind": kind, "seconds": None, "runs": runs}
        return {"kind": kind, "seconds": round(elapsed, 3), "action": event.action, "semver": event.semver,
                "bootstrap_seconds": round(bootstrap_s, 2), "runs": runs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kinds", nargs="+", default=["tfidf-logreg", "minilm-head"])
    parser.add_argument("--threshold", type=int, default=200)
    parser.add_argument("--bootstrap-rows", type=int, default=2000)
    args = parser.parse_args()
    results = {}
    for kind in args.kinds:
        result = measure(kind, args.threshold, args.bootstrap_rows)
        print(f"{kind}: {result}", flush=True)
        results[kind] = result
    print(json.dumps({"kind_seconds": {k: r["seconds"] for k, r in results.items()},
                      "details": {k: {x: v for x, v in r.items() if x != "runs"} for k, r in results.items()}}))


if __name__ == "__main__":
    main()
