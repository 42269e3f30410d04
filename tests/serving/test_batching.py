"""The micro-batcher under real threads (fake models and the fake encoder; a head on the real encoder's
ONNX graph: a short request is answered before a long text of its batch is encoded), and once through the
real app: concurrent /predict on a minilm-head champion answers what unbatched predict_proba answers."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from core.settings import FlywheelSettings
from flywheel.lifecycle import lifecycle
from kinds._onnx_export import exported
from kinds.base import Probabilities
from kinds.catalog import load_model
from kinds.embeddings import Embedder, MemoryEmbeddingCache
from kinds.encoder import shared_encoder
from kinds.minilm import MiniLMHead
from kinds.onnx_encoder import OnnxEncoder
from kinds.tfidf import TfidfLogReg
from registry.announce import ServedVersion
from serving import LoadedModel, ServingMetrics, create_app
from serving._predict import score, score_async
from serving.batching import Batched, BatcherClosed, MeteredEmbeddingCache, MicroBatcher
from serving.exceptions import ServingError
from tests.fakes import HashingEncoder
from tests.trainer.lifecycle_helpers import rows
from trainer.config import TrainerConfig

from .conftest import services


def code(text: str) -> float:
    """What the fake models answer for ``<tag>-<n>``: a row that names the text."""
    return int(text.rsplit("-", 1)[1]) / 100_000


class Fake:
    """Row = [code(text), 1 - code(text)] (``flip``: reversed); every call is recorded; a ``gate`` holds
    the call until set; ``fail`` raises."""

    def __init__(self, *, flip: bool = False, delay: float = 0.0, fail: bool = False,
                 gate: threading.Event | None = None) -> None:
        self.flip, self.delay, self.fail, self.gate = flip, delay, fail, gate
        self.calls: list[list[str]] = []
        self.entered = threading.Event()

    def predict_proba(self, texts: Sequence[str]) -> Probabilities:
        self.calls.append(list(texts))
        self.entered.set()
        if self.gate is not None:
            self.gate.wait(10)
        time.sleep(self.delay)
        if self.fail:
            raise ValueError("this model is broken")
        rows_ = np.array([[code(t), 1 - code(t)] for t in texts], dtype=np.float64).reshape(-1, 2)
        return rows_[:, ::-1] if self.flip else rows_

    def predict_proba_parts(self, texts: Sequence[str]) -> Iterator[tuple[list[int], Probabilities]]:
        yield list(range(len(texts))), self.predict_proba(texts)


def expected(texts: Sequence[str], flip: bool = False) -> Probabilities:
    return Fake(flip=flip).predict_proba(texts)


@pytest.fixture
def metrics() -> ServingMetrics:
    return ServingMetrics()


@pytest.fixture
def batcher(metrics: ServingMetrics) -> Iterator[MicroBatcher]:
    found = MicroBatcher(metrics, max_texts=8, wait_ms=5.0)
    found.start()
    yield found
    found.close(1.0)


def held(batcher: MicroBatcher) -> tuple[Fake, threading.Event]:
    """A gate model whose call is running (the worker is busy): jobs queued now share the next gather."""
    gate = threading.Event()
    blocker = Fake(gate=gate)
    batcher.submit(blocker, ["gate-0"])
    assert blocker.entered.wait(5)
    return blocker, gate


def test_many_threads_are_batched_and_each_gets_its_own_rows(batcher: MicroBatcher,
                                                             metrics: ServingMetrics) -> None:
    model = Fake(delay=0.005)
    texts = [f"t-{i}" for i in range(400)]
    with ThreadPoolExecutor(32) as pool:
        results = list(pool.map(lambda t: batcher.predict(model, [t]), texts))
    for text, result in zip(texts, results, strict=True):
        assert np.array_equal(result.proba, expected([text])) and result.latency_ms >= 5.0
    assert sorted(t for call in model.calls for t in call) == sorted(texts)
    assert max(map(len, model.calls)) == 8 and len(model.calls) < 400 / 3
    calls = metrics.registry.get_sample_value("flywheel_serving_batch_texts_count")
    assert calls == len(model.calls) and metrics.registry.get_sample_value("flywheel_serving_batch_texts_sum") == 400
    assert metrics.registry.get_sample_value("flywheel_serving_batch_queue_seconds_count") == 400


def test_two_models_in_one_gather_never_share_rows(batcher: MicroBatcher) -> None:
    champion, canary = Fake(), Fake(flip=True)
    _blocker, gate = held(batcher)
    futures = [(batcher.submit(canary if i % 2 else champion, [f"m-{i}"]), i) for i in range(8)]
    futures.append((batcher.submit(champion, ["m-100", "m-101"]), -1))  # would overflow: waits for the next gather
    gate.set()
    for future, i in futures[:-1]:
        assert np.array_equal(future.result(5).proba, expected([f"m-{i}"], flip=bool(i % 2)))
    assert np.array_equal(futures[-1][0].result(5).proba, expected(["m-100", "m-101"]))
    assert champion.calls == [["m-0", "m-2", "m-4", "m-6"], ["m-100", "m-101"]]
    assert canary.calls == [["m-1", "m-3", "m-5", "m-7"]]


def test_an_error_fails_only_its_group_and_the_worker_goes_on(batcher: MicroBatcher) -> None:
    good, bad = Fake(), Fake(fail=True)
    _blocker, gate = held(batcher)
    ok = [batcher.submit(good, [f"g-{i}"]) for i in range(3)]
    failing = [batcher.submit(bad, [f"b-{i}"]) for i in range(3)]
    gate.set()
    assert [f.result(5).proba[0, 0] for f in ok] == [0.0, 0.00001, 0.00002]
    for future in failing:
        with pytest.raises(ValueError, match="broken"):
            future.result(5)
    assert len(bad.calls) == 1 and len(good.calls) == 1
    assert batcher.predict(good, ["g-7"]).proba[0, 0] == 0.00007


def test_a_job_larger_than_max_texts_runs_alone_in_one_call(batcher: MicroBatcher) -> None:
    model = Fake()
    texts = [f"big-{i}" for i in range(20)]
    assert np.array_equal(batcher.predict(model, texts).proba, expected(texts))
    assert model.calls == [texts]


def test_close_finishes_queued_work_then_refuses_new_jobs(metrics: ServingMetrics) -> None:
    batcher = MicroBatcher(metrics, max_texts=4, wait_ms=1000.0)
    with pytest.raises(BatcherClosed, match="not started"):
        batcher.submit(Fake(), ["x-1"])
    batcher.start()
    model = Fake()
    futures = [batcher.submit(model, [f"q-{i}"]) for i in range(10)]
    started = time.perf_counter()
    batcher.close(5.0)
    assert time.perf_counter() - started < 1.0  # closed: the 1 s gather wait is not waited out
    assert [f.result(0).proba[0, 0] for f in futures] == [i / 100_000 for i in range(10)]
    with pytest.raises(BatcherClosed, match="shutting down") as refused:
        batcher.submit(model, ["late-1"])
    assert refused.value.status == 503


def test_close_with_a_stuck_model_fails_pending_futures_and_never_hangs(metrics: ServingMetrics) -> None:
    batcher = MicroBatcher(metrics, max_texts=4, wait_ms=1.0)
    batcher.start()
    blocker, gate = held(batcher)
    queued = [batcher.submit(Fake(), [f"p-{i}"]) for i in range(6)]
    started = time.perf_counter()
    batcher.close(0.2)
    assert time.perf_counter() - started < 1.0
    done, _ = wait(queued, 0)
    assert len(done) == 6
    for future in queued:
        with pytest.raises(BatcherClosed):
            future.result(0)
    gate.set()  # the stuck call ends later: its result has nowhere to go, and nothing raises
    assert blocker.calls == [["gate-0"]]


class InParts(Fake):
    """A :class:`Fake` answering a row at a time, in its texts' order; ``fail_after`` rows, it raises."""

    def __init__(self, *, fail_after: int | None = None, twice: bool = False) -> None:
        super().__init__()
        self.fail_after, self.twice = fail_after, twice

    def predict_proba_parts(self, texts: Sequence[str]) -> Iterator[tuple[list[int], Probabilities]]:
        proba = self.predict_proba(texts)
        for row in range(len(texts)):
            if row == self.fail_after:
                raise ValueError("this model broke half-way")
            yield [row], proba[row:row + 1]
            if self.twice:  # a broken model: the same row again
                yield [row], proba[row:row + 1]


