"""One BLAS thread while a kind fits (threadpoolctl; the setting is process-wide, so it is reference
counted: the first fit to start lowers it, the last to finish restores it).

scikit-learn's L-BFGS runs its BLAS on every core by default; on a busy 2-core machine the threads wait
on each other. Measured on one demo full run (issue 18): 99 s -> 27 s under load (CPU 80 -> 22 s),
32.8 -> 24.3 s idle; one minilm-head fit under load 9.5 -> 0.49 s; the iterations are the same."""

from __future__ import annotations

import contextlib
import math
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

_CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
_lock = threading.Lock()
_users = 0
_limiter: Any = None


@contextlib.contextmanager
def one_blas_thread() -> Iterator[None]:
    global _users, _limiter
    with _lock:
        if _users == 0:
            from threadpoolctl import threadpool_limits

            _limiter = threadpool_limits(limits=1, user_api="blas")
        _users += 1
    try:
        yield
    finally:
        with _lock:
            _users -= 1
            if _users == 0 and _limiter is not None:
                _limiter.restore_original_limits()
                _limiter = None


_torch_users = 0  # one-thread torch fits running in this process (SpareCores counts each as a busy core)


@contextlib.contextmanager
def one_torch_thread() -> Iterator[None]:
    """Run the calling thread's torch ops on one intra-op thread (:func:`torch_threads`, restored on exit), and
    count the fit while it runs. For minilm-head's tiny ops, two threads fighting over them on a busy 2-core
    machine made a 2000-sample fit 10-50x slower than one; a LoRA fit (smollm2-lora) keeps one core for the
    pods and the broker beside it.

    Per calling thread, not once per process: torch's count belongs to each OS thread, so a count set by the
    first of two concurrent fits did not reach the second one's thread if that thread had already run torch on
    more (the reference-counted process-wide setting this replaced skipped every later user)."""
    global _torch_users
    with _lock:
        _torch_users += 1
    try:
        with torch_threads(1):
            yield
    finally:
        with _lock:
            _torch_users -= 1


@contextlib.contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    """Run the calling thread's torch ops on ``threads`` intra-op threads; its own count is restored on exit.

    Why per thread and not once per process: torch's intra-op count is OpenMP's
    ``nthreads`` of the calling OS thread (and MKL's thread-local count). ``torch.set_num_threads`` sets
    it for the calling thread, plus the count a thread that has not run a parallel op yet starts with; a
    thread that already ran one keeps its own (observed with torch 2.13: a worker that set 2 stays at 2
    while the main thread is at 1). So a pod's setting made once at start would not reach a generation
    worker reliably. The count is applied here, in the thread that runs the forward passes, for each call.
    """
    import torch

    if threads < 1:
        raise ValueError(f"threads must be at least 1, got {threads}")
    saved = torch.get_num_threads()
    if saved == threads:
        yield
        return
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(saved)


