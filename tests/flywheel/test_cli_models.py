"""``flywheel models create | list`` and ``flywheel feedback import`` as an operator runs them: real
processes against the real broker and Postgres; imported outcomes land through a running ingest."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml

from core.settings import FlywheelSettings
from streams.runtime import ProcessorRunner
from tests.flywheel.test_many_models import AUTOMATION
from tests.streams.helpers import count, create_topics, produce, producer, running_ingest, wait_until


@pytest.fixture
def env(settings: FlywheelSettings, tmp_path: Path) -> dict[str, str]:
    assert settings.kafka_bootstrap and settings.database_url
    return {"FLYWHEEL_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
            "FLYWHEEL_DATABASE_URL": settings.database_url.get_secret_value(),
            "FLYWHEEL_TOPIC_PREFIX": settings.topic_prefix, "FLYWHEEL_DATA_DIR": str(tmp_path / "data")}


def _run(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith("FLYWHEEL_")} | env | {"COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "flywheel", *args], env=full, capture_output=True, text=True,
                          timeout=300)


def _failed(result: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    text = " ".join(result.stderr.split())  # rich wraps long lines
    for needle in needles:
        assert needle in text, (needle, result.stderr)


def _declared(db_url: str) -> dict[str, tuple[str, str]]:
    with psycopg.connect(db_url) as conn:
        return {r[0]: (r[1], r[2]) for r in conn.execute("SELECT name, task, source FROM models")}


def _write(path: Path, document: object) -> Path:
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


def test_models_create_checks_every_spec_before_storing_and_list_shows_them(
        env: dict[str, str], db_url: str, tmp_path: Path) -> None:
    before = _declared(db_url)
    bad = {
        "unknown_kind": ({**AUTOMATION, "kinds": ["nope"]}, ["unknown kind 'nope'"]),
        "text_kind": ({**AUTOMATION, "kinds": ["tfidf-logreg"]}, ["'tfidf-logreg' cannot train", "tabular"]),
        "no_categories": ({**AUTOMATION, "features": [{"name": "os", "type": "categorical"}]}, ["categories"]),
        "no_features": ({k: v for k, v in AUTOMATION.items() if k != "features"}, ["needs its features"]),
        "bad_label": ({**AUTOMATION, "positive_label": "exploded"}, ["positive_label 'exploded'"]),
        "bad_training": ({**AUTOMATION, "training": {"policy": {"full_threshold": -1}}},
                         ["training", "full_threshold"]),
        # the first spec is fine, the second is not: neither is stored
        "second_bad": ({"models": [{**AUTOMATION, "name": "churn"}, {**AUTOMATION, "kinds": ["nope"]}]},
                       ["unknown kind 'nope'"]),
        "twice": ({"models": [AUTOMATION, AUTOMATION]}, ["['automation'] are declared more than once"]),
    }
    for name, (document, needles) in bad.items():
        _failed(_run("models", "create", str(_write(tmp_path / f"{name}.yaml", document)), env=env), *needles)
    (tmp_path / "broken.yaml").write_text("models: [name: x\n")
    _failed(_run("models", "create", str(tmp_path / "broken.yaml"), env=env), "broken.yaml", "cannot read it")
    _failed(_run("models", "create", str(tmp_path / "missing.yaml"), env=env), "missing.yaml")
    assert _declared(db_url) == before

    spec = _write(tmp_path / "automation.yaml", AUTOMATION)
    created = _run("models", "create", str(spec), env=env)
    assert created.returncode == 0, created.stdout + created.stderr
    assert "declared automation (tabular-classification" in created.stdout
    assert _declared(db_url)["automation"] == ("tabular-classification", "cli")

    _failed(_run("models", "create", str(spec), env=env), "'automation' exists", "--replace")
    same = _run("models", "create", str(spec), "--replace", env=env)
    assert same.returncode == 0 and "unchanged automation" in same.stdout, same.stdout + same.stderr
    as_text = _write(tmp_path / "as_text.yaml", {"name": "automation", "task": "text-classification",
                                                 "labels": ["failed", "succeeded"]})
    _failed(_run("models", "create", str(as_text), "--replace", env=env), "task cannot change")
    assert _declared(db_url)["automation"][0] == "tabular-classification"

    both = _write(tmp_path / "both.yaml", {"models": [
        {**AUTOMATION, "name": "churn"},
        {"name": "tickets", "task": "text-classification", "labels": ["bug", "question", "feature"]}]})
    assert _run("models", "create", str(both), env=env).returncode == 0
    listed = _run("models", "list", env=env)
    assert listed.returncode == 0, listed.stderr
    lines = {line.split()[1]: line for line in listed.stdout.splitlines() if line.startswith("│")}
    assert {"automation", "churn", "tickets"} <= set(lines)
    assert "tabular-classification" in lines["automation"] and "failed,succeeded" in lines["automation"]
    assert "lightgbm" in lines["automation"] and " 3 " in lines["automation"] and "cli" in lines["automation"]
    assert "text-classification" in lines["tickets"] and "bug,question,feature" in lines["tickets"]
    assert "(default)" in lines["sentiment"] and "settings" in lines["sentiment"]  # not stored, yet a model


def _predictions(settings: FlywheelSettings, ids: list[str]) -> None:
    """Served predictions of the automation model (version 2), as a pod publishes them."""
    now = datetime.now(UTC).isoformat()
    events = [(pid.encode(), json.dumps({
        "type": "prediction", "schema_version": 2, "prediction_id": pid, "model": "automation",
        "model_version": "1", "input": {"features": {"load": 50.0, "os": "linux"}},
        "output": {"label": "succeeded", "probabilities": {"failed": 0.3, "succeeded": 0.7}},
        "latency_ms": 0.4, "ts": now}).encode()) for pid in ids]
    produce(producer(settings.kafka_connection()), settings.topics.predictions, events)


def _duplicates(runner: ProcessorRunner) -> float:  # type: ignore[type-arg]
    value = runner.metrics.registry.get_sample_value(
        "flywheel_stream_duplicates_total", {"group": runner.group, "kind": "feedback"})
    return value or 0.0


def test_feedback_import_lands_outcomes_once_and_rejects_bad_rows_with_their_reasons(
        settings: FlywheelSettings, env: dict[str, str], db_url: str, tmp_path: Path) -> None:
    create_topics(settings, settings.kafka_connection())
    spec = _write(tmp_path / "automation.yaml", AUTOMATION)
    assert _run("models", "create", str(spec), env=env).returncode == 0
    now = datetime.now(UTC)
    good: list[dict[str, Any]] = [
        {"prediction_id": "run-0", "label": "failed", "user_id": "ops", "ts": (now - timedelta(hours=3)).isoformat()},
        {"task_id": "run-1", "outcome": "succeeded"},
        {"prediction_id": "run-2", "label": "succeeded"},
        {"task_id": "run-3", "outcome": "failed", "user_id": "ci"},
    ]
    bad: list[tuple[object, str]] = [
        ({"prediction_id": "run-4", "label": "exploded"}, "label 'exploded' is not one of automation's"),
        ({"label": "failed"}, "needs a prediction_id (or task_id)"),
        ({"prediction_id": "run-5"}, "one of label, thumbs, rating, correction or signal is required"),
        ({"prediction_id": "run-6", "label": "failed", "ts": "yesterday"}, "ts"),
        ({"prediction_id": "run-6", "label": "failed", "ts": "2026-12-05T09:10:00"}, "timezone"),
        # ingest would dead-letter it: refused here instead
        ({"prediction_id": "run-7", "label": "failed", "ts": (now + timedelta(days=1)).isoformat()},
         "timestamp_in_future"),
        ({"prediction_id": "x" * 200, "label": "failed"}, "prediction_id"),
        (["run-7", "failed"], "not a JSON object"),
    ]
    outcomes = tmp_path / "outcomes.jsonl"
    lines = [json.dumps(good[0]), json.dumps(good[1]), *[json.dumps(row) for row, _ in bad], "{not json",
             "", json.dumps(good[2]), json.dumps(good[3])]
    outcomes.write_text("\n".join(lines) + "\n")

    with running_ingest(settings) as runner:
        _predictions(settings, [f"run-{i}" for i in range(10)])
        imported = _run("feedback", "import", str(outcomes), "--model", "automation", env=env)
        _failed(imported, "9 rows rejected", "outcomes.jsonl.rejected.jsonl")
        assert "sent 4 outcomes of automation" in imported.stdout
        rejected = [json.loads(line) for line in (tmp_path / "outcomes.jsonl.rejected.jsonl").read_text().splitlines()]
        assert [r["line"] for r in rejected] == list(range(3, 12))
        for (row, reason), found in zip(bad, rejected, strict=False):
            assert reason in found["reason"], (row, found)
            assert found["row"] == row or found["row"]["_raw"] == json.dumps(row)
        assert "not JSON" in rejected[-1]["reason"] and rejected[-1]["row"]["_raw"] == "{not json"
        wait_until(lambda: count(db_url, "SELECT count(*) FROM feedback WHERE status = 'joined'") == 4,
                   what="4 joined outcomes")

        again = _run("feedback", "import", str(outcomes), "--model", "automation", env=env)
        assert again.returncode == 1 and "sent 4 outcomes" in again.stdout, again.stdout + again.stderr
        wait_until(lambda: _duplicates(runner) == 4, what="the re-imported outcomes seen as duplicates")
        assert count(db_url, "SELECT count(*) FROM feedback") == 4
        outcomes.write_text("".join(json.dumps(row) + "\n" for row in good))  # the bad rows dropped
        fixed = _run("feedback", "import", str(outcomes), "--model", "automation", env=env)
        assert fixed.returncode == 0 and "sent 4 outcomes" in fixed.stdout, fixed.stdout + fixed.stderr
        assert not (tmp_path / "outcomes.jsonl.rejected.jsonl").exists()  # the stale rejects are gone
        wait_until(lambda: _duplicates(runner) == 8, what="the third import seen as duplicates")
        assert count(db_url, "SELECT count(*) FROM feedback") == 4

        with (tmp_path / "outcomes.csv").open("w", newline="", encoding="utf-8-sig") as fh:  # as a spreadsheet saves
            writer = csv.writer(fh)
            writer.writerow(["task_id", "outcome", "user_id"])
            writer.writerows([["run-8", "failed", "ops"], ["run-9", "succeeded", ""]])
        from_csv = _run("feedback", "import", str(tmp_path / "outcomes.csv"), "--model", "automation", env=env)
        assert from_csv.returncode == 0, from_csv.stdout + from_csv.stderr
        assert "sent 2 outcomes" in from_csv.stdout
        assert not (tmp_path / "outcomes.csv.rejected.jsonl").exists()
        wait_until(lambda: count(db_url, "SELECT count(*) FROM feedback WHERE status = 'joined'") == 6,
                   what="6 joined outcomes")

    with psycopg.connect(db_url) as conn:
        rows = conn.execute("SELECT prediction_id, model, label, source, user_id FROM feedback "
                            "ORDER BY prediction_id").fetchall()
    assert rows == [("run-0", "automation", "failed", "import", "ops"),
                    ("run-1", "automation", "succeeded", "import", None),
                    ("run-2", "automation", "succeeded", "import", None),
                    ("run-3", "automation", "failed", "import", "ci"),
                    ("run-8", "automation", "failed", "import", "ops"),
                    ("run-9", "automation", "succeeded", "import", None)]
    assert count(db_url, "SELECT count(*) FROM dead_letters") == 0

    _failed(_run("feedback", "import", str(outcomes), "--model", "nobody", env=env), "no model named 'nobody'")
    _failed(_run("feedback", "import", str(tmp_path / "absent.jsonl"), "--model", "automation", env=env),
            "absent.jsonl", "cannot read it")