def test_a_model_failing_half_way_fails_only_the_jobs_it_had_not_answered(batcher: MicroBatcher,
                                                                         metrics: ServingMetrics) -> None:
    model = InParts(fail_after=3)
    _blocker, gate = held(batcher)
    futures = [batcher.submit(model, texts) for texts in (["h-0", "h-1"], ["h-2"], ["h-3"], ["h-4", "h-5"])]
    gate.set()
    assert np.array_equal(futures[0].result(5).proba, expected(["h-0", "h-1"]))
    assert np.array_equal(futures[1].result(5).proba, expected(["h-2"]))
    for future in futures[2:]:
        with pytest.raises(ValueError, match="half-way"):
            future.result(5)
    assert model.calls == [["h-0", "h-1", "h-2", "h-3", "h-4", "h-5"]]  # one call for the whole gather
    assert metrics.registry.get_sample_value("flywheel_serving_batch_predict_seconds_count") == 1  # the gate's
    assert batcher.predict(InParts(), ["h-7"]).proba[0, 0] == 0.00007  # the worker goes on


def test_a_model_answering_a_row_twice_fails_the_jobs_left_with_a_clear_error(batcher: MicroBatcher) -> None:
    model = InParts(twice=True)
    _blocker, gate = held(batcher)
    first, second = batcher.submit(model, ["d-0"]), batcher.submit(model, ["d-1"])
    gate.set()
    assert np.array_equal(first.result(5).proba, expected(["d-0"]))
    with pytest.raises(ServingError, match="each row once"):
        second.result(5)


