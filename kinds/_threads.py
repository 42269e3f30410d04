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
