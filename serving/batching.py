"""The request path of model kinds that batch (``ModelKind.batches``: ``minilm-head``): one pod-wide
micro-batcher, and the pod's embedding cache.

:class:`MicroBatcher`: callers ``submit(model, texts)`` and wait on the future (request threads with
``predict``, the async routes by awaiting it). Each of ``workers`` worker threads takes the first queued
job, gathers more until it holds ``max_texts`` texts or ``wait_ms`` have passed since that first job was
submitted (jobs that queued up while the previous batch ran are taken at once; it waits for newcomers
only while every other worker is running a batch: a worker that is not would take a newcomer at once, in
parallel, so waiting would only add ``wait_ms`` to this batch's latency), groups the gathered
texts by model object (a canary and the champion can share a gather) and calls ``predict_proba_parts``
once per model. Each job gets exactly its own rows of its own model's call, so a swap (new model objects
in the next requests) can never mix rows, and gets them as soon as they are all in: a ``minilm-head``
yields its cached texts first, then each length bucket of its encoder, shortest first, so a short
request does not wait for a long text in the same batch (its rows are the ones ``predict_proba`` on the
whole batch gives, bit for bit). An exception fails exactly the jobs of the group whose call raised
that were not answered yet, and the worker goes on. With several workers, batches run at the same time
(the encoder's forward pass releases the GIL; each encode borrows its own tokenizer).

:func:`pod_embedder`: the pod's MiniLM embedder, an LRU of ``embedding_cache_entries`` vectors whose hits
and misses are counted in the pod's metrics.
"""

from __future__ import annotations

import contextlib
import itertools
import threading
import time
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import Future, InvalidStateError
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from core.settings import FlywheelSettings
from kinds.base import Probabilities
from kinds.embeddings import Embedder, EmbeddingCache, MemoryEmbeddingCache, Vector
from kinds.encoder import Encoder
from serving.exceptions import ServingError
from serving.metrics import ServingMetrics


class BatcherClosed(ServingError):
    """The micro-batcher is not running (not started yet, or the pod is shutting down)."""

    status = 503
    code = "shutting_down"


class Predictor(Protocol):
    def predict_proba_parts(self, texts: Sequence[str]) -> Iterator[tuple[list[int], Probabilities]]: ...


@dataclass(frozen=True)
class Batched:
    """One job's rows (in its texts' order) and ``latency_ms``: from its submit to its last row, i.e. how long
    its caller waited for them."""

    proba: Probabilities
    latency_ms: float


@dataclass(eq=False)
class _Job:
    model: Predictor
    texts: Sequence[str]
    submitted: float = field(default_factory=time.perf_counter)
    future: Future[Batched] = field(default_factory=Future)


class MicroBatcher:
    """See the module docstring. ``start`` once; ``close`` fails whatever it could not finish in time."""

    def __init__(self, metrics: ServingMetrics, *, max_texts: int = 32, wait_ms: float = 2.0,
                 workers: int = 1) -> None:
        self.metrics, self.max_texts, self.wait_s, self.workers = metrics, max_texts, wait_ms / 1000, workers
        self._queue: deque[_Job] = deque()
        self._running: dict[int, list[_Job]] = {}  # by worker
        self._cond = threading.Condition()
        self._closed = False
        self._threads: list[threading.Thread] = []
        self._live = 0  # workers still running

    @classmethod
    def of(cls, settings: FlywheelSettings, metrics: ServingMetrics) -> MicroBatcher:
        return cls(metrics, max_texts=settings.predict_batch_max, wait_ms=settings.predict_batch_wait_ms,
                   workers=settings.predict_batch_workers)

    def start(self) -> None:
        with self._cond:
            if self._threads or self._closed:
                return
            self._threads = [threading.Thread(target=self._work, args=(n,), name=f"flywheel-micro-batcher-{n}",
                                              daemon=True) for n in range(self.workers)]
            self._live = self.workers
            for thread in self._threads:
                thread.start()

    def submit(self, model: Predictor, texts: Sequence[str]) -> Future[Batched]:
        """Queue ``texts`` for ``model``; raises :class:`BatcherClosed` unless started and not closed."""
        job = _Job(model, list(texts))
        with self._cond:
            if self._closed or not self._threads:
                raise BatcherClosed("the micro-batcher is " + ("closed: the pod is shutting down" if self._closed
                                                               else "not started"))
            self._queue.append(job)
            self._cond.notify()
        return job.future

    def predict(self, model: Predictor, texts: Sequence[str]) -> Batched:
        """``submit`` and wait; the model's exception (or :class:`BatcherClosed`) is raised here."""
        return self.submit(model, texts).result()

    def close(self, timeout: float = 5.0) -> None:
        """Refuse new jobs, let the worker finish what is queued for up to ``timeout`` seconds, then fail
        every job still unresolved with :class:`BatcherClosed`. Never blocks longer than ``timeout``."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
            threads = list(self._threads)
        deadline = time.monotonic() + timeout
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        with self._cond:
            left = [*self._queue, *(job for jobs in self._running.values() for job in jobs)]
            self._queue.clear()
        _fail(left, BatcherClosed("the pod is shutting down"))

    # -- the workers ---------------------------------------------------------------------------------
    def _work(self, worker: int) -> None:
        try:
            while (jobs := self._gather(worker)) is not None:
                self._run(jobs)
                with self._cond:
                    self._running.pop(worker, None)
        finally:  # whatever ended the loop, none of its callers is left waiting
            with self._cond:
                left = self._running.pop(worker, [])
                self._live -= 1
                if self._closed or not self._live:  # the last worker out fails what is still queued
                    left, self._queue = [*left, *self._queue], deque()
            _fail(left, BatcherClosed("the micro-batcher stopped"))

    def _gather(self, worker: int) -> list[_Job] | None:
        """The next batch (None once closed and drained): the first job, then more until ``max_texts``
        or the first job's deadline; a job that would overflow waits for the next batch."""
        with self._cond:
            while not self._queue:
                if self._closed:
                    return None
                self._cond.wait()
            first = self._queue.popleft()
            jobs, size, deadline = [first], len(first.texts), first.submitted + self.wait_s
            while size < self.max_texts:
                if self._queue:
                    if size + len(self._queue[0].texts) > self.max_texts:
                        break
                    job = self._queue.popleft()
                    jobs.append(job)
                    size += len(job.texts)
                    continue
                remaining = deadline - time.perf_counter()
                free = len(self._running) < self._live - 1  # another worker is not running a batch
                if remaining <= 0 or self._closed or free:
                    break
                self._cond.wait(remaining)
            self._running[worker] = jobs
            return jobs

    def _run(self, jobs: list[_Job]) -> None:
        groups: dict[int, list[_Job]] = {}
        for job in jobs:  # by object identity: two versions (or two loads of one) never share a call
            groups.setdefault(id(job.model), []).append(job)
        for group in groups.values():
            started = time.perf_counter()
            for job in group:
                self.metrics.batch_queue_seconds.observe(started - job.submitted)
            self.metrics.batch_texts.observe(sum(len(job.texts) for job in group))
            try:
                _answer(group)
            except Exception as exc:  # the model's failure belongs to its callers, not to the worker
                _fail(group, exc)  # those it answered already keep their answers
                continue
            self.metrics.batch_predict_seconds.observe(time.perf_counter() - started)