# -- with real model kinds -----------------------------------------------------------------------
def loaded(model: MiniLMHead | TfidfLogReg, version: str) -> LoadedModel:
    return LoadedModel(ServedVersion(version, f"1.0.{version}", model.kind, "mem://", "0" * 64), model,
                       datetime.now(UTC), 0.0)


def test_heads_through_the_batcher_answer_what_they_answer_alone(batcher: MicroBatcher) -> None:
    corpus = rows("vader_movies")[:300]
    texts, labels = [r.text for r in corpus], [r.label for r in corpus]
    embedder = Embedder(HashingEncoder())
    one = loaded(MiniLMHead(epochs=3).use(embedder).fit(texts, labels), "1")
    two = loaded(MiniLMHead(epochs=3, hidden=8).use(embedder).fit(texts, labels), "2")
    asked = [r.text for r in rows("vader_tweets")[:240]]
    want = {"1": one.predict_proba(asked), "2": two.predict_proba(asked)}

    def ask(i: int) -> tuple[int, str, Batched]:
        model = one if i % 3 else two
        return i, model.version, batcher.predict(model, [asked[i]])

    with ThreadPoolExecutor(24) as pool:
        for i, version, result in pool.map(ask, range(len(asked))):
            assert np.allclose(result.proba, want[version][i:i + 1], atol=1e-6)


