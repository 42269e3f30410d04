"""The pod's generation workers: at most ``workers`` generations at once and ``queue`` more waiting, one
more refused at once (:class:`~serving.exceptions.Overloaded`, 429 with a Retry-After from the recent
p95). One pool per pod, shared by its generation models: they share one base model whose forward passes
are serialised, so more threads would only queue inside its lock. The recent generation times per model
version (:class:`LatencyWindow`) feed the p95 gauge and the Retry-After."""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

from core.settings import FlywheelSettings
from serving.exceptions import Overloaded
from serving.metrics import ServingMetrics

GENERATE_WINDOW = 200  # answers per model version behind flywheel_serving_generate_p95_seconds
T = TypeVar("T")


class LatencyWindow:
    """The last ``size`` generation times of each (model, version), for the p95 gauge and Retry-After."""

    def __init__(self, size: int = GENERATE_WINDOW) -> None:
        self._size = size
        self._times: dict[tuple[str, str], deque[float]] = {}
        self._lock = threading.Lock()

    def add(self, model: str, version: str, seconds: float) -> float:
        """Record one time; return the p95 of the version's window."""
        with self._lock:
            window = self._times.setdefault((model, version), deque(maxlen=self._size))
            window.append(seconds)
            return _p95(window)

    def p95(self) -> float | None:
        """The p95 over every version's window (None before any answer)."""
        with self._lock:
            every = [t for window in self._times.values() for t in window]
        return _p95(every) if every else None


def _p95(values: Iterable[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, -(-95 * len(ordered) // 100) - 1))]  # nearest rank


class GenerationPool:
    """At most ``workers`` generations at once and ``queue`` waiting; ``submit`` beyond that raises
    :class:`Overloaded`. One per pod, shared by its generation models (they share the base model too)."""

    def __init__(self, workers: int, queue: int, metrics: ServingMetrics) -> None:
        self.workers = workers
        self.capacity = workers + queue
        self.metrics = metrics
        self.latency = LatencyWindow()
        self._admitted = 0
        self._lock = threading.Lock()
        self._executor: ThreadPoolExecutor | None = None

    @classmethod
    def of(cls, settings: FlywheelSettings, metrics: ServingMetrics) -> GenerationPool:
        return cls(settings.generate_workers, settings.generate_queue, metrics)

    @property
    def admitted(self) -> int:
        """Generations running or queued."""
        return self._admitted

    def retry_after(self) -> float:
        """Seconds until a slot is likely free: the recent p95 times the queue ahead per worker."""
        p95 = self.latency.p95() or 1.0
        return max(1.0, p95 * (self._admitted / self.workers))

    def submit(self, job: Callable[[], T], *, idle_only: bool = False) -> Future[T]:
        """Run ``job`` on a worker; :class:`Overloaded` when full (``idle_only``: unless a worker is free,
        which is how the shadow asks, so it never delays a request)."""
        with self._lock:
            limit = self.workers if idle_only else self.capacity
            if self._admitted >= limit:
                raise Overloaded(f"{self._admitted} generations running or queued (the pod's limit is "
                                 f"{self.capacity}: FLYWHEEL_GENERATE_WORKERS + FLYWHEEL_GENERATE_QUEUE)",
                                 self.retry_after())
            self._admitted += 1
            if self._executor is None:
                self._executor = ThreadPoolExecutor(self.workers, thread_name_prefix="flywheel-generate")
            executor = self._executor
        self.metrics.generate_waiting.set(self._admitted)
        future = executor.submit(job)
        future.add_done_callback(self._release)  # also when a queued job is cancelled at its deadline
        return future

    def _release(self, _future: Future[Any]) -> None:
        with self._lock:
            self._admitted -= 1
        self.metrics.generate_waiting.set(self._admitted)

    def close(self) -> None:
        with self._lock:
            executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=False, cancel_futures=True)
