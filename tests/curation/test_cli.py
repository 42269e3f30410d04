"""`flywheel process curation` as an operator runs it: curates until SIGTERM, exits 0; a bad config
file is one clear error line and exit 1."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from core.kafka import KafkaConnection
from core.settings import FlywheelSettings
from tests.streams.helpers import create_topics, wait_until

from .helpers import Feedback, land, samples


def _env(settings: FlywheelSettings, db_url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLYWHEEL_")}
    env.update(FLYWHEEL_KAFKA_BOOTSTRAP=settings.kafka_bootstrap or "", FLYWHEEL_DATABASE_URL=db_url,
               FLYWHEEL_TOPIC_PREFIX=settings.topic_prefix, FLYWHEEL_METRICS_PORT="0", **extra)
    return env


def test_process_curation_curates_until_sigterm(settings: FlywheelSettings, kafka_conn: KafkaConnection, db_url: str,
                                                tmp_path: Path) -> None:
    create_topics(settings, kafka_conn)
    config = tmp_path / "curation.yaml"
    config.write_text("service:\n  reconcile_interval_s: 0.5\n")
    log = tmp_path / "curation.log"
    proc = subprocess.Popen([sys.executable, "-m", "flywheel", "process", "curation"],
                            env=_env(settings, db_url, FLYWHEEL_CURATION_CONFIG=str(config)),
                            stdout=log.open("wb"), stderr=subprocess.STDOUT)
    try:
        land(db_url, [Feedback("a fine film", "positive"), Feedback("a dull film", None, thumbs="down")])
        wait_until(lambda: len(samples(db_url)) == 2 or proc.poll() is not None, timeout=60, what="2 samples")
        assert [s[0] for s in samples(db_url).values()] == ["accepted", "rejected"], log.read_text()[-2000:]
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(60)
    assert code == 0, log.read_text()[-3000:]


def test_a_bad_config_file_is_one_error_line(settings: FlywheelSettings, db_url: str, tmp_path: Path) -> None:
    config = tmp_path / "curation.yaml"
    config.write_text("annotators:\n  flor: 0.3\n")
    done = subprocess.run([sys.executable, "-m", "flywheel", "process", "curation"], capture_output=True, text=True,
                          env=_env(settings, db_url, FLYWHEEL_CURATION_CONFIG=str(config)), timeout=60)
    assert done.returncode == 1
    assert "invalid curation config" in done.stderr and "annotators.flor" in done.stderr
    assert "Traceback" not in done.stderr
