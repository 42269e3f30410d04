"""A pod serving a text-generation model on the real broker, Postgres and MLflow store, with the real
``smollm2-lora`` kind on the ``tiny-random`` base: ``/v1/models/{name}/generate`` answers and publishes a
version 2 prediction event, streams server-sent events, refuses the classifier's routes (and the
classifier refuses it), takes a generator's feedback, hot-swaps only the adapter (the base is loaded once
per pod), refuses with 429 + Retry-After when its queue is full and answers 504 (or a stream ending with
``finish_reason: timeout``) past its deadline, and exports the p95 generation time per model version."""

from __future__ import annotations

import json
import shutil
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry
from psycopg.types.json import Jsonb

from core import db
from core.db import session_connector
from core.settings import FlywheelSettings
from flywheel import models
from kinds.base_models import TINY, base_dir, load_base, prepare
from kinds.generation import GeneratorKind, GeneratorResources, Pair, Prompt
from kinds.smollm2_lora import SmolLM2LoRA
from registry import Lineage, ModelRegistry, ModelVersionInfo, open_from_settings
from registry.actions import ModelActions
from registry.announce import ModelAnnouncer, model_event
from schemas.events import FeedbackEventV2, GenerationInput, GenerationOutput, PredictionEventV2
from serving import create_app
from serving.canary import (
    CanaryConfig,
    CanaryController,
    CanaryMetrics,
    GenerationCanaryConfig,
    WatchdogConfig,
    controller_for,
)
from serving.pod import Pod
from serving.sequential import SequentialConfig
from streams.kafka import CheckedProducer, admin, create_topics, producer_config
from tasks import ModelSpec, ModelStore, parse_spec

from .conftest import read_topic, wait_for

NPC = {"name": "npc", "task": "text-generation"}
PAIRS = [Pair(Prompt("Hello, who are you?", persona="a blacksmith"), "I forge swords for the king."),
         Pair(Prompt("What do you sell?", persona="a blacksmith"), "Swords, shields and horseshoes."),
         Pair(Prompt("Where is the inn?", context="village square"), "Down the road, past the well."),
         Pair(Prompt("Goodbye!"), "Safe travels, friend.")]
ASK = {"prompt": "Hello, who are you?", "persona": "a blacksmith", "max_tokens": 8, "user_id": "player-1"}


