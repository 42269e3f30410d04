"""Feedback to a decision, with every gate on: the platform (ingest + curation + trainer) runs on the embedded
broker and a fresh Postgres database with a champion deployed; feedback is produced until the trainer's
count (accepted curated samples outside the holdout) is one short of the threshold; then the crossing record
is produced and the clock runs until the run decides: its announcement (``canary`` or ``promote``) on
``flywheel.models.v1``, or its refusal in ``training_runs``. Once per model kind and path.

The trainer runs the demo's config (``flywheel.demo.platform.demo_settings``: every gate on with the demo's
thresholds, its corpus weights and kind parameters): ``full`` is the demo's path (every retrain a full run at
the threshold), ``incremental`` the same config with the full threshold out of reach (a warm start). The
quiet-stream trigger is off: the bench times the threshold path. ``--gates-open`` instead lets any
candidate through (``min_improvement: -1``, ``alpha: 0.999999``, no slice tolerance, behaviour rates 0, an
incremental run): the figure measured before issue 18, labelled ``*_gates_open``.

A serving pod (``flywheel serve`` in its own process, on the same broker and database) answers the
champion before the crossing record; from the same start, ``POST /predict`` is polled every 50 ms and a
second clock stops at the first response whose ``version`` is the announced one: feedback to a served
prediction (None when the run was refused).

``full_run_seconds`` is one full gated run timed in isolation (``bench._full_run``: the demo's config, the
demo corpus as champion, 300 then 450 target labels; the slower of the two runs). Last line of output is
JSON: {"full_run_seconds": {kind: s}, "kind_seconds": {kind: s}, "incremental_seconds": {kind: s},
"to_predict_seconds": {kind: s}, "load": [before, after], "details": {...}, "host": {...}}.

    .venv/bin/python bench/loop_latency.py [--kinds tfidf-logreg minilm-head] [--paths full incremental]
        [--skip-full-run] [--gates-open]
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as `python bench/loop_latency.py`: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import contextlib
import hashlib
import os
import random
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import yaml
from confluent_kafka import Consumer, TopicPartition

from bench._full_run import demo_configs, measure_full
from bench._host import HostProbe, emit
from bench._stack import bench_stack
from core import db
from core.settings import FlywheelSettings
from flywheel.platform import Platform
from flywheel.stack import free_port
from registry.announce import now
from schemas import FeedbackEvent, ModelEvent, PredictionEvent
from streams.kafka import consumer_config, high_watermarks
from streams.producer import EventProducer
from trainer.data import CorpusRow, SampleStore, read_labelled_csv

DATA = Path(__file__).resolve().parents[1] / "data"


def rows(name: str) -> list[CorpusRow]:
    found = read_labelled_csv(DATA / f"{name}.csv", ("negative", "neutral", "positive"))
    random.Random(7).shuffle(found)  # the files are ordered by sentiment
    return found


def reserved(feedback_id: str, percent: int) -> bool:
    """Mirror of trainer.data.holdout_predicate: feedback kept for evaluation, not counted."""
    return int(hashlib.md5(feedback_id.encode()).hexdigest()[:8], 16) % 100 < percent


def gated_config(path: Path, kind: str, mode: str) -> tuple[Path, int]:
    """The demo's trainer config for ``kind`` (every gate on) as a file, and its threshold; ``incremental``:
    the full threshold out of reach. The quiet-stream trigger off (the bench times the threshold path)."""
    config, _ = demo_configs(kind, "movies->tweets", path.parent)
    threshold = config.policy.incremental_threshold
    policy = config.policy.model_copy(update={
        "quiet_after_s": None, "full_threshold": threshold if mode == "full" else 100 * threshold})
    path.write_text(yaml.safe_dump(config.model_copy(update={"policy": policy}).model_dump(mode="json")))
    return path, threshold


def finished_run(url: str) -> tuple[str, float | None] | None:
    """The status and duration of the latest finished (non-bootstrap) run, if any."""
    with db.connect(url) as conn:
        row = conn.execute("SELECT status, duration_s FROM training_runs WHERE mode <> 'bootstrap' AND "
                           "status <> 'running' ORDER BY id DESC LIMIT 1").fetchone()
    return None if row is None else (str(row[0]), None if row[1] is None else float(row[1]))


def lenient_config(path: Path, kind: str, threshold: int) -> Path:
    path.write_text(yaml.safe_dump({
        "policy": {"incremental_threshold": threshold, "full_threshold": 100 * threshold, "kinds": [kind],
                   "reconcile_interval_s": 3600},
        "gates": {"evaluation": {"min_improvement": -1.0, "alpha": 0.999999, "slice_tolerance": 1.0},
                  "behaviour": {"min_pass_rate": {"invariance": 0.0, "directional": 0.0, "mft": 0.0}}},
        "promotion": {"mode": "direct"},
    }))
    return path


def quiet_watchdog(path: Path) -> Path:
    """The platform's champion watchdog off: the bench's prediction events all say ``neutral``, so the
    champion's online accuracy looks far below its offline one and the watchdog would request a full
    retrain that eats the samples the incremental threshold counts."""
    path.write_text(yaml.safe_dump({"watchdog": {"enabled": False}}))
    return path


def quiet_drift(path: Path) -> Path:
    """The drift monitor off, for the same reason: all-``neutral`` predictions are a drifted prediction
    distribution, and its retrain request would land in the middle of the measurement."""
    path.write_text(yaml.safe_dump({"enabled": False}))
    return path


def training_samples(url: str, holdout_percent: int, model: str = "sentiment") -> int:
    """What the trainer compares with its thresholds: the model's accepted samples outside the holdout."""
    with db.connect(url) as conn:
        return SampleStore(conn, holdout_percent, model=model).snapshot().count


