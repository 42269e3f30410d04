"""The fit workers (:mod:`trainer.fitpool`): a fold fitted in a worker predicts exactly what the same fit in
the trainer's process predicts (inside a run's n-gram counting block and outside one), a worker that dies or
hangs is a clear :class:`FitWorkerError` and the next fit gets new workers. Real processes (``spawn``)."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from concurrent.futures import Future
from typing import Any, cast

import numpy as np
import pytest

from core.settings import FlywheelSettings
from flywheel.lifecycle import Lifecycle, lifecycle
from kinds.catalog import create
from kinds.ngrams import counted_once
from registry import CHALLENGER
from trainer.fitpool import FitPool, FitWorkerError, Predicted, job_for
from trainer.runs import RunResult

from .lifecycle_helpers import DEMO_CANARY_CONFIG, land_feedback, rows

PARAMS: dict[str, Any] = {"analyzer": "char_wb", "ngram_min": 2, "ngram_max": 5, "min_df": 2, "seed": 0}


@pytest.fixture(scope="module")
def pool() -> Iterator[FitPool]:
    found = FitPool(2, timeout_s=60.0)
    found.start()
    yield found
    found.close()


def _data() -> tuple[list[str], list[str], list[float], list[str]]:
    data = rows("vader_movies")[:1200]
    texts, labels = [str(r.text) for r in data], [r.label for r in data]
    return texts[:1000], labels[:1000], [1.0 if i % 3 else 0.2 for i in range(1000)], texts[1000:]


BLENDED: dict[str, Any] = {**PARAMS, "blend": {"analyzer": "word", "ngram_min": 1, "ngram_max": 2}}
WORDPIECE: dict[str, Any] = {**PARAMS, "blend": {"analyzer": "wordpiece", "c": 10.0}}  # the demo's


@pytest.mark.parametrize("counted", [True, False])
@pytest.mark.parametrize("params", [PARAMS, BLENDED, WORDPIECE], ids=["char_wb", "blended", "wordpiece"])
def test_a_fit_in_a_worker_predicts_as_in_process(pool: FitPool, counted: bool, params: dict[str, Any]) -> None:
    texts, labels, weights, held = _data()

    def here() -> Any:
        return create("tfidf-logreg", **params).fit(texts, labels, weights).predict_proba(held)

    block = counted_once([*texts, *held]) if counted else None
    with block or contextlib.nullcontext():
        job = job_for("tfidf-logreg", params, texts, labels, weights, held)
        assert (job.counted is not None) == counted
        if job.counted is not None:  # the counts the worker loads, not recounts: each gram set's (a blend's two)
            assert len(job.counted.files) == (1 if params is PARAMS else 2)  # wordpiece: its embeddings' file
            assert all(path.is_file() for path in job.counted.files.values())
        future = pool.submit(lambda: create("tfidf-logreg", **params).fit(texts, labels, weights), held, job)
        expected = here()
        done = pool.result(future)  # inside the block, as the trainer waits: its files end with it
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
    # a worker killed mid-fit (out of memory, a segfault)
    future = cast("Future[Predicted]", pool._pool().submit(os._exit, 3))
    with pytest.raises(FitWorkerError, match="died"):
        pool.result(future)
    texts, labels, weights, held = _data()
    job = job_for("tfidf-logreg", PARAMS, texts, labels, weights, held)
    assert pool.result(pool.submit(lambda: create("tfidf-logreg", **PARAMS), held, job)).proba.shape == (200, 3)


def test_a_worker_that_died_between_runs_is_replaced_at_the_next_fit() -> None:
    idle = FitPool(2, timeout_s=60.0)
    try:
        idle.start()
        worker = next(iter(idle._pool()._processes.values()))  # one of this pool's workers
        worker.kill()
        worker.join(10)
        time.sleep(1.0)  # the executor notices the death and marks itself broken
        texts, labels, weights, held = _data()
        job = job_for("tfidf-logreg", PARAMS, texts, labels, weights, held)
        future = idle.submit(lambda: create("tfidf-logreg", **PARAMS), held, job)
        assert idle.result(future).proba.shape == (200, 3)
    finally:
        idle.close()


def test_a_worker_that_hangs_is_stopped_after_the_timeout() -> None:
    slow = FitPool(2, timeout_s=1.0)
    try:
        started = time.perf_counter()
        with pytest.raises(FitWorkerError, match="longer than 1 s"):
            slow.result(cast("Future[Predicted]", slow._pool().submit(time.sleep, 120)))
        assert time.perf_counter() - started < 30
    finally:
        slow.close()


CONFIG = DEMO_CANARY_CONFIG.model_copy(update={"workers": 2})  # as tests/trainer/test_run_speed.py


@pytest.fixture
def lc(settings: FlywheelSettings, registry_db_url: str) -> Iterator[Lifecycle]:
    with lifecycle(settings, settings.kafka_connection(), registry_db_url, CONFIG) as found:
        yield found


def _run(lc: Lifecycle, monkeypatch: pytest.MonkeyPatch, *, workers: int) -> RunResult:
    with monkeypatch.context() as m:
        if workers == 1:
            m.setattr(lc.trainer.recipes, "pool", FitPool(1))
        assert lc.trainer.recipes.pool.workers == workers
        return lc.trainer.maybe_train("admin", requested="full")


def _decision(result: RunResult) -> dict[str, Any]:
    """What a run decided, its timings left out (a behaviour verdict's p95 latency is one)."""
    return {"status": result.status, "reason": result.reason.split("; p95")[0],
            "chosen": result.version.tags.get("corpus_weight") if result.version else None,
            "candidates": [{"name": c["name"], "passed": c["passed"], "score": c["score"],
                            "verdicts": [(v["gate"], v["passed"], v["reason"].split("; p95")[0])
                                         for v in c["verdicts"]]} for c in result.candidates]}


def test_a_run_in_fit_workers_decides_as_the_serial_run(lc: Lifecycle, registry_db_url: str,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """On fixed data, the same snapshot trained serially (workers 1) and in 2 fit workers: the same verdicts,
    scores, metrics and choice, against the bootstrap champion and against a full-mode champion whose recipe
    is refit per fold (the fits that go to the workers)."""
    boot = lc.trainer.bootstrap(list(rows("vader_movies")[:2500]), source="vader_movies.csv", kind="tfidf-logreg")
    assert boot.status == "promoted", boot.reason
    land_feedback(registry_db_url, rows("vader_tweets")[:300], seed=18)
    serial, parallel = _run(lc, monkeypatch, workers=1), _run(lc, monkeypatch, workers=2)
    assert _decision(parallel) == _decision(serial)
    assert parallel.status == "canary", parallel.reason
    lc.promote(CHALLENGER, "a full-mode champion for the next run")
    land_feedback(registry_db_url, rows("vader_tweets")[300:450], seed=19)
    serial, parallel = _run(lc, monkeypatch, workers=1), _run(lc, monkeypatch, workers=2)
    assert _decision(parallel) == _decision(serial)
    assert all("for the champion too" in c["verdicts"][0]["reason"] for c in parallel.candidates)


def test_workers_exit_when_the_trainer_is_killed() -> None:
    """A trainer killed (no shutdown) leaves no fit worker behind: each notices its parent is gone."""
    import subprocess
    import sys

    import psutil  # type: ignore[import-untyped]

    code = ("import os, sys, psutil; from trainer.fitpool import FitPool\n"
            "if __name__ == '__main__':\n"
            "    pool = FitPool(2); pool.start()\n"
            "    kids = [c for c in psutil.Process().children() if 'spawn_main' in ' '.join(c.cmdline())]\n"
            "    print(' '.join(str(c.pid) for c in kids), flush=True)\n"
            "    os.kill(os.getpid(), 9)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": os.getcwd()})
    pids = [int(p) for p in done.stdout.split()]
    assert len(pids) == 2, (done.stdout, done.stderr)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and any(psutil.pid_exists(p) and psutil.Process(p).status() != "zombie"
                                              for p in pids):
        time.sleep(0.5)
    assert not [p for p in pids if psutil.pid_exists(p) and psutil.Process(p).status() != "zombie"]