@pytest.fixture(scope="session")
def tiny_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny-random base prepared once per session (a copy goes into each test's data dir)."""
    data_dir = tmp_path_factory.mktemp("bases")
    prepare(TINY, data_dir)
    return base_dir(TINY, data_dir)


@pytest.fixture
def gen_settings(settings: FlywheelSettings, tiny_base: Path) -> FlywheelSettings:
    shutil.copytree(tiny_base, base_dir(TINY, settings.data_dir))
    return settings.model_copy(update={"serve_models": ("sentiment", "npc"), "generate_timeout_s": 20.0})


@pytest.fixture
def spec(gen_settings: FlywheelSettings, db_url: str) -> ModelSpec:
    """Declared straight into the store: `flywheel models create` learns generator kinds with the trainer
    side of issue 20 (wt-gentrain); serving reads the store only."""
    with session_connector(db_url)() as conn:
        models.declare(conn, gen_settings)
        ModelStore(conn).put(parse_spec(NPC), source="test")
        conn.commit()
    return parse_spec(NPC)


@pytest.fixture
def npc(gen_settings: FlywheelSettings, db_url: str, spec: ModelSpec) -> Iterator[tuple[ModelRegistry, ModelAnnouncer]]:
    """The npc model's registry and the announcer of the models topic."""
    kafka = gen_settings.kafka_connection()
    create_topics(admin(kafka), gen_settings.topics.all(), 1)
    producer = CheckedProducer(producer_config(kafka))
    registry = open_from_settings(gen_settings.model_copy(update={"model_name": "npc", "labels": ()}), db_url)
    try:
        yield registry, ModelAnnouncer(producer, gen_settings.topics.models)
    finally:
        producer.flush(10.0)


def register(registry: ModelRegistry, settings: FlywheelSettings, tmp_path: Path, seed: int) -> ModelVersionInfo:
    """An adapter trained on the tiny base (a few steps) and registered."""
    base = load_base(TINY, settings.data_dir)
    kind = SmolLM2LoRA(base=TINY, r=4, alpha=8, max_steps=2, batch_size=2, seed=seed)
    kind.bind(GeneratorResources(base)).fit(PAIRS)
    directory = tmp_path / f"adapter-{uuid.uuid4().hex[:6]}"
    kind.save(directory)
    return registry.register(directory, mode="full", metrics={"weighted_score": 0.1},
                             lineage=Lineage(data_hash=uuid.uuid4().hex, watermark=0, sample_count=len(PAIRS)))


def promote(announcer: ModelAnnouncer, info: ModelVersionInfo, action: str = "promote", traffic: float = 1.0) -> None:
    announcer.publish(model_event(info, "npc", action, traffic, "test"))  # type: ignore[arg-type]


@pytest.fixture
def client(gen_settings: FlywheelSettings, db_url: str, npc: tuple[ModelRegistry, ModelAnnouncer],
           tmp_path: Path) -> Iterator[TestClient]:
    registry, announcer = npc
    info = register(registry, gen_settings, tmp_path, seed=1)
    promote(announcer, info)
    with TestClient(create_app(gen_settings, database_url=db_url), raise_server_exceptions=False) as found:
        assert pod(found).get("npc").runtime.wait_live(info.version, 60)
        yield found


def pod(client: TestClient) -> Pod:
    found: Pod = client.app.state.pod  # type: ignore[attr-defined]
    return found


def refused(response: Any, status: int, code: str, *needles: str) -> dict[str, Any]:
    assert response.status_code == status, (response.status_code, response.text)
    payload: dict[str, Any] = response.json()
    assert set(payload) == {"error", "detail"} and payload["error"] == code, payload
    for needle in needles:
        assert needle in payload["detail"], (needle, payload)
    return payload


def generator(client: TestClient) -> GeneratorKind:
    champion = pod(client).get("npc").runtime.deployment.champion
    assert champion is not None
    return champion.generator


def test_generate_answers_publishes_its_event_and_a_new_version_swaps_only_the_adapter(
        client: TestClient, gen_settings: FlywheelSettings, npc: tuple[ModelRegistry, ModelAnnouncer],
        tmp_path: Path, db_url: str) -> None:
    response = client.post("/v1/models/npc/generate", json=ASK)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert set(answer) == {"prediction_id", "text", "model", "model_version", "semver", "variant", "latency_ms",
                           "prompt_tokens", "completion_tokens", "finish_reason"}
    assert answer["model"] == "npc" and answer["variant"] == "champion" and answer["model_version"] == "1"
    assert answer["prompt_tokens"] > 5 and 1 <= answer["completion_tokens"] <= 8
    assert answer["finish_reason"] in ("stop", "length") and answer["latency_ms"] > 0
    # the same prompt greedily decoded by the same adapter outside the pod gives the same text
    [direct] = generator(client).generate([Prompt(ASK["prompt"], persona=ASK["persona"])], max_new_tokens=8)
    assert direct.text == answer["text"] and direct.completion_tokens == answer["completion_tokens"]

    events = [PredictionEventV2.model_validate_json(v) for v in
              read_topic(gen_settings.kafka_connection(), gen_settings.topics.predictions, 1)]
    [event] = [e for e in events if e.prediction_id == answer["prediction_id"]]
    assert event.model == "npc" and event.model_version == "1" and event.user_id == "player-1"
    assert event.input == GenerationInput(prompt=ASK["prompt"], persona=ASK["persona"])
    assert event.output == GenerationOutput(text=answer["text"], prompt_tokens=answer["prompt_tokens"],
                                            completion_tokens=answer["completion_tokens"],
                                            finish_reason=answer["finish_reason"])

    # data-to-deploy: the pod records the first answer of version 1 (a background write, as for a predict)
    assert first_served(db_url, "npc", "1")

    # hot swap: version 2's adapter goes onto the very same base object (loaded once per pod)
    first = generator(client)
    registry, announcer = npc
    second_info = register(registry, gen_settings, tmp_path, seed=2)
    promote(announcer, second_info)
    runtime = pod(client).get("npc").runtime
    assert runtime.wait_live(second_info.version, 60)
    second = generator(client)
    assert second is not first and isinstance(second, SmolLM2LoRA) and isinstance(first, SmolLM2LoRA)
    assert second.base is first.base is load_base(TINY, gen_settings.data_dir)
    after = client.post("/v1/models/npc/generate", json=ASK).json()
    assert after["model_version"] == second_info.version and after["semver"] == second_info.semver


def test_predict_and_generate_refuse_each_others_models(client: TestClient) -> None:
    refused(client.post("/v1/models/npc/predict", json={"text": "hello"}), 422, "wrong_task",
            "text-generation", "/v1/models/npc/generate")
    refused(client.post("/v1/models/sentiment/generate", json={"prompt": "hello"}), 422, "wrong_task",
            "text-classification", "/v1/models/sentiment/predict")
    refused(client.post("/v1/models/npc/generate", json={**ASK, "max_tokens": 5000}), 422, "invalid_request",
            "max_tokens")
    refused(client.post("/v1/models/npc/generate", json={**ASK, "max_tokens": 300}), 422, "invalid_request",
            "max_tokens", "FLYWHEEL_GENERATE_MAX_TOKENS=256")
    refused(client.post("/v1/models/npc/generate", json={"prompt": ""}), 422, "invalid_request", "prompt")


def test_a_generator_takes_ratings_corrections_and_signals_and_a_classifier_does_not(
        client: TestClient, gen_settings: FlywheelSettings) -> None:
    pid = client.post("/v1/models/npc/generate", json=ASK).json()["prediction_id"]
    sent = [{"prediction_id": pid, "rating": 2, "correction": "I am Brom, the smith."},
            {"prediction_id": pid, "signal": "continued"}, {"prediction_id": pid, "thumbs": "up", "rating": 5}]
    ids = []
    for body in sent:
        response = client.post("/v1/models/npc/feedback", json=body)
        assert response.status_code == 202, response.text
        ids.append(response.json()["feedback_id"])
    refused(client.post("/v1/models/npc/feedback", json={"prediction_id": pid, "label": "positive"}), 422,
            "invalid_request", "label:", "text-generation")
    refused(client.post("/v1/models/sentiment/feedback", json={"prediction_id": "p1", "rating": 4}), 422,
            "invalid_request", "rating:", "text-classification")
    refused(client.post("/v1/models/sentiment/feedback", json={"prediction_id": "p1", "signal": "abandoned"}), 422,
            "invalid_request", "signal:")
    refused(client.post("/v1/models/npc/feedback", json={"prediction_id": pid, "rating": 6}), 422,
            "invalid_request", "rating")
    refused(client.post("/v1/models/npc/feedback", json={"prediction_id": pid, "rating": 4.5}), 422,
            "invalid_request", "rating")
    refused(client.post("/v1/models/npc/feedback", json={"prediction_id": pid}), 422, "invalid_request",
            "one of label, thumbs, rating, correction or signal")
    landed = [FeedbackEventV2.model_validate_json(v) for v in
              read_topic(gen_settings.kafka_connection(), gen_settings.topics.feedback, 3)]
    by_id = {e.feedback_id: e for e in landed}
    assert (by_id[ids[0]].rating, by_id[ids[0]].correction) == (2, "I am Brom, the smith.")
    assert by_id[ids[1]].signal == "continued" and by_id[ids[2]].thumbs == "up" and by_id[ids[2]].rating == 5
    assert {by_id[i].model for i in ids} == {"npc"}


def sse(text: str) -> list[tuple[str, dict[str, Any]]]:
    found = []
    for block in text.strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.splitlines())
        found.append((lines["event"], json.loads(lines["data"])))
    return found


