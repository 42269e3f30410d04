"""The independent fits of a run in worker processes: each cross-fit fold of each candidate recipe and the
champion's recipe refit per fold (issue 18: 12 fits took 4.8 s in 2 processes vs 8.9 s serially on this
2-core machine).

A :class:`FitPool` of ``workers`` processes lives with the trainer (started once, on :meth:`FitPool.start`
or the first fit, and shared by every trainer of the process, like the shared encoder): the ``spawn``
context (a worker forked from a process holding Kafka, Postgres or MLflow clients would inherit their
sockets and locks), one BLAS/OpenMP thread per worker. A job holds only the kind, its parameters and plain
data (inputs, labels, weights, the inputs to predict): the worker builds the model as the trainer would
(:func:`kinds.catalog.create`), fits, predicts and sends back the probabilities, so a fold's predictions
are those of the serial path. Inside :func:`kinds.ngrams.counted_once` the job carries the counted texts
and the trainer's counts of each of the fit's n-gram sets (a blended tfidf-logreg's two), which the worker
loads once per run instead of counting (the same features). Kinds that bind
collaborators (a MiniLM head's embedder) fit in the trainer's process.

``workers`` 1: every fit in the trainer's process, one after the other (the serial path). A worker that
dies fails the run with :class:`FitWorkerError` (never a hung trainer); the next run starts a new pool.
"""

from __future__ import annotations

import atexit
import contextlib
import multiprocessing
import os
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import CancelledError, Future, ProcessPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

from kinds.base import ModelKind, Probabilities
from kinds.catalog import KINDS, create
from kinds.ngrams import SharedCounts, counted_once, shared_counts, use_counts
from tasks.features import Input
from trainer.exceptions import TrainerError

__all__ = ["FitJob", "FitPool", "FitWorkerError", "Predicted", "shared_pool"]


T = TypeVar("T")


class FitWorkerError(TrainerError):
    """A fit worker died or did not answer in time: the run fails, the pool is replaced on the next run."""


@dataclass(frozen=True)
class FitJob:
    """Fit ``kind`` (``params``) on ``inputs``/``labels``/``weights`` and predict ``predict``. ``counted``:
    the trainer's enclosing :func:`~kinds.ngrams.counted_once` block (its texts and counts files)."""

    kind: str
    params: dict[str, Any]
    inputs: Sequence[Input]
    labels: Sequence[str]
    weights: Sequence[float] | None
    predict: Sequence[Input]
    counted: SharedCounts | None = None
    start: Any = None  # where the fit's solver starts (:meth:`ModelKind.starting_at`), e.g. the champion's solution


@dataclass(frozen=True)
class Predicted:
    """A job's answer: the fitted model's labels, the probabilities of ``predict`` and the fit's seconds."""

    labels: tuple[str, ...]
    proba: Probabilities
    seconds: float


