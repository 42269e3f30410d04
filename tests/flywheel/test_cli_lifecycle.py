"""The lifecycle commands as an operator runs them: real processes against the real broker, Postgres
and MLflow store."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

from core.kafka import KafkaConnection
from core.settings import Topics
from registry.announce import read_model_events

DATA = Path(__file__).resolve().parents[2] / "data"


def _run(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith("FLYWHEEL_")} | env | {"COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "flywheel", *args], env=full, capture_output=True, text=True,
                          timeout=300)


def _corpus(path: Path, rows: int, *, bad_line: bool = False) -> Path:
    with (DATA / "vader_movies.csv").open(newline="") as src, path.open("w", newline="") as dst:
        reader = csv.DictReader(src)
        writer = csv.DictWriter(dst, fieldnames=["text", "label3", "domain"])
        writer.writeheader()
        picked = list(reader)[::3][:rows]  # the file is ordered by sentiment: every 3rd row spans it
        for i, row in enumerate(picked):
            writer.writerow({"text": row["text"], "label3": "great" if bad_line and i == 3 else row["label3"],
                             "domain": row["domain"]})
    return path


def test_bootstrap_models_evaluate_and_rollback_from_the_command_line(
        kafka_bootstrap: str, registry_db_url: str, topic_prefix: str, tmp_path: Path) -> None:
    env = {"FLYWHEEL_KAFKA_BOOTSTRAP": kafka_bootstrap, "FLYWHEEL_DATABASE_URL": registry_db_url,
           "FLYWHEEL_TOPIC_PREFIX": topic_prefix, "FLYWHEEL_DATA_DIR": str(tmp_path / "data")}

    bad = _run("bootstrap", "--data", str(_corpus(tmp_path / "bad.csv", 500, bad_line=True)), env=env)
    assert bad.returncode == 1 and "line 5: label 'great'" in bad.stderr and "Traceback" not in bad.stderr

    boot = _run("bootstrap", "--data", str(_corpus(tmp_path / "movies.csv", 3500)), env=env)
    assert boot.returncode == 0, boot.stdout + boot.stderr
    assert "promoted" in boot.stdout and "announced promote sentiment 1.0.0" in boot.stdout

    listed = _run("models", "versions", env=env)
    assert listed.returncode == 0 and "1.0.0" in listed.stdout and "champion" in listed.stdout
    declared = _run("models", "list", env=env)
    assert declared.returncode == 0 and "sentiment" in declared.stdout and "text-classification" in declared.stdout
    shown = _run("models", "show", "champion", env=env)
    assert shown.returncode == 0 and "tag sha256" in shown.stdout and "tag data_hash" in shown.stdout, shown.stdout

    evaluated = _run("evaluate", env=env)
    assert evaluated.returncode == 0, evaluated.stderr
    assert "evaluation" in evaluated.stdout and "behaviour" in evaluated.stdout

    retrained = _run("retrain", "--full", env=env)  # same data: the gate must refuse the copy
    assert retrained.returncode == 0, retrained.stderr
    assert "refused" in retrained.stdout and "evaluation" in retrained.stdout

    nothing = _run("models", "rollback", env=env)
    assert nothing.returncode == 1 and "previous" in nothing.stderr and "Traceback" not in nothing.stderr

    events = read_model_events(KafkaConnection(bootstrap_servers=kafka_bootstrap), Topics(topic_prefix).models)
    assert [(e.action, e.semver) for e in events] == [("promote", "1.0.0")]