def test_a_stream_sends_pieces_then_the_whole_answer(client: TestClient, gen_settings: FlywheelSettings) -> None:
    with client.stream("POST", "/v1/models/npc/generate", json={**ASK, "stream": True, "max_tokens": 12}) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        events = sse(response.read().decode())
    *tokens, (last, done) = events
    assert tokens and {name for name, _ in tokens} == {"token"} and last == "done", events
    assert "".join(t["text"] for _, t in tokens) == done["text"]
    [direct] = generator(client).generate([Prompt(ASK["prompt"], persona=ASK["persona"])], max_new_tokens=12)
    assert done["text"] == direct.text and done["completion_tokens"] >= 1
    assert done["finish_reason"] in ("stop", "length") and done["model_version"] == "1"
    published = [PredictionEventV2.model_validate_json(v) for v in
                 read_topic(gen_settings.kafka_connection(), gen_settings.topics.predictions, 1)]
    assert any(e.prediction_id == done["prediction_id"] and isinstance(e.output, GenerationOutput)
               and e.output.text == done["text"] for e in published)


@pytest.fixture
def busy_client(gen_settings: FlywheelSettings, db_url: str, npc: tuple[ModelRegistry, ModelAnnouncer],
                tmp_path: Path) -> Iterator[TestClient]:
    """One worker, no waiting room, a 1.5 s deadline."""
    registry, announcer = npc
    info = register(registry, gen_settings, tmp_path, seed=1)
    promote(announcer, info)
    tight = gen_settings.model_copy(update={"generate_workers": 1, "generate_queue": 0, "generate_timeout_s": 1.5})
    with TestClient(create_app(tight, database_url=db_url), raise_server_exceptions=False) as found:
        assert pod(found).get("npc").runtime.wait_live(info.version, 60)
        yield found