class FitPool:
    """Runs :class:`FitJob` s in ``workers`` processes (1: in the caller's process, at once)."""

    def __init__(self, workers: int = 2, *, timeout_s: float = 600.0) -> None:
        if workers < 1:
            raise TrainerError(f"workers must be at least 1, got {workers}")
        self.workers = workers
        self.timeout_s = timeout_s
        self._lock = threading.Lock()
        self._executor: ProcessPoolExecutor | None = None

    def start(self) -> None:
        """Start the worker processes and import what a fit needs in each (a no-op for 1 worker)."""
        if self.workers > 1:
            ready = [self._pool().submit(_warm) for _ in range(self.workers)]
            for future in ready:
                self._wait(future)

    def close(self) -> None:
        with self._lock:
            executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=True, cancel_futures=True)

    def portable(self, kind: str) -> bool:
        """Does a ``kind`` model fit the same in a worker: it binds no collaborators (``bind`` is the
        default), so its parameters and the data are the whole of it."""
        cls = KINDS.get(kind)
        return self.workers > 1 and cls is not None and cls.bind is ModelKind.bind

    def submit(self, local: Callable[[], ModelKind], predict: Sequence[Input], job: FitJob | None = None
               ) -> Future[Predicted]:
        """The predictions of ``predict`` by the model ``local()`` fits: by ``job`` in a worker when given
        and its kind is :meth:`portable`, else (a warm start, a kind bound to the trainer's collaborators,
        1 worker) fitted here, now."""
        if job is not None and self.portable(job.kind):
            try:
                return self._pool().submit(_run, job)
            except BrokenProcessPool:  # a worker died since the last run (nothing of this run was lost)
                self._drop()
                return self._pool().submit(_run, job)
        done: Future[Predicted] = Future()
        started = time.perf_counter()
        model = local()
        done.set_result(Predicted(model.labels, model.predict_proba(predict), time.perf_counter() - started))
        return done

    def result(self, future: Future[Predicted]) -> Predicted:
        """The job's answer; a dead or silent worker is a :class:`FitWorkerError` (and the pool is dropped)."""
        return self._wait(future)

    def _wait(self, future: Future[T]) -> T:
        try:
            return future.result(timeout=self.timeout_s)
        except BrokenProcessPool as exc:
            self._drop()
            raise FitWorkerError(f"a fit worker process died ({exc}); the run failed, the next run starts "
                                 f"new workers") from exc
        except CancelledError as exc:  # another run's broken pool was replaced under this one's fits
            raise FitWorkerError("a fit was cancelled: its workers were replaced after a failure") from exc
        except FutureTimeout as exc:
            self._drop()
            raise FitWorkerError(f"a fit took longer than {self.timeout_s:g} s in a worker; its workers were "
                                 f"stopped") from exc

    def _pool(self) -> ProcessPoolExecutor:
        with self._lock:
            if self._executor is None:
                self._executor = ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("spawn"),
                                                     initializer=_one_thread)
            return self._executor

    def _drop(self) -> None:
        """Forget a broken or stuck pool: its workers are killed, the next fit starts new ones."""
        with self._lock:
            executor, self._executor = self._executor, None
        if executor is None:
            return
        for process in list(getattr(executor, "_processes", {}).values()):  # a stuck worker never exits alone
            with contextlib.suppress(Exception):
                process.kill()
        executor.shutdown(wait=False, cancel_futures=True)


_shared: dict[int, FitPool] = {}
_shared_lock = threading.Lock()


def shared_pool(workers: int) -> FitPool:
    """The process-wide pool of ``workers`` processes (created on first call; closed at exit): every
    trainer of the process shares the machine's cores."""
    with _shared_lock:
        if workers not in _shared:
            _shared[workers] = FitPool(workers)
            atexit.register(_shared[workers].close)
        return _shared[workers]


def job_for(kind: str, params: dict[str, Any], inputs: Sequence[Input], labels: Sequence[str],
            weights: Sequence[float] | None, predict: Sequence[Input], start: Any = None) -> FitJob:
    """A :class:`FitJob` carrying the enclosing :func:`~kinds.ngrams.counted_once` block's texts, if any."""
    return FitJob(kind, params, list(inputs), list(labels), None if weights is None else list(weights),
                  list(predict), shared_counts(params), start)


# -- in the worker ---------------------------------------------------------------------------------------
_counted: tuple[str, contextlib.ExitStack] | None = None


def _one_thread() -> None:
    """A worker's start: one BLAS/OpenMP thread, and an exit of its own when the trainer is gone (killed,
    its workers would otherwise wait on their queue forever)."""
    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[name] = "1"
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=1)
    parent = os.getppid()
    threading.Thread(target=_exit_with, args=(parent,), name="fit-worker-orphan-watch", daemon=True).start()


def _exit_with(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(1.0)
    os._exit(0)


def _warm() -> None:
    import sklearn.linear_model  # noqa: F401  (what a tfidf-logreg fit imports, paid before the first run)


def _run(job: FitJob) -> Predicted:
    """One job in a worker: the counting block of its run entered once (left when another run's comes)."""
    global _counted
    key = job.counted.key if job.counted is not None else None
    if _counted is not None and _counted[0] != key:
        _counted[1].close()
        _counted = None
    if job.counted is not None:
        if _counted is None:
            stack = contextlib.ExitStack()
            stack.enter_context(counted_once(job.counted.texts, key=job.counted.key))
            _counted = (job.counted.key, stack)
        use_counts(job.counted)  # the trainer's counts, loaded once: not counted again here
    started = time.perf_counter()
    model = create(job.kind, **job.params).starting_at(job.start).fit(job.inputs, job.labels, job.weights)
    proba = np.asarray(model.predict_proba(job.predict), dtype=np.float64)
    return Predicted(model.labels, proba, time.perf_counter() - started)
