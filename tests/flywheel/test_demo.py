"""The demo: its simulated users and report on their own, and ``flywheel demo`` end to end as a
subprocess on the embedded broker (a short stream, so the suite stays quick)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from core.settings import FlywheelSettings
from curation.config import load_curation_config
from curation.drift import load_drift_config
from flywheel.demo import Crowd, DemoOptions, Marker, Step, Timeline, demo_settings, split_target, write_report
from kinds.catalog import create
from serving.canary import load_canary_config
from trainer.config import load_trainer_config

LABELS = ("negative", "neutral", "positive")


def test_the_crowd_gives_feedback_at_its_rate_with_its_noise_and_poison() -> None:
    crowd = Crowd(DemoOptions(feedback_rate=0.5, noise=0.1, poison=0.3, users=50, seed=3), LABELS)
    assert len(crowd.poisoners) == 15
    given: Counter[str] = Counter()
    wrong = Counter[str]()
    for _ in range(20_000):
        user = crowd.user()
        judged = crowd.judge(user, "positive")
        if judged is None:
            continue
        label, kind = judged
        given[kind] += 1
        wrong[kind] += label != "positive"
        assert (kind == "poison") == (user in crowd.poisoners)
    total = sum(given.values())
    assert 0.47 < total / 20_000 < 0.53
    assert 0.26 < given["poison"] / total < 0.34 and wrong["poison"] == given["poison"]  # always flipped
    assert wrong["noisy"] / given["noisy"] == pytest.approx(2 / 3, abs=0.06)  # a random label is sometimes right
    assert wrong["honest"] == 0


def test_target_split_is_disjoint_and_seeded() -> None:
    stream, held = split_target("vader_tweets", 0.3, 0)
    assert len(held) == int(0.3 * (len(stream) + len(held))) and not {r.text for r in stream} & {r.text for r in held}
    assert split_target("vader_tweets", 0.3, 0) == (stream, held)


def test_report_files_from_a_timeline(tmp_path: Path) -> None:
    options = DemoOptions(window=20)
    tl = Timeline(options)
    for i in range(100):
        tl.steps.append(Step(i, i * 0.1, "2" if i >= 50 else "1", "1.1.0" if i >= 50 else "1.0.0", "champion",
                             live_correct=i % 3 != 0 if i >= 50 else i % 2 == 0, static_correct=i % 2 == 0,
                             feedback="honest", feedback_id=str(i)))
    tl.markers.append(Marker(50, 5.0, "promote", "1.1.0", "gates passed"))
    tl.markers.append(Marker(30, 3.0, "refused", "", "not significant"))
    tl.figures = {"live_accuracy": 0.58}
    paths = write_report(tl, tmp_path)
    assert paths["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and paths["png"].stat().st_size > 10_000
    page = paths["html"].read_text()
    assert "data:image/png;base64," in page and "1.1.0" in page and "live_accuracy" in page
    data = json.loads(paths["json"].read_text())
    assert len(data["rolling"]["live"]) == 100 and data["markers"][0]["action"] == "promote"


def test_demo_settings_write_configs_the_platform_accepts(tmp_path: Path) -> None:
    base = FlywheelSettings(data_dir=tmp_path)
    settings = demo_settings(base, DemoOptions(kind="minilm-head", promotion="canary"), tmp_path / "d", None, 9999)
    trainer = load_trainer_config(settings.trainer_config)
    assert trainer.policy.kinds == ("minilm-head",) and trainer.promotion.mode == "canary"
    assert trainer.policy.full_threshold == trainer.policy.incremental_threshold
    # the head solved to its regularised optimum, with less of the corpus: parameters the kind accepts
    assert trainer.policy.corpus_weight == 0.1 and trainer.policy.corpus_weight_choices == (0.05,)
    tfidf = demo_settings(base, DemoOptions(kind="tfidf-logreg"), tmp_path / "t", None, 9999)
    assert load_trainer_config(tfidf.trainer_config).policy.corpus_weight == 0.2  # its movies slice held at 0.2
    head = create("minilm-head", **trainer.policy.kind_params["minilm-head"])
    assert head.params["solver"] == "lbfgs" and head.params["c"] == 0.1
    assert load_canary_config(settings.canary_config).interval_s == 5.0
    assert load_drift_config(settings.drift_config).interval_s == 10.0
    assert load_curation_config(settings.curation_config).weights.label_issue == 1.0
    assert settings.serving_port == 9999 and settings.bootstrap_data is not None and settings.bootstrap_data.exists()
    assert settings.topic_prefix.startswith("demo") and settings.database_url is None


@pytest.mark.timeout(600)
def test_flywheel_demo_runs_end_to_end(tmp_path: Path, pg_admin_url: str) -> None:
    env = {**os.environ, "FLYWHEEL_DATA_DIR": str(tmp_path), "FLYWHEEL_DATABASE_URL": pg_admin_url}
    env.pop("FLYWHEEL_KAFKA_BOOTSTRAP", None)  # the demo starts its own embedded broker
    flywheel = str(Path(sys.executable).parent / "flywheel")
    name = f"flywheel_demo_test_{os.getpid()}"
    try:
        done = subprocess.run([flywheel, "demo", "--stream", "150", "--rate", "60", "--feedback-rate", "1.0",
                               "--database", name], env=env, capture_output=True, text=True, timeout=540)
    finally:
        with psycopg.connect(pg_admin_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = tmp_path / "demo" / "report"
    data = json.loads((report / "report.json").read_text())
    figures = data["figures"]
    assert figures["steps"] == 150 and figures["failed_requests"] == 0 and figures["feedback"] == 150
    assert figures["runs"].get("promoted", 0) >= 1  # the bootstrap at least
    assert 0.0 < figures["static_holdout_accuracy"] < 1.0
    assert (report / "report.png").stat().st_size > 10_000 and "Demo results" in done.stdout
