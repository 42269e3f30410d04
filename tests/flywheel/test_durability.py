"""Issue 21: nothing acknowledged is ever lost. An idempotent acks=all producer streams feedback into
`flywheel up` (durable embedded broker, fixed port) while `up` is stopped with SIGTERM and then killed with
SIGKILL mid-stream, and started again each time: every acknowledged event lands exactly once. The longer
replay is bench/durability.py."""

from __future__ import annotations

import signal
from pathlib import Path

from flywheel.stack import free_port
from tests.flywheel.durability import run


def test_acknowledged_events_survive_sigterm_and_sigkill_of_up(tmp_path: Path, db_url: str) -> None:
    result = run(tmp_path, db_url, free_port(), rate=300, seconds=20,
                 stops=[(5.0, signal.SIGTERM), (12.0, signal.SIGKILL)], land_timeout=60)
    assert result["exit_codes"][0] == 0, result  # type: ignore[index]
    assert result["delivery_errors"] == 0, result
    assert result["acknowledged"] == result["sent"] == 6000, result
    assert result["lost"] == 0 and result["duplicated"] == 0, result
    assert result["landed"] == result["acknowledged"], result
    log = (tmp_path / "up.log").read_text()
    assert "ingest drained" in log  # the SIGTERM stop landed what the broker held before stopping it
