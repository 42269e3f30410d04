"""bench/ingest.py's split of the process CPU by thread role: each thread's CPU lands in its own role."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace
from typing import Any

from bench.ingest import _by_role, _threads_cpu_s


def _spin(seconds: float) -> None:
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        pass


def test_cpu_is_split_by_thread_role() -> None:
    writer = ThreadPoolExecutor(1)
    try:
        writer.submit(lambda: None).result()  # the writer thread exists before the first snapshot
        runner: Any = SimpleNamespace(_writers=[writer])
        loop = threading.Thread(target=_spin, args=(0.3,))
        before = _threads_cpu_s()
        loop.start()
        writer.submit(_spin, 0.5).result()
        loop.join()
        # the loop thread has ended: its last figures are gone from /proc, as for a stopped runner
        after = _threads_cpu_s()
        roles = _by_role(runner, threading.get_native_id(), before, after)
    finally:
        writer.shutdown()
    assert set(roles) == {"loop", "writers", "librdkafka", "bench poll + other"}
    assert roles["writers"] >= 0.45
    assert roles["librdkafka"] == 0.0
    assert all(seconds >= 0.0 for seconds in roles.values())
    assert threading.get_native_id() in before and before[threading.get_native_id()][1] >= 0.0