class SpareCores:
    """Intra-op threads for the next forward passes: up to ``most``, at most the host's cores that other
    processes left idle since the last call (``cores`` minus their busy cores, rounded: ``/proc/stat``'s busy
    time of the host minus this process's own CPU time, over the time between two calls; calls closer than
    ``interval`` seconds reuse the last answer), at least 1; the first call, with nothing measured yet, is 1
    (a pod's first call is the warm-up of the version it loads).

    Why: OpenMP's threads meet at a barrier after every parallel op (thousands per generated answer); when
    another process holds a core, a thread waits for its partner's next time slice at each one. Measured
    (bench/decode_speed.py, docs/benchmarks.md): a forced 64-token answer on 2 threads took ~15x as long as on
    one (and ~12x the CPU, the waiting thread spinning) on a 2-core host at load ~15, where on an idle one 2
    threads are ~1.5x faster. This process's own
    CPU time is not "other" (a pod busy generating does not count against itself), except its fits: each
    fit running in it under :func:`one_torch_thread` or :func:`one_blas_thread` (``flywheel up`` runs the
    trainer and the pod in one process) counts as one busy core.

    Idle cores are not enough: more threads must also be faster on this host. The caller reports each
    generation's decode time (:meth:`observe`); with the cores to spare, more threads are given only while
    their measured time per forward pass is at most ``gain`` times one thread's (each count is tried first,
    and every ``recheck``-th call with cores to spare runs on the count not chosen, so a change of the host's
    behaviour shows). Measured (docs/benchmarks.md): on one 2-vCPU Xeon 2 threads decode 1.5x faster than one
    at 1.3x the CPU; on another, with the same model string, no faster at 1.6-2.2x the CPU."""

    def __init__(self, most: int, *, cores: int | None = None, interval: float = 0.5, stat: Path = Path("/proc/stat"),
                 clock: Callable[[], float] = time.monotonic, own_cpu: Callable[[], float] = time.process_time,
                 gain: float = 0.8, recheck: int = 10, min_steps: int = 8) -> None:
        if most < 1:
            raise ValueError(f"most must be at least 1, got {most}")
        if not 0 < gain <= 1 or recheck < 2 or min_steps < 1:
            raise ValueError(f"need 0 < gain <= 1, recheck >= 2 and min_steps >= 1, got {gain}, {recheck}, {min_steps}")
        self.most, self.interval, self._stat, self._clock, self._own_cpu = most, interval, stat, clock, own_cpu
        self.gain, self.recheck, self.min_steps = gain, recheck, min_steps
        self.per_step: dict[int, float] = {}  # wall seconds per forward pass by thread count (moving average)
        self._wide = 0  # calls that found more than one core to spare
        self.cores = cores or os.cpu_count() or 1  # what /proc/stat's first line adds up
        self._lock = threading.Lock()
        self._last: tuple[float, float, float] | None = None  # (when, host busy s, own CPU s)
        self._threads = 1
        self.others = 0.0  # cores other processes used over the last window

    @property
    def last(self) -> int:
        """The count the last call gave (1 before the first)."""
        return self._threads

    def _host_busy_s(self) -> float | None:
        """Busy CPU seconds of the whole host so far (user + nice + system + irq + softirq + steal)."""
        try:
            fields = self._stat.read_text().split("\n", 1)[0].split()
            user, nice, system, _idle, _iowait, irq, softirq, steal = (int(f) for f in fields[1:9])
        except (OSError, ValueError):
            return None
        return (user + nice + system + irq + softirq + steal) / _CLOCK_TICKS

    def __call__(self) -> int:
        with self._lock:
            now = self._clock()
            if self._last is not None and now - self._last[0] < self.interval:
                return self._threads
            busy, own = self._host_busy_s(), self._own_cpu()
            if busy is None:  # no /proc/stat (not Linux): the configured count
                return self.most
            if self._last is not None:
                when, last_busy, last_own = self._last
                self.others = max(0.0, ((busy - last_busy) - (own - last_own)) / (now - when))
                fits = _torch_users + _users  # one-thread fits running in this process right now
                self._threads = self._faster(max(1, min(self.most, math.floor(self.cores - self.others - fits + 0.5))))
            self._last = (now, busy, own)
            return self._threads

    def _faster(self, spare: int) -> int:
        """``spare`` threads if they were measured faster than one by :attr:`gain` (or not measured yet), else 1;
        every :attr:`recheck`-th time the other."""
        if spare == 1:
            return 1
        self._wide += 1
        one, many = self.per_step.get(1), self.per_step.get(spare)
        if many is None:
            return spare
        if one is None:
            return 1
        chosen = spare if many <= self.gain * one else 1
        if self._wide % self.recheck == 0:
            return 1 if chosen == spare else spare
        return chosen

    def observe(self, threads: int, steps: int, seconds: float) -> None:
        """A generation ran ``steps`` forward passes on ``threads`` threads in ``seconds`` (wall, from when it
        held the model); shorter ones than :attr:`min_steps` are not counted (their prompt dominates)."""
        if steps < self.min_steps or not seconds > 0:
            return
        with self._lock:
            seen = self.per_step.get(threads)
            per = seconds / steps
            self.per_step[threads] = per if seen is None else seen + 0.3 * (per - seen)
