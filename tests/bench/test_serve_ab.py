"""bench/serve_ab.py: the settings it takes, and the CPU it splits between a pod's event loop thread and
the rest, read from a real process."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from bench.serve_ab import assignments, thread_cpu_s

# a process whose main thread sleeps while a second thread spins
SPIN = """
import threading, time
def spin():
    end = time.process_time() + 0.6
    while time.process_time() < end:
        pass
threading.Thread(target=spin).start()
time.sleep(3)
"""


def test_settings_are_flywheel_assignments() -> None:
    assert assignments("FLYWHEEL_PREDICT_FAST_PATH=false,FLYWHEEL_X=a=b") == {
        "FLYWHEEL_PREDICT_FAST_PATH": "false", "FLYWHEEL_X": "a=b"}
    assert assignments("") == {}
    with pytest.raises(SystemExit, match="PATH"):
        assignments("PATH=/tmp")


def test_cpu_of_the_other_threads_is_not_the_main_threads() -> None:
    process = subprocess.Popen([sys.executable, "-c", SPIN])
    try:
        time.sleep(2.0)  # the spinning thread has used its ~0.6 s of CPU and ended
        main, other = thread_cpu_s(process.pid)
    finally:
        process.kill()
        process.wait()
    assert main < 0.3 and other == pytest.approx(0.6, abs=0.15)
