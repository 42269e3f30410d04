"""Ingest benchmark: end-to-end landing rate versus the raw consume + JSON-parse rate of the same broker.

Produces N feedback events (~1% exact resends, ~1% invalid) to a fresh topic, measures
  produced_per_s: acknowledged records per second of one idempotent acks=all producer (linger.ms 20),
  raw_per_s    : one consumer reading all N and json-parsing each value (the ceiling for any processor),
  landed_per_s : the ingest processor from its first batch until every valid unique event is committed,
then checks the table: lost and duplicated must be 0.

    python bench/ingest.py [--events 200000] [--batch 5000] [--writers 4] [--storage memory|durable|durable+fsync]
                           [--linger-ms 20] [--processes N] [--predictions [first|late]]

``--predictions``: the prediction each valid feedback event judges is produced too, to the predictions topic,
before the feedback (as a pod serves before its users answer). Both topics are consumed at once, so some
feedback lands before its prediction and waits as pending until the prediction's batch joins it; the landing
ends when every prediction has landed and every valid unique feedback event is joined. ``raw_per_s`` then
reads both topics, and ``unjoined`` (feedback left pending) must be 0 too. ``--predictions late``: every
feedback event lands first (pending, not timed), then the predictions are produced and their landing, which
joins the feedback waiting for them, is what is timed (``raw_per_s`` reads the predictions topic alone).

``--processes N``: the landing is done by N ``flywheel process ingest`` processes (the CLI a deployment runs,
one consumer group; each its own interpreter, so its own GIL) started together once the topic is full,
instead of one processor in this process. Then ``landed_per_s`` runs from the first partition assignment
any of them logs (a little before its first batch, where the in-process figure starts) until every valid
unique event is committed; ``--processes 1`` is one CLI process measured the same way. The CPU columns are
the processes' own (all their threads) from within 20 ms of that assignment.

Uses FLYWHEEL_KAFKA_BOOTSTRAP / FLYWHEEL_DATABASE_URL when set; otherwise starts the embedded broker and
uses the local Postgres on 127.0.0.1:5432 (or pgserver). The last line printed is JSON.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as `python bench/ingest.py`: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import contextlib
import json
import os
import random
import re
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import psycopg
from confluent_kafka import Consumer, Producer

from bench._host import HostProbe, emit, process_cpu_s, stat_cpu_s
from bench._stack import bench_stack
from core.db import session_connector
from core.kafka import KafkaConnection
from core.settings import FlywheelSettings
from streams import kafka
from streams.ingest import IngestProcessor
from streams.offsets import counters
from streams.runtime import ProcessorRunner, RunnerConfig, tune_interpreter


def make_events(n: int, seed: int = 1) -> tuple[list[tuple[bytes, bytes]], set[str]]:
    rng = random.Random(seed)
    labels = ("negative", "neutral", "positive")
    now = datetime.now(UTC).isoformat()
    values: list[tuple[bytes, bytes]] = []
    unique: set[str] = set()
    while len(values) < n:
        fid = uuid.UUID(int=rng.getrandbits(128)).hex
        pid = uuid.UUID(int=rng.getrandbits(128)).hex
        event = json.dumps({"type": "feedback", "schema_version": 1, "feedback_id": fid, "prediction_id": pid,
                            "label": rng.choice(labels), "user_id": f"user-{rng.randrange(5000)}",
                            "source": "bench", "ts": now}).encode()
        r = rng.random()
        if r < 0.01:
            values.append((pid.encode(), b'{"type": "feedback", "feedback_id": 17'))  # invalid
            continue
        values.append((pid.encode(), event))
        unique.add(fid)
        if r < 0.02 and len(values) < n:
            values.append((pid.encode(), event))  # exact resend
    return values, unique


def predictions_for(values: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """One prediction event for each prediction that a valid feedback event in ``values`` judges."""
    out: list[tuple[bytes, bytes]] = []
    seen: set[str] = set()
    for key, value in values:
        try:
            event = json.loads(value)
        except ValueError:
            continue
        pid = event.get("prediction_id")
        if not isinstance(pid, str) or pid in seen:
            continue
        seen.add(pid)
        out.append((key, json.dumps({
            "type": "prediction", "schema_version": 1, "prediction_id": pid, "model": "sentiment",
            "model_version": "1.0.0", "text": f"a text to judge, number {len(seen)}", "label": "positive",
            "probabilities": {"negative": 0.1, "neutral": 0.2, "positive": 0.7}, "latency_ms": 3.5,
            "user_id": event.get("user_id"), "ts": event["ts"]}).encode()))
    return out


def done_when(expected: int, predictions: int) -> Callable[[dict[str, int]], bool]:
    """Whether the group's exactly-once counters say the landing is done: every valid unique feedback event
    landed and, with ``predictions``, every prediction landed and every feedback event joined."""
    def done(counts: dict[str, int]) -> bool:
        return counts.get("landed:feedback", 0) >= expected and (not predictions or (
            counts.get("landed:prediction", 0) >= predictions and counts.get("joined", 0) >= expected))
    return done


def produce(kafka_conn: KafkaConnection, topic: str, values: list[tuple[bytes, bytes]], linger_ms: float = 20) -> float:
    """Acknowledged records per second of one idempotent acks=all producer sending as fast as it can."""
    p = Producer(kafka.producer_config(kafka_conn, **{"linger.ms": linger_ms, "batch.num.messages": 10000}))
    t0 = time.perf_counter()
    for key, value in values:
        kafka.produce(p, topic, value, key)
    assert p.flush(120) == 0
    return len(values) / (time.perf_counter() - t0)


def raw_rate(kafka_conn: KafkaConnection, topics: list[str], n: int, batch: int) -> float:
    c = Consumer(kafka.consumer_config(kafka_conn, f"bench-raw-{uuid.uuid4().hex[:6]}"))
    c.subscribe(topics)
    seen, first = 0, None
    loads = json.loads
    while seen < n:
        msgs = c.consume(batch, timeout=1.0)
        if msgs and first is None:
            first = time.perf_counter()
        for m in msgs:
            if m.error() is None:
                with contextlib.suppress(ValueError):
                    loads(m.value())
                seen += 1
    elapsed = time.perf_counter() - (first or time.perf_counter())
    c.close()
    return n / elapsed


def _cpu_s(pid: int) -> float:
    """utime + stime of a local process in seconds (0 when it cannot be read, e.g. a remote server)."""
    try:
        return process_cpu_s(pid)
    except OSError:
        return 0.0


def _threads_cpu_s() -> dict[int, tuple[str, float]]:
    """Thread id -> (name the kernel knows, utime + stime in seconds) of every thread of this process."""
    out: dict[int, tuple[str, float]] = {}
    for task in Path("/proc/self/task").iterdir():
        with contextlib.suppress(OSError, ValueError):
            stat = (task / "stat").read_text()
            out[int(task.name)] = (stat[stat.index("(") + 1:stat.rindex(")")], stat_cpu_s(stat))
    return out


def _by_role(runner: ProcessorRunner[Any], loop_tid: int | None, before: dict[int, tuple[str, float]],
             after: dict[int, tuple[str, float]]) -> dict[str, float]:
    """The process CPU split by thread role: the runner's loop (consume, decode, shard, settle), its writer
    threads, librdkafka's threads, and the rest (this benchmark's own polling thread, mostly)."""
    writers = {t.native_id for w in runner._writers for t in w._threads}  # a benchmark looks inside
    roles: dict[str, float] = {"loop": 0.0, "writers": 0.0, "librdkafka": 0.0, "bench poll + other": 0.0}
    for tid, (name, cpu) in after.items():
        spent = cpu - before.get(tid, (name, 0.0))[1]
        role = ("loop" if tid == loop_tid else "writers" if tid in writers
                else "librdkafka" if name.startswith("rdk:") else "bench poll + other")
        roles[role] += spent
    return roles


def _children() -> list[int]:
    """Child processes of this one (the embedded broker, when the benchmark started it)."""
    pids: list[int] = []
    for task in Path("/proc/self/task").glob("*"):
        with contextlib.suppress(OSError):
            pids += [int(p) for p in (task / "children").read_text().split()]
    return pids


def _idle_s() -> float:
    """Idle CPU seconds of the whole machine so far (all cores)."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()
    except OSError:
        return 0.0
    return (int(fields[4]) + int(fields[5])) / os.sysconf("SC_CLK_TCK")


