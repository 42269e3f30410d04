from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

import psycopg

from core.settings import FlywheelSettings
from flywheel import migrate
from flywheel.endpoints import Endpoints, pid_alive, read_endpoints, state_file
from flywheel.stack import private_dir, write_private


def test_template_database_is_migrated(db_url: str) -> None:
    assert migrate.current_revision(db_url) == migrate.head_revision(db_url)
    with psycopg.connect(db_url) as conn:
        tables = {r[0] for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname='public'")}
    assert {"predictions", "feedback", "stream_offsets", "dead_letters", "stream_counters"} <= tables


def test_settings_topics_and_labels(settings: FlywheelSettings) -> None:
    assert settings.topics.feedback == f"{settings.topic_prefix}.feedback.v1"
    assert FlywheelSettings(labels="a, b").labels == ("a", "b")  # type: ignore[arg-type]


def test_stack_json_and_the_data_dir_are_owner_only(tmp_path: Path) -> None:
    """stack.json holds the database URL with its password: 0600 in a 0700 data dir, even when the data dir
    existed world-readable, or an earlier stack.json (or a leftover temporary file) was."""
    data = tmp_path / "data"
    data.mkdir(mode=0o755)
    data.chmod(0o755)
    settings = FlywheelSettings(data_dir=data)
    path = state_file(settings)
    path.write_text("{}")
    path.chmod(0o644)
    (data / f".stack.json.{os.getpid()}.tmp").write_text("")
    (data / f".stack.json.{os.getpid()}.tmp").chmod(0o666)
    endpoints = Endpoints(pid=os.getpid(), bootstrap="127.0.0.1:9092", database_url="postgresql://u:secret@h/db",
                          metrics_url=None, schema_registry_url=None, embedded_broker=True, embedded_postgres=False)

    write_private(path, json.dumps(asdict(endpoints)))
    assert private_dir(data) == data
    assert stat.S_IMODE(data.stat().st_mode) == 0o700 and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert read_endpoints(settings) == endpoints
    assert sorted(p.name for p in data.iterdir()) == ["stack.json"]
    fresh = private_dir(tmp_path / "new" / "data")
    assert stat.S_IMODE(fresh.stat().st_mode) == 0o700
    fresh.chmod(0o755)  # what pgserver does when started by root (its postgres runs as its own user)
    assert stat.S_IMODE(private_dir(fresh, traversable=True).stat().st_mode) == 0o711


def test_a_zombie_is_not_alive() -> None:
    """A child that exited and was not yet reaped (as a killed ``up``'s orphans wait for init to reap them,
    seconds on a loaded machine) holds nothing any more: it is not alive."""
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        assert pid_alive(child.pid)
    finally:
        child.kill()
    deadline = time.monotonic() + 10
    while Path(f"/proc/{child.pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
        assert time.monotonic() < deadline, "the child did not become a zombie"
        time.sleep(0.01)
    assert not pid_alive(child.pid)  # a zombie: exited, not yet reaped (we have not waited for it)
    child.wait()
    assert not pid_alive(child.pid)