def test_only_kinds_that_batch_go_through_the_batcher(metrics: ServingMetrics) -> None:
    corpus = rows("vader_movies")[:200]
    texts, labels = [r.text for r in corpus], [r.label for r in corpus]
    tfidf = loaded(TfidfLogReg().fit(texts, labels), "1")
    head = loaded(MiniLMHead(epochs=2).use(Embedder(HashingEncoder())).fit(texts, labels), "2")
    assert not TfidfLogReg.batches and MiniLMHead.batches
    stopped = MicroBatcher(metrics)  # never started: whatever goes through it is refused
    [scored] = score(tfidf, ["fine"], stopped)
    assert scored.label in labels and scored.latency_ms > 0
    with pytest.raises(BatcherClosed):
        score(head, ["fine"], stopped)
    assert score(head, ["fine"])[0].probabilities == pytest.approx(
        dict(zip(head.model.labels, head.predict_proba(["fine"])[0], strict=True)))


def test_the_pod_cache_counts_hits_and_misses_and_zero_entries_is_no_cache(metrics: ServingMetrics) -> None:
    fake = HashingEncoder()
    embedder = Embedder(fake, MeteredEmbeddingCache(100, metrics))
    embedder.embed(["a", "b", "a"])
    embedder.embed(["a", "c"])
    hits = metrics.registry.get_sample_value("flywheel_serving_embedding_cache_total", {"result": "hit"})
    misses = metrics.registry.get_sample_value("flywheel_serving_embedding_cache_total", {"result": "miss"})
    assert (hits, misses, fake.texts_encoded) == (1, 3, 3)
    none = Embedder(fake, MeteredEmbeddingCache(0, ServingMetrics()))
    none.embed(["a"])
    none.embed(["a"])
    assert fake.texts_encoded == 5


# -- on the real encoder: the ONNX graph a minilm-head artifact ships ------------------------------
@pytest.fixture(scope="module")
def onnx_head() -> MiniLMHead:
    encoder = shared_encoder()
    graph = OnnxEncoder(exported(encoder), encoder_id=encoder.encoder_id, dim=encoder.dim)
    corpus = rows("vader_movies")[:150]
    head = MiniLMHead(epochs=3, precision="fp32").use(Embedder(graph))
    return head.fit([r.text for r in corpus], [r.label for r in corpus])


def long_text(count: int = 40) -> str:
    """Real tweets run together: well over the encoder's 256 tokens (truncated there)."""
    return " ".join(str(r.text) for r in rows("vader_tweets")[-count:])


def test_parts_are_the_rows_of_predict_proba_bit_for_bit_shortest_first(onnx_head: MiniLMHead) -> None:
    tweets = [str(r.text) for r in rows("vader_tweets")[1000:1040]]
    graph = onnx_head.embedder.encoder
    assert isinstance(graph, OnnxEncoder)
    mixed = [long_text(), *tweets[7:20], long_text(30), tweets[7]]  # two long texts; one tweet twice
    for batch in (tweets[:1], tweets[:7], mixed, tweets[20:40]):
        onnx_head.use(Embedder(graph, MemoryEmbeddingCache(0)))  # no cache: every part is a length bucket
        want = onnx_head.predict_proba(batch)
        parts = list(onnx_head.predict_proba_parts(batch))
        assert sorted(row for rows_, _ in parts for row in rows_) == list(range(len(batch)))
        for rows_, proba in parts:
            assert np.array_equal(proba, want[rows_])  # bit for bit
    assert len(parts) > 1 and len(list(onnx_head.predict_proba_parts([]))) == 0
    onnx_head.use(Embedder(graph, MemoryEmbeddingCache(0)))
    parts = list(onnx_head.predict_proba_parts(mixed))
    assert sorted(parts[-1][0]) == [0, 14] and all(0 not in rows_ for rows_, _ in parts[:-1])  # long ones last
    assert any({1, 15} <= set(rows_) for rows_, _ in parts)  # the tweet asked twice: encoded once, both rows