def test_a_full_pod_refuses_with_429_and_a_late_answer_is_a_504_or_a_timed_out_stream(
        busy_client: TestClient, gen_settings: FlywheelSettings) -> None:
    client = busy_client
    base = load_base(TINY, gen_settings.data_dir)
    results: dict[str, Any] = {}

    def first() -> None:
        results["first"] = client.post("/v1/models/npc/generate", json=ASK)

    with base.lock:  # the base's forward passes wait: the one worker is stuck behind this
        worker = threading.Thread(target=first)
        worker.start()
        services = pod(client).get("npc")
        wait_for(lambda: services.generation.admitted == 1, "the first generation to be admitted")
        busy = client.post("/v1/models/npc/generate", json=ASK)
        refused(busy, 429, "overloaded", "FLYWHEEL_GENERATE_WORKERS")
        assert int(busy.headers["Retry-After"]) >= 1
        worker.join(10)
    late = results["first"]
    detail = refused(late, 504, "generation_timeout", "FLYWHEEL_GENERATE_TIMEOUT_S=1.5")["detail"]
    assert int(late.headers["Retry-After"]) >= 1
    wait_for(lambda: services.generation.admitted == 0, "the late generation to finish in the background")
    # the late answer is still published, as a timed-out prediction of its variant (the canary's error rate)
    late_id = detail.split()[1].rstrip(":")
    published = [PredictionEventV2.model_validate_json(v) for v in
                 read_topic(gen_settings.kafka_connection(), gen_settings.topics.predictions, 1)]
    [event] = [e for e in published if e.prediction_id == late_id]
    assert isinstance(event.output, GenerationOutput) and event.output.finish_reason == "timeout"
    assert event.output.completion_tokens >= 1  # it ran to its end in the background

    with base.lock, client.stream("POST", "/v1/models/npc/generate", json={**ASK, "stream": True}) as response:
        assert response.status_code == 200
        started = time.monotonic()
        events = sse(response.read().decode())
        assert time.monotonic() - started < 10
    assert events[-1][0] == "done" and events[-1][1]["finish_reason"] == "timeout", events
    # the cut stream's generation stops at its next piece (the iterator is closed) and frees the worker
    wait_for(lambda: services.generation.admitted == 0, "the cut stream's generation to stop")
    assert client.post("/v1/models/npc/generate", json=ASK).status_code == 200

    metrics = client.get("/metrics").text
    assert 'flywheel_serving_generate_outcomes_total{finish="overloaded",model="npc",variant="champion"} 1.0' \
        in metrics
    assert 'flywheel_serving_generate_outcomes_total{finish="timeout",model="npc",variant="champion"} 2.0' in metrics


