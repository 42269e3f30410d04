"""Crash benchmark: kill -9 the ingest processor (a real subprocess) many times while events stream in,
then check the tables hold exactly the unique valid events.

    python bench/crash.py [--predictions 60000] [--kills 20] [--seconds 180]

Each prediction comes with one feedback event (10% arrive before their prediction), ~1% exact resends,
~1% content resends with new ids and ~1% invalid records. The last line printed is JSON:
{"events": N, "kills": K, "kills_mid_stream": M, "lost": 0, "duplicated": 0, "replayed_skipped": R,
 "recovery_s": S} (recovery = from the last restart until everything was committed).
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as `python bench/crash.py`: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import random
import signal
import tempfile
import time
import uuid

import psycopg

from bench._host import HostProbe, emit
from bench._stack import bench_stack
from core.settings import FlywheelSettings
from streams import kafka
from tests.streams.stream_load import build, stream
from tests.streams.test_crash_safety import processor_env, start_processor


def committed(url: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT coalesce(sum(next_offset), 0) FROM stream_offsets").fetchone()
    return int(row[0]) if row else 0


def main() -> None:
    probe = HostProbe()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--predictions", type=int, default=60_000)
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=None,
                        help="how long the stream keeps arriving (default: 9 s per kill, so every kill is mid-stream)")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    seconds = args.seconds or 9.0 * args.kills
    rng = random.Random(args.seed)

    with bench_stack() as (bootstrap, url):
        settings = FlywheelSettings(kafka_bootstrap=bootstrap, database_url=url,  # type: ignore[arg-type]
                                    topic_prefix=f"crash{uuid.uuid4().hex[:6]}", data_dir=Path(tempfile.mkdtemp()))
        kafka_conn = settings.kafka_connection()
        kafka.create_topics(kafka.admin(kafka_conn), settings.topics.all(), settings.topic_partitions)
        records, exp = build(args.predictions, seed=args.seed)
        producer = stream(kafka_conn, settings.topics, records, seconds=seconds)
        env = processor_env(settings)
        log = settings.data_dir / "processor.log"
        at_kill = []
        for _ in range(args.kills):
            before = committed(url)
            proc = start_processor(env, log)
            deadline = time.monotonic() + 30
            while committed(url) == before and time.monotonic() < deadline:  # kill only while it works
                time.sleep(0.05)
            time.sleep(rng.uniform(0.0, 0.5))
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
            at_kill.append(committed(url))
        producer.join(300)
        restarted = time.perf_counter()
        proc = start_processor(env, log)
        while committed(url) < exp.records:
            time.sleep(0.2)
        recovery = time.perf_counter() - restarted
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
        with psycopg.connect(url) as conn:
            preds = {r[0] for r in conn.execute("SELECT prediction_id FROM predictions")}
            fbs = [r[0] for r in conn.execute("SELECT feedback_id FROM feedback")]
            replayed = conn.execute("SELECT coalesce(sum(value), 0) FROM stream_counters WHERE name = 'replayed'"
                                    ).fetchone()
        lost = len(exp.predictions - preds) + len(exp.feedback - set(fbs))
        duplicated = len(fbs) - len(set(fbs)) + len(preds - exp.predictions) + len(set(fbs) - exp.feedback)
        mid = sum(1 for a, b in zip([0, *at_kill], at_kill, strict=False) if b != a and b < exp.records)
        print(f"committed offsets at each kill: {at_kill}")
        emit({"events": exp.records, "kills": args.kills, "kills_mid_stream": mid, "lost": lost,
                          "duplicated": duplicated, "replayed_skipped": int(replayed[0]) if replayed else 0,
                          "recovery_s": round(recovery, 2)}, probe)


if __name__ == "__main__":
    main()