def test_a_short_job_is_answered_before_a_long_job_of_its_batch_finishes(onnx_head: MiniLMHead,
                                                                         batcher: MicroBatcher,
                                                                         metrics: ServingMetrics) -> None:
    graph = onnx_head.embedder.encoder
    onnx_head.use(Embedder(graph, MemoryEmbeddingCache()))
    model = loaded(onnx_head, "1")
    tweets = [str(r.text) for r in rows("vader_tweets")[2000:2003]]
    model.predict_proba([tweets[2]])  # cached before: answered with no encoder call at all
    jobs: dict[str, list[str]] = {"long": [long_text()], "short": [tweets[0]], "cached": [tweets[2]],
                                  "both": [tweets[1], long_text(30)]}
    answered: list[tuple[str, list[str]]] = []  # in the order the futures were resolved, with those still open

    def record(name: str) -> Callable[[Future[Batched]], None]:
        return lambda _: answered.append((name, [n for n, f in futures.items() if not f.done()]))

    _blocker, gate = held(batcher)
    futures = {name: batcher.submit(model, texts) for name, texts in jobs.items()}
    for name, future in futures.items():
        future.add_done_callback(record(name))
    gate.set()
    results = {name: future.result(30) for name, future in futures.items()}
    assert answered == [("cached", ["long", "short", "both"]), ("short", ["long", "both"]), ("long", ["both"]),
                        ("both", [])]
    assert results["short"].latency_ms < results["long"].latency_ms
    assert metrics.registry.get_sample_value("flywheel_serving_batch_texts_sum") == 1 + 5  # the gate's, then one
    assert metrics.registry.get_sample_value("flywheel_serving_batch_texts_count") == 2  # call for all four jobs
    want = model.predict_proba([text for texts in jobs.values() for text in texts])  # today's one-shot answer
    assert np.array_equal(np.vstack([results[name].proba for name in jobs]), want)  # bit for bit


# -- through the real app, on the real encoder ---------------------------------------------------
LENIENT = TrainerConfig.model_validate({  # a busy shared CPU must not fail the gates' latency budget
    "gates": {"behaviour": {"latency_budget_ms": 600_000, "min_pass_rate": {"invariance": 0, "directional": 0,
                                                                            "mft": 0}}},
    "promotion": {"mode": "direct"}})


def test_concurrent_predict_on_a_minilm_champion_matches_unbatched_predict_proba(
        settings: FlywheelSettings, db_url: str) -> None:
    with lifecycle(settings, settings.kafka_connection(), db_url, LENIENT) as lc:
        result = lc.trainer.bootstrap(rows("vader_movies")[:300], source="vader_movies.csv", kind="minilm-head")
        assert result.status == "promoted", result.reason
        info = lc.registry.champion()
        assert info is not None
        directory = Path(lc.registry.fetch(info.version))
    app = create_app(settings.model_copy(update={"predict_batch_wait_ms": 20.0}), database_url=db_url)
    texts = [r.text for r in rows("vader_tweets")[:64]]
    with TestClient(app, raise_server_exceptions=False) as client:
        pod = services(client)
        assert pod.runtime.wait_live(info.version, 60)
        champion = pod.runtime.deployment.champion
        assert champion is not None and isinstance(champion.model, MiniLMHead)
        assert isinstance(champion.model.embedder.cache, MeteredEmbeddingCache)  # the pod's, not the default
        with ThreadPoolExecutor(32) as pool:
            answers = list(pool.map(lambda t: client.post("/predict", json={"text": t}), texts))
        metrics = client.get("/metrics").text
        calls = pod.metrics.registry.get_sample_value("flywheel_serving_batch_texts_count") or 0
        batched = pod.metrics.registry.get_sample_value("flywheel_serving_batch_texts_sum") or 0

    assert [a.status_code for a in answers] == [200] * len(texts)
    assert batched == len(texts) and calls < len(texts) / 2, (calls, batched)
    assert 'flywheel_serving_embedding_cache_total{result="miss"}' in metrics
    alone = load_model(directory)
    assert isinstance(alone, MiniLMHead)
    alone.use(Embedder(shared_encoder(), MemoryEmbeddingCache(0)))  # no cache: each text encoded on its own
    for text, answer in zip(texts, answers, strict=True):
        body = answer.json()
        assert body["version"] == info.version
        want = dict(zip(alone.labels, alone.predict_proba([text])[0], strict=True))
        assert body["probabilities"] == pytest.approx(want, abs=1e-5)


