"""``flywheel status`` shows each model's data-to-deploy p50/p95 from the platform's own record."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

from core import db
from registry.deploys import record_first_serve, record_trained
from tests.registry.test_deploys import T0, add_samples


def test_status_shows_data_to_deploy_per_model(kafka_bootstrap: str, db_url: str, tmp_path: Path) -> None:
    add_samples(db_url, "sentiment", range(1, 21))  # event times T0 + 1..20 s
    add_samples(db_url, "rainfall", range(101, 103))
    with db.connect(db_url, autocommit=True) as conn:
        record_trained(conn, "sentiment", "2", range(1, 21))
        record_first_serve(conn, "sentiment", "2", T0 + timedelta(seconds=80))  # 60..79 s: p50 69.5
        record_trained(conn, "rainfall", "5", [101, 102])
        record_first_serve(conn, "rainfall", "5", T0 + timedelta(hours=3))
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLYWHEEL_")}
    env.update(FLYWHEEL_KAFKA_BOOTSTRAP=kafka_bootstrap, FLYWHEEL_DATABASE_URL=db_url, FLYWHEEL_DATA_DIR=str(tmp_path),
               COLUMNS="160")
    result = subprocess.run([sys.executable, "-m", "flywheel", "status"], env=env, capture_output=True, text=True,
                            timeout=90)
    assert "Traceback" not in result.stdout + result.stderr, result.stderr
    lines = result.stdout.splitlines()
    assert any("Data-to-deploy" in line for line in lines), result.stdout
    sentiment = next(line for line in lines if "sentiment" in line and " 20 " in line)
    assert "69.5 s" in sentiment and "78.0 s" in sentiment  # p95 of 60..79 = 78.05
    rainfall = next(line for line in lines if "rainfall" in line)
    assert "2.9 h" in rainfall or "3.0 h" in rainfall