def test_a_generation_that_raises_is_a_500_with_its_reason_a_counted_error_and_a_published_prediction(
        client: TestClient, gen_settings: FlywheelSettings, monkeypatch: pytest.MonkeyPatch) -> None:
    """A fault injected into the pod's loaded generator (its generate and stream raise): the client gets a
    500 naming the prediction, the version and the reason (a stream: an ``error`` event), the outcome is
    counted, and the prediction is published with ``finish_reason`` ``error``: what the canary's error rate
    counts (test_a_generator_canary_is_retired_when_more_than_1_percent_of_its_answers_fail)."""
    def broken(*_args: Any, **_kwargs: Any) -> Any:
        raise RuntimeError("the adapter's weights went missing")

    monkeypatch.setattr(generator(client), "generate", broken)
    monkeypatch.setattr(generator(client), "stream", broken)
    detail = refused(client.post("/v1/models/npc/generate", json=ASK), 500, "generation_failed", "version 1",
                     "RuntimeError: the adapter's weights went missing")["detail"]
    failed_id = detail.split()[1].rstrip(":")
    with client.stream("POST", "/v1/models/npc/generate", json={**ASK, "stream": True}) as response:
        events = sse(response.read().decode())
    assert events[-1][0] == "error" and events[-1][1]["error"] == "generation_failed", events
    assert "weights went missing" in events[-1][1]["detail"]
    metrics = client.get("/metrics").text
    assert 'flywheel_serving_generate_outcomes_total{finish="error",model="npc",variant="champion"} 2.0' in metrics

    def failures() -> list[PredictionEventV2]:
        published = [PredictionEventV2.model_validate_json(v) for v in
                     read_topic(gen_settings.kafka_connection(), gen_settings.topics.predictions, 1)]
        return [e for e in published if isinstance(e.output, GenerationOutput) and e.output.finish_reason == "error"]

    wait_for(lambda: len(failures()) == 2, "both failed generations to be published")
    assert failed_id in {e.prediction_id for e in failures()}
    for event in failures():
        assert isinstance(event.output, GenerationOutput) and event.output.text == ""
        assert event.output.error is not None and "weights went missing" in event.output.error
        assert event.variant == "champion" and event.model_version == "1"


def test_the_p95_generation_time_is_exported_per_model_version_and_a_shadow_answers_copies(
        client: TestClient, gen_settings: FlywheelSettings, npc: tuple[ModelRegistry, ModelAnnouncer],
        tmp_path: Path) -> None:
    for i in range(5):
        assert client.post("/v1/models/npc/generate", json={**ASK, "prompt": f"Tell me tale {i}"}).status_code == 200
    # a canary at 0% traffic is a shadow: it answers a copy of each request, off the request path
    registry, announcer = npc
    shadow = register(registry, gen_settings, tmp_path, seed=3)
    promote(announcer, shadow, "canary", 0.0)
    runtime = pod(client).get("npc").runtime
    assert runtime.wait_for(lambda d, _e: d.shadow is not None and d.shadow.version == shadow.version, 60)
    served = client.post("/v1/models/npc/generate", json=ASK).json()
    assert served["variant"] == "champion" and served["model_version"] == "1"
    wait_for(lambda: any(e.prediction_id == f"{served['prediction_id']}-shadow" for e in (
        PredictionEventV2.model_validate_json(v) for v in
        read_topic(gen_settings.kafka_connection(), gen_settings.topics.predictions, 1))), "the shadow's event")
    [copy] = [e for e in (PredictionEventV2.model_validate_json(v) for v in read_topic(
        gen_settings.kafka_connection(), gen_settings.topics.predictions, 1))
        if e.prediction_id == f"{served['prediction_id']}-shadow"]
    assert copy.variant == "shadow" and copy.model_version == shadow.version
    metrics = client.get("/metrics").text
    p95 = [line for line in metrics.splitlines()
           if line.startswith('flywheel_serving_generate_p95_seconds{model="npc",version="1"}')]
    assert p95 and 0.0 < float(p95[0].split()[-1]) < 20.0, p95
    assert 'flywheel_serving_generate_seconds_count{model="npc",variant="champion",version="1"} 6.0' in metrics


@pytest.fixture(params=[1, 2, 0])
def threads_client(request: pytest.FixtureRequest, gen_settings: FlywheelSettings, db_url: str,
                   npc: tuple[ModelRegistry, ModelAnnouncer], tmp_path: Path) -> Iterator[TestClient]:
    """A pod with FLYWHEEL_GENERATE_THREADS 1, 2 (this machine has 2 cores: both are allowed) or 0 (auto)."""
    registry, announcer = npc
    info = register(registry, gen_settings, tmp_path, seed=1)
    promote(announcer, info)
    settings = gen_settings.model_copy(update={"generate_threads": request.param})
    with TestClient(create_app(settings, database_url=db_url), raise_server_exceptions=False) as found:
        assert pod(found).get("npc").runtime.wait_live(info.version, 60)
        yield found