def test_two_workers_run_two_batches_at_once_and_close_fails_nothing_they_finished(metrics: ServingMetrics) -> None:
    batcher = MicroBatcher(metrics, max_texts=4, wait_ms=1.0, workers=2)
    batcher.start()
    gate = threading.Event()
    first, second = Fake(gate=gate), Fake(gate=gate)
    a = batcher.submit(first, ["a-1"])
    assert first.entered.wait(5)  # one worker is held in this call: the other takes the next job
    b = batcher.submit(second, ["b-2"])
    assert second.entered.wait(5)  # both calls are running at once
    gate.set()
    assert np.array_equal(a.result(5).proba, expected(["a-1"])) and np.array_equal(b.result(5).proba, expected(["b-2"]))
    model = Fake(delay=0.002)
    texts = [f"t-{i}" for i in range(200)]
    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(lambda t: batcher.predict(model, [t]), texts))
    assert all(np.array_equal(r.proba, expected([t])) for t, r in zip(texts, results, strict=True))
    batcher.close(1.0)
    with pytest.raises(BatcherClosed):
        batcher.submit(model, ["late-3"])


def test_the_async_path_awaits_the_batcher_and_scores_inline_kinds_on_the_loop(metrics: ServingMetrics) -> None:
    corpus = rows("vader_movies")[:200]
    texts, labels = [r.text for r in corpus], [r.label for r in corpus]
    tfidf = loaded(TfidfLogReg().fit(texts, labels), "1")
    head = loaded(MiniLMHead(epochs=2).use(Embedder(HashingEncoder())).fit(texts, labels), "2")
    batcher = MicroBatcher(metrics, workers=2)
    batcher.start()
    try:
        [inline] = asyncio.run(score_async(tfidf, ["fine"], batcher))
        [batched] = asyncio.run(score_async(head, ["fine"], batcher))
    finally:
        batcher.close(1.0)
    assert inline.probabilities == pytest.approx(dict(zip(tfidf.model.labels, tfidf.predict_proba(["fine"])[0],
                                                          strict=True)))
    assert batched.probabilities == pytest.approx(dict(zip(head.model.labels, head.predict_proba(["fine"])[0],
                                                           strict=True)))


def test_a_worker_waits_for_companions_only_while_every_other_worker_is_busy(metrics: ServingMetrics) -> None:
    batcher = MicroBatcher(metrics, max_texts=8, wait_ms=2000.0, workers=2)
    batcher.start()
    gate = threading.Event()
    try:
        model = Fake()
        started = time.perf_counter()
        alone = batcher.predict(model, ["a-1"])  # the other worker runs no batch: no wait for companions
        assert time.perf_counter() - started < 1.0 and alone.latency_ms < 1000.0
        assert np.array_equal(alone.proba, expected(["a-1"]))
        blocker = Fake(gate=gate)
        held_job = batcher.submit(blocker, ["gate-0"])
        assert blocker.entered.wait(5)  # one worker is busy, the other takes the next job and waits
        batched = Fake()
        first = batcher.submit(batched, ["b-1"])
        time.sleep(0.2)
        second = batcher.submit(batched, ["b-2"])
        assert np.array_equal(first.result(5).proba, expected(["b-1"]))
        assert np.array_equal(second.result(5).proba, expected(["b-2"]))
        assert batched.calls == [["b-1", "b-2"]]  # one call: it waited, the other worker being busy
        gate.set()
        assert np.array_equal(held_job.result(5).proba, expected(["gate-0"]))
    finally:
        gate.set()
        batcher.close(1.0)