def _beside_start(children: list[int]) -> dict[str, float]:
    """The broker's CPU seconds and the machine's idle seconds so far (:func:`_beside`'s start)."""
    return {"broker": sum(map(_cpu_s, children)), "idle": _idle_s()}


def _beside(conn: psycopg.Connection[Any], children: list[int], start: dict[str, float]) -> dict[str, float]:
    """CPU seconds beside the processor since ``start``: the benchmark database's Postgres backends (all of
    their life: they connected for the landing), the embedded broker, and the machine's idle time."""
    pids = [r[0] for r in conn.execute("SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                                       "AND pid <> pg_backend_pid()")]
    return {"postgres": sum(_cpu_s(pid) for pid in pids), "broker": sum(map(_cpu_s, children)) - start["broker"],
            "machine idle": _idle_s() - start["idle"]}


def landed_rate(
    settings: FlywheelSettings, kafka_conn: KafkaConnection, url: str, expected: int, predictions: int = 0
) -> tuple[float, ProcessorRunner[Any], dict[str, float]]:
    """Landing rate, the runner, and CPU seconds spent meanwhile: this process (the processor's threads and
    librdkafka's) and the Postgres backends of the benchmark database (those of a local server)."""
    config = RunnerConfig.from_settings(settings, kafka_conn)
    runner: ProcessorRunner[Any] = ProcessorRunner(IngestProcessor.from_settings(settings), config,
                                                   session_connector(url))
    thread = threading.Thread(target=runner.run, daemon=True)
    thread.start()
    children = _children()
    start: dict[str, float] = {}
    # Poll the exactly-once counters (a few indexed rows, written in each batch's transaction): a count(*)
    # over the growing table would compete with the processor for Postgres CPU.
    finished = done_when(expected, predictions)
    with psycopg.connect(url, autocommit=True) as conn:
        while True:
            if not start and runner.first_batch_at is not None:  # CPU from the first batch on (within 20 ms)
                start = {"process": time.process_time(), **_beside_start(children)}
                threads_before = _threads_cpu_s()
            if finished(counters(conn, runner.group)):
                done = time.perf_counter()
                threads_after = _threads_cpu_s()  # before the writers stop (their threads then end)
                break
            time.sleep(0.02)
        cpu = {"process": time.process_time() - start["process"]}
        cpu.update({f"  {role}": s for role, s in _by_role(runner, thread.native_id, threads_before,
                                                            threads_after).items()})
        # the runner's backends: connected at assignment (the control one) and at each writer's first batch
        cpu.update(_beside(conn, children, start))
    runner.stop()
    thread.join(30)
    assert runner.first_batch_at is not None
    return expected / (done - runner.first_batch_at), runner, cpu


def landed_rate_processes(settings: FlywheelSettings, url: str, expected: int, processes: int, predictions: int = 0
                          ) -> tuple[float, dict[str, float], list[str]]:
    """Landing rate by ``processes`` CLI ingest processes (module docstring), the CPU seconds spent meanwhile
    (the processes, the benchmark database's Postgres backends, the embedded broker, the idle machine) and
    each process's log."""
    env = {**os.environ, "FLYWHEEL_KAFKA_BOOTSTRAP": settings.kafka_bootstrap or "", "FLYWHEEL_DATABASE_URL": url,
           "FLYWHEEL_TOPIC_PREFIX": settings.topic_prefix, "FLYWHEEL_METRICS_PORT": "0",
           "FLYWHEEL_BATCH_MAX_RECORDS": str(settings.batch_max_records),
           "FLYWHEEL_SINK_WRITERS": str(settings.sink_writers),
           "FLYWHEEL_ORPHAN_TIMEOUT_S": str(settings.orphan_timeout_s)}
    children = _children()  # the embedded broker
    logs = [tempfile.NamedTemporaryFile(prefix="ingest-", suffix=".log") for _ in range(processes)]  # noqa: SIM115
    procs = [subprocess.Popen([sys.executable, "-m", "flywheel", "process", "ingest"], env=env, stdout=log,
                              stderr=subprocess.STDOUT) for log in logs]
    finished = done_when(expected, predictions)
    group = f"{settings.topic_prefix}-ingest"  # IngestProcessor.from_settings's group
    started: float | None = None
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            while True:
                if any(p.poll() is not None for p in procs):
                    raise RuntimeError("an ingest process exited before the landing was done:\n" + _tail(logs))
                if started is None:
                    started = _first_assignment(logs)
                    if started is not None:  # within 20 ms of the first assignment
                        start = {"process": sum(_cpu_s(p.pid) for p in procs), **_beside_start(children)}
                if started is not None and finished(counters(conn, group)):
                    done = time.time()
                    cpu = {"process": sum(_cpu_s(p.pid) for p in procs) - start["process"]}
                    break
                time.sleep(0.02)
            cpu.update(_beside(conn, children, start))
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
        texts = [Path(log.name).read_text(errors="replace") for log in logs]
        for log in logs:
            log.close()
    assert started is not None
    return expected / (done - started), cpu, texts


_ASSIGNED = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) INFO streams\.runtime: \S+: assigned \[\(", re.M)


def _first_assignment(logs: list[Any]) -> float | None:
    """The epoch time of the first partition assignment any of the processes logged (``%(asctime)s``: local
    time to the millisecond), or None before one has."""
    times = [datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()  # local, as logged
             for log in logs for m in _ASSIGNED.finditer(Path(log.name).read_text(errors="replace"))]
    return min(times, default=None)


def _tail(logs: list[Any]) -> str:
    return "\n".join(Path(log.name).read_text(errors="replace")[-1500:] for log in logs)


def main() -> None:
    probe = HostProbe()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=5000)
    parser.add_argument("--default-gc", action="store_true",
                        help="measure without the entry point's interpreter tuning (GC, GIL switch interval)")
    parser.add_argument("--writers", type=int, default=FlywheelSettings.model_fields["sink_writers"].default)
    parser.add_argument("--linger-ms", type=float, default=20.0,
                        help="the producer's linger.ms: lower means smaller batches, more requests to the broker")
    parser.add_argument("--processes", type=int, default=0,
                        help="land with this many `flywheel process ingest` processes (one group) instead of one "
                             "processor in this process (module docstring)")
    parser.add_argument("--storage", choices=["memory", "durable", "durable+fsync"], default="memory",
                        help="the embedded broker's storage (what `flywheel up` uses by default: durable)")
    parser.add_argument("--predictions", nargs="?", const="first", choices=["first", "late"],
                        help="also produce the prediction each feedback event judges (first: before the feedback; "
                             "late: after all of it has landed pending, timing the predictions alone), and land "
                             "until every feedback event is joined (module docstring)")
    args = parser.parse_args()
    if args.predictions == "late" and args.processes:
        parser.error("--predictions late lands in this process: not with --processes")
    if not args.default_gc:
        tune_interpreter()  # as the CLI entry point does

    with bench_stack(args.storage) as (bootstrap, url):
        prefix = f"bench{uuid.uuid4().hex[:6]}"
        settings = FlywheelSettings(kafka_bootstrap=bootstrap, database_url=url, topic_prefix=prefix,  # type: ignore[arg-type]
                                    batch_max_records=args.batch, sink_writers=args.writers, metrics_port=0,
                                    orphan_timeout_s=3600)
        kafka_conn = settings.kafka_connection()
        kafka.create_topics(kafka.admin(kafka_conn), settings.topics.all(), settings.topic_partitions)
        values, unique = make_events(args.events)
        preds = predictions_for(values) if args.predictions else []
        late = args.predictions == "late"
        if preds and not late:  # served before they are judged
            produce(kafka_conn, settings.topics.predictions, preds, args.linger_ms)
        produced = produce(kafka_conn, settings.topics.feedback, values, args.linger_ms)
        if late:  # every feedback event lands pending (not timed), then its predictions arrive
            landed_rate(settings, kafka_conn, url, len(unique))
            produce(kafka_conn, settings.topics.predictions, preds, args.linger_ms)
            topics, timed = [settings.topics.predictions], preds
        else:
            topics = [settings.topics.feedback] + ([settings.topics.predictions] if preds else [])
            timed = values + preds
        raw = raw_rate(kafka_conn, topics, len(timed), args.batch)
        if args.processes:
            landed, cpu, _ = landed_rate_processes(settings, url, len(unique), args.processes, len(preds))
            batches = None
        else:
            landed, runner, cpu = landed_rate(settings, kafka_conn, url, len(unique), len(preds))
            batches = runner.batches_committed
        with psycopg.connect(url) as conn:
            ids = [r[0] for r in conn.execute("SELECT feedback_id FROM feedback")]
            dead = conn.execute("SELECT count(*) FROM dead_letters").fetchone()
            unjoined = conn.execute("SELECT count(*) FROM feedback WHERE status <> 'joined'").fetchone()
            landed_preds = conn.execute("SELECT count(*) FROM predictions").fetchone()
        got = set(ids)
        lost = len(unique - got) + max(0, len(preds) - (landed_preds[0] if landed_preds else 0))
        duplicated = len(ids) - len(got) + len(got - unique)
        print(f"produced {len(values)} records at {produced:,.0f}/s"
              + (f" and {len(preds)} predictions " + ("after it landed" if late else "before it") if preds else "")
              + f"; {len(unique)} valid unique, "
              f"{dead[0] if dead else 0} dead-lettered, "
              + (f"{args.writers} writers in each of {args.processes} processes" if args.processes
                 else f"{batches} batches, {args.writers} writers"))
        print("CPU while landing, per consumed record: " + ", ".join(
            f"{name} {seconds:.2f} s = {seconds / len(timed) * 1e6:.1f} us" for name, seconds in cpu.items()))
        if preds:  # records landed a second, of the topics raw_per_s reads
            landed = landed * ((0 if late else len(unique)) + len(preds)) / len(unique)
        emit({"events": len(values), "predictions": len(preds) or None, "late": late or None, "storage": args.storage,
              "linger_ms": args.linger_ms,
                          "produced_per_s": round(produced),
                          "landed_per_s": round(landed), "raw_per_s": round(raw),
                          "ratio": round(landed / raw, 3), "lost": lost, "duplicated": duplicated,
                          "unjoined": unjoined[0] if preds and unjoined else None,
                          "processes": args.processes or None}, probe)


if __name__ == "__main__":
    main()
