"""`flywheel up` as a user runs it: embedded broker (durable: with its object store) + pgserver Postgres,
processors, /metrics; SIGTERM or Ctrl-C stop every child cleanly, and even a kill -9 of `up` leaves no
broker behind."""

from __future__ import annotations

import csv
import json
import os
import signal
import stat
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import httpx
import psutil
import pytest

from core import db
from flywheel.endpoints import pid_alive
from flywheel.stack import free_port
from tests.streams.helpers import wait_until

DATA = Path(__file__).resolve().parents[2] / "data"


def _up(tmp_path: Path, **env_extra: str) -> tuple[subprocess.Popen[bytes], Path]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLYWHEEL_")}
    env.update(FLYWHEEL_DATA_DIR=str(tmp_path / "data"), FLYWHEEL_METRICS_PORT=str(free_port()),
               FLYWHEEL_SERVING_PORT=str(free_port()), FLYWHEEL_KAFKA_PORT=str(free_port()),
               FLYWHEEL_SCHEMA_REGISTRY_PORT=str(free_port()))  # beside other runs on the machine
    env.update(env_extra)
    log = tmp_path / "up.log"
    proc = subprocess.Popen([sys.executable, "-m", "flywheel", "up"], env=env, stdout=log.open("wb"),
                            stderr=subprocess.STDOUT, cwd=tmp_path)
    state = tmp_path / "data" / "stack.json"
    try:
        wait_until(lambda: state.exists() or proc.poll() is not None, timeout=90, what="stack.json")
    except AssertionError:
        proc.kill()
        raise
    assert proc.poll() is None, log.read_text()[-3000:]
    return proc, state


def _children(pid: int) -> list[psutil.Process]:
    return psutil.Process(pid).children(recursive=True)


def _broker_pids(pid: int) -> list[int]:
    """The embedded broker and the object store that keeps its log (durable storage, the default)."""
    return [c.pid for c in _children(pid) if "tansu" in c.name() or "flywheel.objectstore" in c.cmdline()]


def _postgres_pids(data_dir: Path) -> list[int]:
    pid_file = data_dir / "pgdata" / "postmaster.pid"
    if not pid_file.exists():
        return []
    return [int(pid_file.read_text().split()[0])]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_up_runs_the_platform_and_stops_every_child(tmp_path: Path, sig: signal.Signals) -> None:
    proc, state = _up(tmp_path)
    endpoints = json.loads(state.read_text())
    assert endpoints["embedded_broker"] and endpoints["embedded_postgres"]
    modes = stat.S_IMODE(state.stat().st_mode), stat.S_IMODE(state.parent.stat().st_mode)
    broker_pids = _broker_pids(proc.pid)
    assert len(broker_pids) == 2, "the broker and its object store"
    pg_pids = _postgres_pids(tmp_path / "data")
    assert broker_pids and pg_pids
    wait_until(lambda: b"flywheel_stream_assigned_partitions" in urllib.request.urlopen(
        endpoints["metrics_url"], timeout=5).read(), timeout=30, what="/metrics")
    status = subprocess.run([sys.executable, "-m", "flywheel", "status"], env={
        **{k: v for k, v in os.environ.items() if not k.startswith("FLYWHEEL_")},
        "FLYWHEEL_DATA_DIR": str(tmp_path / "data")}, capture_output=True, text=True, timeout=60)
    assert status.returncode == 0, status.stdout + status.stderr
    assert "running (pid" in status.stdout and "revision" in status.stdout

    proc.send_signal(sig)
    assert proc.wait(60) == 0, (tmp_path / "up.log").read_text()[-3000:]
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and any(pid_alive(p) for p in broker_pids + pg_pids):
        time.sleep(0.2)
    assert not [p for p in broker_pids + pg_pids if pid_alive(p)], "orphan broker or postgres left behind"
    assert not state.exists()
    # owner-only; run as root, the embedded Postgres runs as its own user and may pass through (not list)
    assert modes == (0o600, 0o711 if os.geteuid() == 0 else 0o700), [oct(m) for m in modes]


