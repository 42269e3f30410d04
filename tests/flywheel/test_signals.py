"""SIGINT/SIGTERM handled without a lock (flywheel.signals): a signal that arrives while the main thread holds
the stop event's lock, or inside another handler, still stops the process instead of hanging it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from flywheel.signals import stop_on_signals
from tests.streams.helpers import wait_until

ROOT = Path(__file__).resolve().parents[2]

# The main thread holds the event's own lock (as inside Event.wait or Event.set) when the signal comes in; a
# handler that called Event.set would wait for that lock for ever.
_UNDER_THE_LOCK = textwrap.dedent("""
    import os, signal, sys, threading
    from flywheel.signals import stop_on_signals

    stop = threading.Event()
    if sys.argv[1] == "naive":
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
    else:
        stop_on_signals(stop, on_signal=lambda signum: print("relayed", signum, flush=True))
    with stop._cond:
        os.kill(os.getpid(), signal.SIGTERM)
        for _ in range(1000):  # the handler runs between two of these bytecodes, under the lock
            pass
    print("stopped" if stop.wait(10) else "not stopped", flush=True)
""")


def _run(mode: str, timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", _UNDER_THE_LOCK, mode], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})


def test_a_signal_under_the_events_lock_stops_the_process() -> None:
    done = _run("relay", timeout=30)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[:2] == [f"relayed {int(signal.SIGTERM)}", "stopped"]


def test_the_naive_handler_hangs_there() -> None:
    """What the relay avoids: Event.set in the handler deadlocks on the lock its own thread holds."""
    with pytest.raises(subprocess.TimeoutExpired):
        _run("naive", timeout=4)  # it starts in ~0.2 s; it would wait 10 s for the event


def test_every_signal_is_relayed_in_order() -> None:
    stop, seen = threading.Event(), list[int]()
    previous = {s: signal.getsignal(s) for s in (signal.SIGUSR1, signal.SIGUSR2)}
    try:
        stop_on_signals(stop, (signal.SIGUSR1, signal.SIGUSR2), on_signal=seen.append)
        os.kill(os.getpid(), signal.SIGUSR1)
        assert stop.wait(5)
        os.kill(os.getpid(), signal.SIGUSR2)
        wait_until(lambda: len(seen) == 2, timeout=5, what="the second signal")
        assert seen == [signal.SIGUSR1, signal.SIGUSR2]
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
