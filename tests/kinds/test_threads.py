"""kinds._threads: torch's intra-op count set per calling thread (``torch_threads``) and the per-call count of
a pod's generations (``SpareCores``: fewer threads while other processes hold cores)."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from kinds._threads import SpareCores, one_torch_thread, torch_threads


def stat_line(busy_ticks: int, idle_ticks: int = 0) -> str:
    """A /proc/stat first line: user nice system idle iowait irq softirq steal guest guest_nice (ticks)."""
    return f"cpu  {busy_ticks} 0 0 {idle_ticks} 0 0 0 0 0 0\ncpu0 0 0 0 0 0 0 0 0 0 0\n"



@contextlib.contextmanager
def fit_beside() -> Iterator[None]:
    """A one-thread fit running in another thread of this process for the duration of the block."""
    fitting, release = threading.Event(), threading.Event()

    def fit() -> None:
        with one_torch_thread():
            fitting.set()
            release.wait(30)

    beside = threading.Thread(target=fit)
    beside.start()
    try:
        assert fitting.wait(30)
        yield
    finally:
        release.set()
        beside.join()

def test_torch_threads_sets_the_calling_threads_count_and_restores_it() -> None:
    seen: dict[str, int] = {}

    def worker() -> None:
        torch.set_num_threads(1)
        with torch_threads(2):
            seen["inside"] = torch.get_num_threads()
        seen["after"] = torch.get_num_threads()

    runner = threading.Thread(target=worker)
    runner.start()
    runner.join()
    assert seen == {"inside": 2, "after": 1}
    with pytest.raises(ValueError), torch_threads(0):
        pass


def test_one_torch_thread_holds_each_concurrent_fits_own_thread_at_one() -> None:
    """Two fits at once, the second in a thread that ran torch on 2 threads before: both run on one, and each
    thread gets its own count back (one process-wide setting reached only the first fit's thread)."""
    seen: dict[str, int] = {}
    first_in, second_done = threading.Event(), threading.Event()

    def first() -> None:
        torch.set_num_threads(2)
        with one_torch_thread():
            seen["first"] = torch.get_num_threads()
            first_in.set()
            second_done.wait(30)
        seen["first_after"] = torch.get_num_threads()

    def second() -> None:
        torch.set_num_threads(2)
        torch.ones(64, 64) @ torch.ones(64, 64)  # a parallel op: this thread now keeps its own count
        assert first_in.wait(30)
        with one_torch_thread():
            seen["second"] = torch.get_num_threads()
        seen["second_after"] = torch.get_num_threads()
        second_done.set()

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert seen == {"first": 1, "second": 1, "second_after": 2, "first_after": 2}


def test_spare_cores_counts_other_processes_busy_cores_not_its_own(tmp_path: Path) -> None:
    stat, now, own = tmp_path / "stat", [100.0], [10.0]
    spare = SpareCores(2, cores=2, interval=0.5, stat=stat, clock=lambda: now[0], own_cpu=lambda: own[0])
    ticks = 10_000
    stat.write_text(stat_line(ticks))
    assert spare() == 1  # nothing measured yet: one

    def step(seconds: float, host_busy_s: float, own_s: float) -> int:
        nonlocal ticks
        now[0] += seconds
        ticks += round(host_busy_s * 100)  # SC_CLK_TCK is 100 on Linux
        own[0] += own_s
        stat.write_text(stat_line(ticks))
        return spare()

    assert step(1.0, 2.0, 2.0) == 2 and spare.others == pytest.approx(0.0)  # its own 2 cores: not others
    assert step(1.0, 2.0, 1.0) == 1 and spare.others == pytest.approx(1.0)  # a neighbour held one core
    assert step(0.1, 0.0, 0.0) == 1  # within the interval: the last answer
    assert step(2.0, 0.8, 0.0) == 2 and spare.others == pytest.approx(0.8 / 2.1)  # since the last look
    assert step(1.0, 1.9, 0.1) == 1  # 1.8 cores of others: still at least one thread
    wide = SpareCores(4, cores=8, stat=stat, clock=lambda: now[0], own_cpu=lambda: own[0])
    assert wide() == 1 and step(1.0, 3.0, 0.0) == 1 and wide() == 4  # 3 of 8 cores busy: 4 to spare
    with fit_beside():  # a fit in this process (flywheel up: the trainer beside the pod) holds a core
        assert step(1.0, 2.0, 2.0) == 1 and spare.others == pytest.approx(0.0)  # the fit's core is not spare
    assert step(1.0, 2.0, 2.0) == 2
    assert SpareCores(2, stat=tmp_path / "missing")() == 2  # no /proc/stat: the configured count
    with pytest.raises(ValueError):
        SpareCores(0)


def test_spare_cores_gives_more_threads_only_while_they_are_measured_faster(tmp_path: Path) -> None:
    """Idle cores, but a host where 2 threads decode no faster than one (as one 2-vCPU Xeon did): auto tries
    both, then stays on one, rechecking 2 every ``recheck``-th call; where 2 are faster it stays on 2."""
    stat, now, ticks = tmp_path / "stat", [100.0], [10_000]
    stat.write_text(stat_line(ticks[0]))
    spare = SpareCores(2, cores=2, stat=stat, clock=lambda: now[0], own_cpu=lambda: 0.0, recheck=5)

    def call(per_step_s: dict[int, float]) -> int:
        now[0] += 1.0  # an idle host: nothing busy between two calls
        stat.write_text(stat_line(ticks[0]))
        threads = spare()
        spare.observe(threads, 64, 64 * per_step_s[threads])
        return threads

    assert spare() == 1  # the warm-up
    spare.observe(1, 1, 0.5)  # one token: too short to count
    assert spare.per_step == {}
    slow = {1: 0.025, 2: 0.026}  # 2 threads no faster
    assert [call(slow) for _ in range(11)] == [2, 1, 1, 1, 2, 1, 1, 1, 1, 2, 1]  # each tried, then 2 every 5th
    fast = {1: 0.025, 2: 0.016}  # the host changed: 2 threads 1.5x faster; the rechecks find it
    seen = [call(fast) for _ in range(30)]
    assert seen[-10:].count(2) == 8 and spare.per_step[2] < spare.gain * spare.per_step[1], seen  # 1 every 5th
    with pytest.raises(ValueError):
        SpareCores(2, gain=1.5)


def test_spare_cores_gives_one_thread_beside_a_busy_process_on_this_host() -> None:
    """A real neighbour: a busy loop in another process holds one core, so a 2-core host has one to spare."""
    cores = len(os.sched_getaffinity(0))
    if cores != 2:
        pytest.skip(f"written for a 2-core host, this one has {cores}")
    spare = SpareCores(2)
    loop = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        spare()
        time.sleep(1.5)
        assert spare() == 1 and spare.others >= 0.5, spare.others
    finally:
        loop.kill()
        loop.wait()
