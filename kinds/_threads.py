"""One BLAS thread while a kind fits (threadpoolctl; the setting is process-wide, so it is reference
counted: the first fit to start lowers it, the last to finish restores it).

scikit-learn's L-BFGS runs its BLAS on every core by default; on a busy 2-core machine the threads wait
on each other. Measured on one demo full run (issue 18): 99 s -> 27 s under load (CPU 80 -> 22 s),
32.8 -> 24.3 s idle; one minilm-head fit under load 9.5 -> 0.49 s; the iterations are the same."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Any

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


_torch_users = 0
_torch_saved = 0


@contextlib.contextmanager
def one_torch_thread() -> Iterator[None]:
    """Run torch ops on one intra-op thread (torch's setting is process-wide; reference counted like
    :func:`one_blas_thread`, restored when the last user leaves). For minilm-head's tiny ops, two threads
    fighting over them on a busy 2-core machine made a 2000-sample fit 10-50x slower than one; a LoRA fit
    (smollm2-lora) keeps one core for the pods and the broker beside it."""
    global _torch_users, _torch_saved
    import torch

    with _lock:
        if _torch_users == 0:
            _torch_saved = torch.get_num_threads()
            torch.set_num_threads(1)
        _torch_users += 1
    try:
        yield
    finally:
        with _lock:
            _torch_users -= 1
            if _torch_users == 0:
                torch.set_num_threads(_torch_saved)


@contextlib.contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    """Run the calling thread's torch ops on ``threads`` intra-op threads; its own count is restored on exit.

    Why per thread and not :func:`one_torch_thread`'s process-wide count: torch's intra-op count is OpenMP's
    ``nthreads`` of the calling OS thread (and MKL's thread-local count). ``torch.set_num_threads`` sets
    it for the calling thread, plus the count a thread that has not run a parallel op yet starts with; a
    thread that already ran one keeps its own (observed with torch 2.13: a worker that set 2 stays at 2
    while the main thread is at 1). So a pod's setting made once at start would not reach a generation
    worker reliably, and a concurrent fit's ``one_torch_thread`` would skip a later user's thread (only its
    first user sets). The count is applied here, in the thread that runs the forward passes, for each call.
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