def test_the_pods_generate_threads_are_what_the_served_forward_passes_run_on(
        threads_client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    """FLYWHEEL_GENERATE_THREADS reaches the forward passes of a served answer and of a stream: torch's
    intra-op count read inside the decode loop, on the pod's generation worker (and a stream's thread); 0
    (auto) is the count the pod's SpareCores gave for that call."""
    import torch

    import kinds.smollm2_lora as module
    from kinds._decode import decode as real
    from kinds._threads import SpareCores

    setting = pod(threads_client).get("npc").settings.generate_threads
    champion = generator(threads_client)
    assert isinstance(champion, SmolLM2LoRA)
    resources: GeneratorResources = champion._threads.__self__  # type: ignore[attr-defined]
    assert isinstance(resources.threads, SpareCores) == (setting == 0)
    seen: list[tuple[str, int, int]] = []

    def spy(*args: Any, **kwargs: Any) -> Any:
        decided = resources.threads._threads if isinstance(resources.threads, SpareCores) else setting
        seen.append((threading.current_thread().name, torch.get_num_threads(), decided))
        return real(*args, **kwargs)

    monkeypatch.setattr(module, "decode", spy)
    timed: list[tuple[int, int]] = []
    if isinstance(resources.threads, SpareCores):  # auto learns each call's decode time at the count it gave
        observe = resources.threads.observe

        def spy_observe(threads: int, steps: int, seconds: float) -> None:
            timed.append((threads, steps))
            observe(threads, steps, seconds)

        monkeypatch.setattr(resources.threads, "observe", spy_observe)
    assert threads_client.post("/v1/models/npc/generate", json=ASK).status_code == 200
    with threads_client.stream("POST", "/v1/models/npc/generate", json={**ASK, "stream": True}) as response:
        assert response.status_code == 200 and sse(response.read().decode())[-1][0] == "done"
    assert len(seen) == 2 and all(count == decided and 1 <= count <= 2 for _, count, decided in seen), seen
    if setting == 0:
        assert [threads for threads, _ in timed] == [decided for _, _, decided in seen], (timed, seen)
        assert all(steps >= 1 for _, steps in timed), timed
    assert seen[0][0].startswith("flywheel-generate") and seen[1][0] == "smollm2-lora-stream", seen
    gauge = [line for line in threads_client.get("/metrics").text.splitlines()
             if line.startswith('flywheel_serving_generate_threads{model="npc"}')]
    assert gauge and float(gauge[0].split()[-1]) == seen[-1][1], gauge


def test_the_openapi_document_describes_generate(client: TestClient) -> None:
    doc = client.get("/openapi.json").json()
    operation = doc["paths"]["/v1/models/{name}/generate"]["post"]
    assert {"200", "422", "429", "503", "504"} <= set(operation["responses"])
    assert "text/event-stream" in operation["responses"]["200"]["content"]
    body = doc["components"]["schemas"]["GenerateCreate"]["properties"]
    assert {"prompt", "context", "persona", "max_tokens", "temperature", "stop", "stream"} <= set(body)
    feedback = doc["components"]["schemas"]["ModelFeedbackCreate"]["properties"]
    assert {"rating", "correction", "signal", "thumbs", "label"} <= set(feedback)


# -- the canary of a generator: judged on ratings, retired on errors ---------------------------------
CANARY = CanaryConfig(interval_s=0.2, test=SequentialConfig(alpha=0.05, beta=0.2, effect=0.1, min_samples=100),
                      watchdog=WatchdogConfig(enabled=False),
                      generation=GenerationCanaryConfig(good_rating=4, max_error_rate=0.01, min_requests=100))


def land_generations(db_url: str, variant: str, version: str, n: int, *, good: int = 0, rated: int = 0,
                     timeouts: int = 0, failed: int = 0) -> None:
    """``n`` landed npc predictions served by ``version`` as ``variant`` (``timeouts`` of them cut at their
    deadline, the next ``failed`` raised); the first ``rated`` have joined feedback, ``good`` of those rated
    well (5, or thumbs up for every third) and the rest badly (2, or thumbs down)."""
    with db.connect(db_url) as conn, conn.cursor() as cur:
        for i in range(n):
            pid = uuid.uuid4().hex
            output = {"text": "Aye.", "prompt_tokens": 9, "completion_tokens": 2,
                      "finish_reason": "timeout" if i < timeouts else "error" if i < timeouts + failed else "stop"}
            cur.execute("INSERT INTO predictions (prediction_id, model, model_version, variant, input, output, "
                        "latency_ms, ts) VALUES (%s, 'npc', %s, %s, %s, %s, 10.0, now())",
                        (pid, version, variant, Jsonb({"prompt": "Hello"}), Jsonb(output)))
            if i >= rated:
                continue
            right = i < good
            rating, thumbs = (None, "up" if right else "down") if i % 3 == 0 else (5 if right else 2, None)
            cur.execute("INSERT INTO feedback (feedback_id, content_key, prediction_id, rating, thumbs, source, ts, "
                        "status, model, model_version, variant, received_at, resolved_at) VALUES (%s, %s, %s, %s, "
                        "%s, 'test', now(), 'joined', 'npc', %s, %s, now(), now())",
                        (uuid.uuid4().hex, uuid.uuid4(), pid, rating, thumbs, version, variant))
        conn.commit()


@pytest.fixture
def npc_actions(gen_settings: FlywheelSettings, npc: tuple[ModelRegistry, ModelAnnouncer], tmp_path: Path
                ) -> ModelActions:
    registry, announcer = npc
    actions = ModelActions(registry, announcer, "npc", gen_settings.topics.retrain)
    actions.promote(register(registry, gen_settings, tmp_path, seed=1).version, "test")
    return actions


def start_generator_canary(actions: ModelActions, settings: FlywheelSettings, tmp_path: Path) -> ModelVersionInfo:
    """What the trainer does for a generator: challenger alias, then a canary event at 5%."""
    info = register(actions.registry, settings, tmp_path, seed=2)
    actions.registry.mark_challenger(info.version, "test")
    actions.announcer.publish(model_event(actions.registry.get(info.version), "npc", "canary", 0.05, "test"))
    return info


def generator_controller(actions: ModelActions, settings: FlywheelSettings, db_url: str) -> CanaryController:
    return controller_for(settings.model_copy(update={"model_name": "npc", "labels": ()}), settings.kafka_connection(),
                          db_url, CANARY, actions=actions, offline_accuracy=lambda _: None,
                          metrics=CanaryMetrics(CollectorRegistry()))


def test_a_generator_canary_whose_ratings_fall_below_the_champions_is_retired(
        npc_actions: ModelActions, gen_settings: FlywheelSettings, db_url: str, tmp_path: Path) -> None:
    canary = start_generator_canary(npc_actions, gen_settings, tmp_path)
    land_generations(db_url, "champion", "1", 300, rated=300, good=240)  # 80% rated well
    land_generations(db_url, "canary", canary.version, 150, rated=150, good=75)  # 50%
    land_generations(db_url, "canary", canary.version, 50)  # unrated: not judged
    controller = generator_controller(npc_actions, gen_settings, db_url)
    assert controller.task == "text-generation"  # read from the model's declaration
    result = controller.tick()
    assert result.decision is not None and result.decision.verdict == "rollback", result.decision
    assert "75/150" in result.decision.reason and "240/300" in result.decision.reason
    assert [(a.action, a.version) for a in result.acted] == [("retire", canary.version)]
    assert "challenger" not in npc_actions.registry.aliases()


def test_a_generator_canary_is_retired_when_more_than_1_percent_of_its_answers_fail(
        npc_actions: ModelActions, gen_settings: FlywheelSettings, db_url: str, tmp_path: Path) -> None:
    canary = start_generator_canary(npc_actions, gen_settings, tmp_path)
    land_generations(db_url, "champion", "1", 100, timeouts=10)  # the champion's errors are not the canary's
    land_generations(db_url, "canary", canary.version, 120, timeouts=1)  # 0.83%: below the limit
    controller = generator_controller(npc_actions, gen_settings, db_url)
    assert controller.tick().acted == ()
    land_generations(db_url, "canary", canary.version, 80, failed=2)  # 3 of 200: 1.5% (a raised generation counts)
    result = controller.tick()
    assert [(a.action, a.version) for a in result.acted] == [("retire", canary.version)]
    assert "1.50%" in result.acted[0].reason and "3 of 200" in result.acted[0].reason
    assert "challenger" not in npc_actions.registry.aliases()
    assert npc_actions.registry.champion().version == "1"  # type: ignore[union-attr]


def first_served(db_url: str, model: str, version: str, timeout: float = 10.0) -> bool:
    """Whether ``version_first_served`` holds ``model``'s ``version`` within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    with db.connect(db_url, autocommit=True) as conn:
        while time.monotonic() < deadline:
            if conn.execute("SELECT 1 FROM version_first_served WHERE model = %s AND version = %s",
                            (model, version)).fetchone():
                return True
            time.sleep(0.1)
    return False
