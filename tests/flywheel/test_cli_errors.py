"""Expected failures print one clear line and exit 1: no tracebacks."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from flywheel.stack import free_port


def _run(*args: str, **env_extra: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLYWHEEL_")}
    env.update(env_extra)
    return subprocess.run([sys.executable, "-m", "flywheel", *args], env=env, capture_output=True, text=True,
                          timeout=90)


@pytest.mark.parametrize("args", [["topics", "list"], ["topics", "lag", "g"], ["db", "upgrade"]])
def test_nothing_running_and_nothing_configured(tmp_path: Path, args: list[str]) -> None:
    result = _run(*args, FLYWHEEL_DATA_DIR=str(tmp_path))
    assert result.returncode == 1
    assert "flywheel up" in result.stderr and "Traceback" not in result.stderr


def test_unreachable_broker(tmp_path: Path, db_url: str) -> None:
    result = _run("topics", "list", FLYWHEEL_KAFKA_BOOTSTRAP=f"127.0.0.1:{free_port()}",
                  FLYWHEEL_DATABASE_URL=db_url, FLYWHEEL_DATA_DIR=str(tmp_path))
    assert result.returncode == 1
    assert "unavailable" in result.stderr.lower() and "Traceback" not in result.stderr


def test_unreachable_database(tmp_path: Path) -> None:
    url = f"postgresql://postgres@127.0.0.1:{free_port()}/postgres"
    result = _run("db", "upgrade", FLYWHEEL_DATABASE_URL=url, FLYWHEEL_DATA_DIR=str(tmp_path))
    assert result.returncode == 1
    assert "Postgres is unreachable" in result.stderr and "Traceback" not in result.stderr


def test_status_reports_problems_without_traceback(tmp_path: Path) -> None:
    result = _run("status", FLYWHEEL_KAFKA_BOOTSTRAP=f"127.0.0.1:{free_port()}",
                  FLYWHEEL_DATABASE_URL=f"postgresql://postgres@127.0.0.1:{free_port()}/postgres",
                  FLYWHEEL_DATA_DIR=str(tmp_path))
    assert result.returncode == 1
    assert "problem" in result.stdout and "Traceback" not in result.stdout + result.stderr


def test_topics_admin_round_trip(kafka_bootstrap: str, db_url: str, topic_prefix: str, tmp_path: Path) -> None:
    env = dict(FLYWHEEL_KAFKA_BOOTSTRAP=kafka_bootstrap, FLYWHEEL_DATABASE_URL=db_url,
               FLYWHEEL_TOPIC_PREFIX=topic_prefix, FLYWHEEL_DATA_DIR=str(tmp_path))
    created = _run("topics", "create", "--partitions", "3", **env)
    assert created.returncode == 0, created.stderr
    assert f"{topic_prefix}.feedback.v1: created" in created.stdout
    again = _run("topics", "create", **env)
    assert f"{topic_prefix}.feedback.v1: exists" in again.stdout
    listed = _run("topics", "list", **env)
    assert f"{topic_prefix}.dlq.v1" in listed.stdout
    described = _run("topics", "describe", f"{topic_prefix}.feedback.v1", **env)
    assert described.returncode == 0 and "3 partitions" in described.stdout
    extra = f"{topic_prefix}.scratch"
    assert _run("topics", "create", extra, "-c", "retention.ms=1000", **env).returncode == 0
    assert _run("topics", "delete", extra, "--yes", **env).returncode == 0
    assert extra not in _run("topics", "list", **env).stdout
    missing = _run("topics", "describe", f"{topic_prefix}.nope", **env)
    assert missing.returncode == 1 and "no such topic" in missing.stderr