def wait_curated(url: str, n: int, timeout: float = 120) -> None:
    """Until ``n`` samples have a curation verdict (each feedback landed, joined and curated)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with db.connect(url) as conn:
            row = conn.execute("SELECT count(*) FROM samples WHERE curated_at IS NOT NULL").fetchone()
        if row is not None and int(row[0]) >= n:
            return
        time.sleep(0.1)
    raise SystemExit(f"fewer than {n} samples curated after {timeout:.0f} s")


def curation_status(url: str, feedback_id: str, timeout: float = 120) -> str:
    """The curator's verdict on one feedback (accepted, quarantined, rejected)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with db.connect(url) as conn:
            row = conn.execute("SELECT status FROM samples WHERE feedback_id = %s AND curated_at IS NOT NULL",
                               (feedback_id,)).fetchone()
        if row is not None:
            return str(row[0])
        time.sleep(0.05)
    raise SystemExit(f"feedback {feedback_id} not curated after {timeout:.0f} s")


@contextlib.contextmanager
def serving_pod(settings: FlywheelSettings, log_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], httpx.Client]]:
    """`flywheel serve` as its own process, like a serving pod, on the platform's broker and database."""
    assert settings.kafka_bootstrap and settings.database_url
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLYWHEEL_")}
    port = free_port()
    env.update(FLYWHEEL_KAFKA_BOOTSTRAP=settings.kafka_bootstrap,
               FLYWHEEL_DATABASE_URL=settings.database_url.get_secret_value(),
               FLYWHEEL_TOPIC_PREFIX=settings.topic_prefix, FLYWHEEL_DATA_DIR=str(settings.data_dir),
               FLYWHEEL_SERVING_PORT=str(port), FLYWHEEL_METRICS_HOST="127.0.0.1")
    with log_path.open("wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "flywheel", "serve"], env=env, stdout=log,
                                stderr=subprocess.STDOUT, cwd=log_path.parent)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            yield proc, client
    finally:
        proc.terminate()
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def wait_serving(proc: subprocess.Popen[bytes], client: httpx.Client, version: str, log_path: Path,
                 timeout: float = 300) -> None:
    """Until the pod answers /predict with ``version``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"flywheel serve exited {proc.returncode}:\n{log_path.read_text()[-3000:]}")
        with contextlib.suppress(httpx.HTTPError):
            answer = client.post("/predict", json={"text": "is it up?"})
            if answer.status_code == 200 and answer.json()["version"] == version:
                return
        time.sleep(0.2)
    raise SystemExit(f"flywheel serve did not serve version {version} in {timeout:.0f} s:\n"
                     f"{log_path.read_text()[-3000:]}")


class PredictPoller(threading.Thread):
    """POST /predict every ``interval`` s from ``start``; stops at the first answer from a version other
    than ``old`` and keeps when it arrived (``time.perf_counter()``) and the version."""

    def __init__(self, client: httpx.Client, old: str, interval: float = 0.05) -> None:
        super().__init__(name="bench-predict-poller", daemon=True)
        self.client, self.old, self.interval = client, old, interval
        self.stop = threading.Event()
        self.first_new: tuple[float, str] | None = None
        self.polls = self.failures = 0

    def run(self) -> None:
        next_at = time.perf_counter()
        while not self.stop.is_set():
            try:
                answer = self.client.post("/predict", json={"text": "the loop closes fast", "user_id": "bench"})
            except httpx.HTTPError:
                self.failures += 1
            else:
                at = time.perf_counter()
                self.polls += 1
                if answer.status_code != 200:
                    self.failures += 1
                elif answer.json()["version"] != self.old:
                    self.first_new = (at, answer.json()["version"])
                    return
            next_at += self.interval
            self.stop.wait(max(0.0, next_at - time.perf_counter()))


def measure(kind: str, path: str, bootstrap_rows: int | None, gates_open: bool = False,
            open_threshold: int = 200) -> dict[str, Any]:
    with bench_stack() as (bootstrap, url), tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as pod:
        prefix = f"bench{uuid.uuid4().hex[:6]}"
        if gates_open:
            trainer_config, threshold = lenient_config(Path(tmp) / "t.yaml", kind, open_threshold), open_threshold
        else:
            trainer_config, threshold = gated_config(Path(tmp) / "t.yaml", kind, path)
        settings = FlywheelSettings(kafka_bootstrap=bootstrap, database_url=url, topic_prefix=prefix,  # type: ignore[arg-type]
                                    data_dir=Path(tmp) / "data", metrics_port=0, schema_registry_port=0,
                                    serving_port=0,  # the API runs as its own process: serving_pod()
                                    batch_max_wait_ms=20, trainer_config=trainer_config,
                                    canary_config=quiet_watchdog(Path(tmp) / "canary.yaml"),
                                    drift_config=quiet_drift(Path(tmp) / "drift.yaml"))
        serve_log = Path(tmp) / "serve.log"
        with Platform(settings) as platform:
            if not platform.trainer_ready.wait(300) or platform.lifecycle is None:
                raise SystemExit("the trainer did not start")
            lc = platform.lifecycle
            started = time.perf_counter()
            boot = lc.trainer.bootstrap(rows("vader_movies")[:bootstrap_rows], source="vader_movies.csv", kind=kind)
            bootstrap_s = time.perf_counter() - started
            if boot.status != "promoted" or boot.version is None:
                raise SystemExit(f"bootstrap of {kind} was {boot.status}: {boot.reason}")
            champion = boot.version.version
            proc, api = pod.enter_context(serving_pod(settings, serve_log))
            started = time.perf_counter()
            wait_serving(proc, api, champion, serve_log)
            serving_ready_s = time.perf_counter() - started
            topic = settings.topics.models
            kafka_conn = settings.kafka_connection()
            ends = high_watermarks(kafka_conn, [(topic, p) for p in range(settings.topic_partitions)])
            watcher = Consumer(consumer_config(kafka_conn, f"bench-watch-{prefix}"))
            watcher.assign([TopicPartition(t, p, off) for (t, p), off in ends.items()])
            percent = lc.config.policy.holdout_percent
            stream = iter(rows("vader_tweets"))
            with EventProducer(kafka_conn, settings.topics) as producer:
                def send_one(*, training: bool = False) -> str:
                    """A prediction and its labelled feedback; ``training``: a feedback id outside the holdout."""
                    row = next(stream)
                    pid, fid = uuid.uuid4().hex, uuid.uuid4().hex
                    while training and reserved(fid, percent):
                        fid = uuid.uuid4().hex
                    producer.send(PredictionEvent(ts=now(), prediction_id=pid, model=settings.model_name,
                                                  model_version=champion,
                                                  text=row.text, label="neutral", latency_ms=2.0, domain=row.domain,
                                                  probabilities={"negative": 0.2, "neutral": 0.6, "positive": 0.2}))
                    producer.send(FeedbackEvent(ts=now(), feedback_id=fid, prediction_id=pid, label=row.label))
                    return fid

                # Up to one sample short of the threshold, counted as the trainer counts (the curator
                # quarantines some feedback, the holdout keeps some): send the shortfall, wait until all of
                # it is curated, count again.
                sent = 0
                while (short := threshold - 1 - training_samples(url, percent)) > 0:
                    for _ in range(short):
                        send_one()
                    sent += short
                    producer.flush(30)
                    wait_curated(url, sent)
                time.sleep(1.0)  # let the trainer see "below threshold" first
                poller = PredictPoller(api, champion)
                poller.start()
                # The crossing record: the clocks start at its produce. One the curator does not accept
                # crosses nothing (no run starts): the next one is the crossing record, with a new start.
                retried = 0
                while True:
                    t0 = time.perf_counter()
                    fid = send_one(training=True)
                    producer.flush(30)
                    if curation_status(url, fid) == "accepted":
                        break
                    retried += 1
            event, decided = None, None
            deadline = time.monotonic() + 900
            while event is None and time.monotonic() < deadline:
                for msg in watcher.consume(num_messages=10, timeout=0.2):
                    if not msg.error():
                        event = ModelEvent.model_validate_json(msg.value() or b"")
                        break
                if event is None and (decided := finished_run(url)) is not None and decided[0] not in (
                        "promoted", "canary"):
                    break  # refused (or failed): no announcement comes
            elapsed = time.perf_counter() - t0
            decided = finished_run(url)
            watcher.close()
            poller.join(120 if event is not None else 0)
            poller.stop.set()
            poller.join(30)
            pod.close()  # the serving process stops before the platform
            runs = lc.trainer.recent_runs()
        status, run_s = decided if decided is not None else ("none", None)
        if event is None:
            return {"kind": kind, "path": path, "status": status, "run_seconds": run_s,
                    "seconds": round(elapsed, 3) if decided is not None else None, "to_predict_seconds": None,
                    "threshold": threshold, "runs": runs}
        served = poller.first_new
        to_predict = round(served[0] - t0, 3) if served is not None and served[1] == event.version else None
        return {"kind": kind, "path": path, "status": status, "run_seconds": run_s, "threshold": threshold,
                "seconds": round(elapsed, 3), "to_predict_seconds": to_predict,
                "action": event.action, "semver": event.semver, "version": event.version,
                "first_new_served": served[1] if served else None, "predict_polls": poller.polls,
                "predict_failures": poller.failures, "crossing_retries": retried, "feedback_sent": sent + 1 + retried,
                "bootstrap_seconds": round(bootstrap_s, 2),
                "serving_ready_seconds": round(serving_ready_s, 2), "runs": runs}


def main() -> None:
    probe = HostProbe()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kinds", nargs="+", default=["tfidf-logreg", "minilm-head"])
    parser.add_argument("--paths", nargs="+", choices=("full", "incremental"), default=["full", "incremental"])
    parser.add_argument("--bootstrap-rows", type=int, default=None,
                        help="corpus rows of the first champion (default: all of vader_movies, as the demo)")
    parser.add_argument("--skip-full-run", action="store_true", help="no isolated full run (full_run_seconds)")
    parser.add_argument("--gates-open", action="store_true",
                        help="the pre-issue-18 figure: an incremental run every candidate passes")
    parser.add_argument("--threshold", type=int, default=200, help="the incremental threshold with --gates-open")
    args = parser.parse_args()
    out: dict[str, Any] = {"details": {}}
    if args.gates_open:
        for kind in args.kinds:
            result = measure(kind, "incremental", args.bootstrap_rows or 2000, gates_open=True,
                             open_threshold=args.threshold)
            sys.stderr.write(f"{kind} gates open: {result}\n")
            out.setdefault("kind_seconds_gates_open", {})[kind] = result["seconds"]
            out.setdefault("to_predict_seconds_gates_open", {})[kind] = result["to_predict_seconds"]
            out["details"][f"{kind}/gates_open"] = {x: v for x, v in result.items() if x != "runs"}
    else:
        for kind in args.kinds:
            if not args.skip_full_run:
                with bench_stack() as (bootstrap, url):
                    full = measure_full(kind, bootstrap, url)
                sys.stderr.write(f"{kind} isolated full runs: {full}\n")
                out.setdefault("full_run_seconds", {})[kind] = full["seconds"]
                out["details"][f"{kind}/full_run"] = full
            for path in args.paths:
                result = measure(kind, path, args.bootstrap_rows)
                sys.stderr.write(f"{kind} {path}: {result}\n")
                key = "kind_seconds" if path == "full" else "incremental_seconds"
                out.setdefault(key, {})[kind] = result["seconds"]
                if path == "full":
                    out.setdefault("to_predict_seconds", {})[kind] = result["to_predict_seconds"]
                out["details"][f"{kind}/{path}"] = {x: v for x, v in result.items() if x != "runs"}
    out["load"] = [probe.load_before, [round(x, 2) for x in os.getloadavg()]]
    emit(out, probe)


if __name__ == "__main__":
    main()