def test_kill_9_of_up_takes_the_broker_with_it(tmp_path: Path, db_url: str) -> None:
    proc, _state = _up(tmp_path, FLYWHEEL_DATABASE_URL=db_url)
    broker_pids = _broker_pids(proc.pid)
    assert len(broker_pids) == 2, "the broker and its object store"
    proc.kill()
    proc.wait(10)
    # each of up's threads passes the orphans its parent-death SIGTERM as it exits: several signals, one stop
    wait_until(lambda: not any(pid_alive(p) for p in broker_pids), timeout=15, what="broker and object store to exit")


def test_second_up_on_the_same_data_dir_is_refused(tmp_path: Path, db_url: str) -> None:
    proc, _state = _up(tmp_path, FLYWHEEL_DATABASE_URL=db_url)
    try:
        env = {k: v for k, v in os.environ.items() if not k.startswith("FLYWHEEL_")}
        env.update(FLYWHEEL_DATA_DIR=str(tmp_path / "data"), FLYWHEEL_DATABASE_URL=db_url,
                   FLYWHEEL_METRICS_PORT="0")
        second = subprocess.run([sys.executable, "-m", "flywheel", "up"], env=env, capture_output=True,
                                text=True, timeout=60)
        assert second.returncode == 1
        assert "already running" in second.stderr and "Traceback" not in second.stderr
    finally:
        proc.terminate()
        proc.wait(60)


def test_up_runs_the_feedback_loop_from_bootstrap_to_a_gated_retrain(tmp_path: Path, registry_db_url: str) -> None:
    """The README's main command closes the loop: the first champion comes from the bootstrap corpus, is
    announced and served; predictions and feedback through the API land, cross the threshold, and the
    trainer gates a candidate."""
    config = tmp_path / "trainer.yaml"
    config.write_text("policy:\n  incremental_threshold: 40\n  reconcile_interval_s: 2\npromotion:\n  mode: direct\n")
    proc, state = _up(tmp_path, FLYWHEEL_DATABASE_URL=registry_db_url,
                      FLYWHEEL_BOOTSTRAP_DATA=str(DATA / "vader_movies.csv"),  # what ./scripts/up uses
                      FLYWHEEL_TRAINER_CONFIG=str(config), FLYWHEEL_TOPIC_PREFIX="loop")
    try:
        endpoints = json.loads(state.read_text())
        api = httpx.Client(base_url=endpoints["serving_url"], timeout=30)
        wait_until(lambda: _ready(api), timeout=240, what="the bootstrapped champion to be served")
        for row in picked_rows(DATA / "vader_tweets.csv", 80):
            answer = api.post("/predict", json={"text": row["text"], "user_id": "u1"})
            assert answer.status_code == 200, answer.text
            assert answer.json()["version"] == "1" and answer.json()["variant"] == "champion"
            given = api.post("/feedback", json={"prediction_id": answer.json()["prediction_id"],
                                                "label": row["label3"], "user_id": "u1"})
            assert given.status_code == 202, given.text
        wait_until(lambda: _final_runs(registry_db_url) >= 1, timeout=180, what="a gated incremental run")
        with db.connect(registry_db_url) as conn:
            row = conn.execute("SELECT status, reason FROM training_runs WHERE mode = 'incremental'").fetchone()
        assert row is not None and row[0] in ("promoted", "refused"), row
        if row[0] == "promoted":  # the pod swaps to the new champion without a restart
            wait_until(lambda: api.post("/predict", json={"text": "fine"}).json()["version"] == "2", timeout=60,
                       what="the promoted version to answer")
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(120) == 0, (tmp_path / "up.log").read_text()[-3000:]


def _ready(api: httpx.Client) -> bool:
    try:
        return api.get("/ready").status_code == 200
    except httpx.HTTPError:
        return False


def picked_rows(path: Path, n: int) -> list[dict[str, str]]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))[::7][:n]


def _final_runs(url: str) -> int:
    with db.connect(url) as conn:
        row = conn.execute("SELECT count(*) FROM training_runs WHERE mode = 'incremental' "
                           "AND status IN ('promoted', 'refused', 'canary')").fetchone()
    return int(row[0]) if row else 0
