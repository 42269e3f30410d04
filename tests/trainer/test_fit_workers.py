"""The fit workers (:mod:`trainer.fitpool`): a fold fitted in a worker predicts exactly what the same fit in
the trainer's process predicts (inside a run's n-gram counting block and outside one), a worker that dies or
hangs is a clear :class:`FitWorkerError` and the next fit gets new workers. Real processes (``spawn``)."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator

import numpy as np
import pytest

from kinds.catalog import create
from kinds.ngrams import counted_once
from trainer.fitpool import FitPool, FitWorkerError, job_for

from .lifecycle_helpers import rows

PARAMS = {"analyzer": "char_wb", "ngram_min": 2, "ngram_max": 5, "min_df": 2, "seed": 0}


@pytest.fixture(scope="module")
def pool() -> Iterator[FitPool]:
    found = FitPool(2, timeout_s=60.0)
    found.start()
    yield found
    found.close()


def _data() -> tuple[list[str], list[str], list[float], list[str]]:
    data = rows("vader_movies")[:1200]
    texts, labels = [r.text for r in data], [r.label for r in data]
    return texts[:1000], labels[:1000], [1.0 if i % 3 else 0.2 for i in range(1000)], texts[1000:]


@pytest.mark.parametrize("counted", [True, False])
def test_a_fit_in_a_worker_predicts_as_in_process(pool: FitPool, counted: bool) -> None:
    texts, labels, weights, held = _data()

    def here() -> np.ndarray:
        return create("tfidf-logreg", **PARAMS).fit(texts, labels, weights).predict_proba(held)

    block = counted_once([*texts, *held]) if counted else None
    with block or contextlib.nullcontext():
        job = job_for("tfidf-logreg", PARAMS, texts, labels, weights, held)
        assert (job.counted is not None) == counted
        future = pool.submit(lambda: create("tfidf-logreg", **PARAMS).fit(texts, labels, weights), held, job)
        expected = here()
    done = pool.result(future)
    assert done.labels == ("negative", "neutral", "positive")
    assert np.array_equal(done.proba, expected)  # bit for bit: the same features, one BLAS thread each


def test_one_worker_fits_in_process() -> None:
    texts, labels, weights, held = _data()
    serial = FitPool(1)
    job = job_for("tfidf-logreg", PARAMS, texts, labels, weights, held)
    future = serial.submit(lambda: create("tfidf-logreg", **PARAMS).fit(texts, labels, weights), held, job)
    assert future.done() and not serial.portable("tfidf-logreg")
    assert serial.result(future).proba.shape == (len(held), 3)


def test_a_worker_that_dies_fails_the_fit_and_the_next_fit_gets_new_workers(pool: FitPool) -> None:
    future = pool._pool().submit(os._exit, 3)  # a worker killed mid-fit (out of memory, a segfault)
    with pytest.raises(FitWorkerError, match="died"):
        pool.result(future)
    texts, labels, weights, held = _data()
    job = job_for("tfidf-logreg", PARAMS, texts, labels, weights, held)
    assert pool.result(pool.submit(lambda: create("tfidf-logreg", **PARAMS), held, job)).proba.shape == (200, 3)


def test_a_worker_that_hangs_is_stopped_after_the_timeout() -> None:
    slow = FitPool(2, timeout_s=1.0)
    try:
        started = time.perf_counter()
        with pytest.raises(FitWorkerError, match="longer than 1 s"):
            slow.result(slow._pool().submit(time.sleep, 120))
        assert time.perf_counter() - started < 30
    finally:
        slow.close()