def _answer(group: list[_Job]) -> None:
    """One ``predict_proba_parts`` call on the group's texts; each job is resolved as soon as its last row
    is in (cache hits first, then the encoder's length buckets, shortest first), with its rows in order."""
    texts = [text for job in group for text in job.texts]
    owner = [n for n, job in enumerate(group) for _ in job.texts]  # the job of each row; -1 once answered
    left = [len(job.texts) for job in group]
    starts = list(itertools.accumulate(left, initial=0))
    for job in group:
        if not job.texts:  # nothing to wait for
            _resolve(job.future, Batched(np.empty((0, 0)), (time.perf_counter() - job.submitted) * 1000))
    proba: Probabilities | None = None
    for rows, part in group[0].model.predict_proba_parts(texts):
        if len(part) != len(rows) or not all(0 <= row < len(texts) and owner[row] >= 0 for row in rows):
            raise ServingError(f"predict_proba_parts gave {len(part)} rows of probabilities for rows "
                               f"{rows[:10]} of {len(texts)} texts (each row once)")
        if proba is None:
            proba = np.empty((len(texts), part.shape[1]), dtype=part.dtype)
        proba[rows] = part
        done = time.perf_counter()
        for row in rows:
            n, owner[row] = owner[row], -1
            left[n] -= 1
            if not left[n]:
                job = group[n]
                _resolve(job.future, Batched(proba[starts[n]:starts[n + 1]], (done - job.submitted) * 1000))
    if any(left):
        raise ServingError(f"predict_proba_parts answered {len(texts) - sum(left)} of {len(texts)} texts")


def _resolve(future: Future[Batched], result: Batched) -> None:
    with contextlib.suppress(InvalidStateError):  # already failed by close() after its time-out
        future.set_result(result)


def _fail(jobs: Sequence[_Job], exc: BaseException) -> None:
    for job in jobs:
        with contextlib.suppress(InvalidStateError):
            job.future.set_exception(exc)


# -- the pod's embedding cache ------------------------------------------------------------------------
class MeteredEmbeddingCache(EmbeddingCache):
    """An in-memory LRU of ``entries`` vectors (0 = no cache) counting hits and misses (distinct texts)
    into ``flywheel_serving_embedding_cache_total{result}``."""

    def __init__(self, entries: int, metrics: ServingMetrics) -> None:
        self.inner = MemoryEmbeddingCache(entries) if entries > 0 else None
        self._hits = metrics.embedding_cache.labels("hit")
        self._misses = metrics.embedding_cache.labels("miss")

    def __repr__(self) -> str:
        return f"MeteredEmbeddingCache({self.inner.max_entries if self.inner else 0})"

    def get_many(self, encoder_id: str, keys: Sequence[bytes]) -> dict[bytes, Vector]:
        found = self.inner.get_many(encoder_id, keys) if self.inner is not None else {}
        self._hits.inc(len(found))
        self._misses.inc(len(keys) - len(found))
        return found

    def put_many(self, encoder_id: str, vectors: Mapping[bytes, Vector]) -> None:
        if self.inner is not None:
            self.inner.put_many(encoder_id, vectors)


def pod_embedder(settings: FlywheelSettings, metrics: ServingMetrics) -> Embedder:
    """The embedder of every head a pod loads: the MiniLM encoder behind a :class:`MeteredEmbeddingCache`
    of ``settings.embedding_cache_entries``. A head whose artifact ships the encoder's ONNX graph runs that
    (``encoder_runtime="onnx"``, the default: the pod never imports torch); otherwise torch weights load on
    first use, built in a child process so that the pod never imports transformers' model code."""
    encoder = Encoder(isolated=True, threads=settings.encoder_threads, use_graph=settings.encoder_runtime == "onnx")
    return Embedder(encoder, MeteredEmbeddingCache(settings.embedding_cache_entries, metrics))
