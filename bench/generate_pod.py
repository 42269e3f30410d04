"""Generation latency of a serving pod: ``POST /v1/models/{name}/generate`` on the real SmolLM2-135M base.

One run on a fresh stack (embedded broker, a new database on the local Postgres): a ``text-generation``
model is declared, an adapter (``smollm2-lora``, r=8 on q/v, a few steps on chatterbot-corpus pairs) is
registered and announced as champion, and a pod (``serving.create_app``, in process, through the ASGI
test client: no network hop) hosts it. Then ``--requests`` sequential requests (one client: a generation
holds the pod's one worker anyway) with prompts from chatterbot-corpus, ``max_tokens`` ``--max-tokens``
(64), greedy. Reported: p50/p95 of the request time seen by the client (queue wait included), the pod's
own ``flywheel_serving_generate_p95_seconds`` gauge (generation time only), the completion-token counts
(an answer ending before 64 tokens is faster: ``p95_full_length_ms`` is over the answers that ran to
``max_tokens``), and how long the pod took to load the base + the first adapter and a second adapter (the
hot swap), the CPU and wall time per generated token, and the conditions (torch threads, one client,
the pod's workers; the host's load before and after). This in-process pod's generations run on
``FLYWHEEL_GENERATE_THREADS`` (its default; ``--requests 0`` skips this part). The machine's load counts:
wall times on a 2-core machine at load ~10-20 are 2-3x the CPU times.

Then, per intra-op thread count of ``--threads`` (default 1, 2 and 0 = auto: ``FLYWHEEL_GENERATE_THREADS``), a real
pod over HTTP: its own process (``bench/serve.py pod``: ``serving.app.serve``, uvicorn, as ``flywheel
serve`` runs it) hosting the same champion, and per concurrency of ``--concurrency`` (default 1, 2 and 4)
closed-loop clients (each sends its next request when its last one answered) sharing ``--http-requests``
requests (default 8 per level; the pod's queue holds them all, its deadline is 600 s): p50/p95 of the time
each request took (queue wait included), requests/s, completion tokens, and the pod process's CPU per
request (user + system of its threads, from /proc: the OpenMP threads' spinning counts) and the threads its
last generation ran on (its ``flywheel_serving_generate_threads`` gauge: what auto gave).

    .venv/bin/python bench/generate_pod.py [--requests 40] [--max-tokens 64] [--data-dir DIR]
                                           [--threads 1,2,0] [--concurrency 1,2,4] [--http-requests 8]

``--data-dir`` holds ``base-models/`` (converted from the GGUF once, ~60 s, then reused).
Last line: {"p95_generate_ms", "p50_generate_ms", "pod_p95_generate_ms", "p95_full_length_ms",
"completion_tokens_mean", "full_length_answers", "requests", "max_tokens", "first_load_s", "swap_load_s",
"cpu_ms_per_token", "wall_ms_per_token", "torch_threads", "concurrency", "workers", "http": {"THREADS":
{"CONCURRENCY": {"threads_used", "p50_ms", "p95_ms", "requests_per_s", "completion_tokens_mean",
"server_cpu_ms_per_request", "requests"}}}, "host"}; ``torch_threads`` is the in-process pod's ``generate_threads``.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as `python bench/generate_pod.py`: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import importlib.util
import json
import logging
import statistics
import tempfile
import threading
import time
import uuid
from typing import Any

import yaml

from bench._host import HostProbe, emit, process_cpu_s
from bench._stack import bench_stack

log = logging.getLogger("bench.generate_pod")


def corpus_pairs(limit: int) -> list[tuple[str, str]]:
    """(prompt, response) pairs of chatterbot-corpus's English files (BSD), first response per prompt."""
    spec = importlib.util.find_spec("chatterbot_corpus")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("chatterbot-corpus is not installed")
    pairs: dict[str, str] = {}
    for path in sorted((Path(next(iter(spec.submodule_search_locations))) / "data" / "english").glob("*.yml")):
        for turn in (yaml.safe_load(path.read_text()) or {}).get("conversations") or []:
            if len(turn) >= 2 and isinstance(turn[0], str) and isinstance(turn[1], str):
                pairs.setdefault(turn[0].strip(), turn[1].strip())
    return list(pairs.items())[:limit]


def nearest_rank(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, -(-int(q * 100) * len(ordered) // 100) - 1))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=40)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--threads", default="1,2,0", help="FLYWHEEL_GENERATE_THREADS of the HTTP pods (0: auto)")
    parser.add_argument("--concurrency", default="1,2,4", help="closed-loop clients per level of the HTTP pods "
                        "(empty: no HTTP pod)")
    parser.add_argument("--http-requests", type=int, default=8, help="requests per concurrency level")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    probe = HostProbe()

    import torch
    from fastapi.testclient import TestClient
    from pydantic import SecretStr

    from bench.serve import server
    from core import db
    from core.settings import FlywheelSettings
    from kinds.base_models import SMOLLM2, load_base
    from kinds.generation import GeneratorResources, Pair, Prompt
    from kinds.smollm2_lora import SmolLM2LoRA
    from registry import Lineage, open_from_settings
    from registry.announce import ModelAnnouncer, model_event
    from serving import create_app
    from streams.kafka import CheckedProducer, admin, create_topics, producer_config
    from tasks import ModelStore, parse_spec

    torch.set_num_threads(1)
    pairs = corpus_pairs(400)
    train, asks = pairs[:16], pairs[16:16 + args.requests]
    with bench_stack() as (bootstrap, url), tempfile.TemporaryDirectory() as tmp:
        data_dir = args.data_dir or Path(tmp) / "data"
        settings = FlywheelSettings(kafka_bootstrap=bootstrap, database_url=SecretStr(url),
                                    topic_prefix=f"bench{uuid.uuid4().hex[:6]}", data_dir=data_dir, metrics_port=0,
                                    serve_models=("npc",), model_name="npc", labels=("a", "b"),
                                    generate_timeout_s=600.0)  # the figure is the latency, not the deadline
        with db.connect(url) as conn:
            ModelStore(conn).put(parse_spec({"name": "npc", "task": "text-generation"}), source="bench")
            conn.commit()
        kafka = settings.kafka_connection()
        create_topics(admin(kafka), settings.topics.all(), 1)
        producer = CheckedProducer(producer_config(kafka))
        announcer = ModelAnnouncer(producer, settings.topics.models)
        registry = open_from_settings(settings.model_copy(update={"labels": ()}), url)

        def adapter(seed: int) -> Any:
            kind = SmolLM2LoRA(base=SMOLLM2, r=8, alpha=16, max_steps=2, batch_size=4, seed=seed)
            kind.bind(GeneratorResources(load_base(SMOLLM2, data_dir))).fit(
                [Pair(Prompt(p), r) for p, r in train])
            directory = Path(tmp) / f"adapter-{seed}"
            kind.save(directory)
            return registry.register(directory, mode="full", metrics={},
                                     lineage=Lineage(data_hash=uuid.uuid4().hex, watermark=0, sample_count=len(train)))

        first = adapter(1)
        announcer.publish(model_event(first, "npc", "promote", 1.0, "bench"))
        app = create_app(settings, database_url=url)
        with TestClient(app) as client:
            services = app.state.pod.get("npc")
            started = time.monotonic()
            assert services.runtime.wait_live(first.version, 600), "the champion did not load"
            first_load_s = time.monotonic() - started  # the base is already in this process (trained on it)
            second = adapter(2)
            started = time.monotonic()
            announcer.publish(model_event(second, "npc", "promote", 1.0, "bench"))
            assert services.runtime.wait_live(second.version, 600), "the second version did not load"
            swap_load_s = time.monotonic() - started
            times, tokens = [], []
            cpu_started = time.process_time()
            for prompt, _ in asks:
                started = time.perf_counter()
                body = {"prompt": prompt, "max_tokens": args.max_tokens}
                response = client.post("/v1/models/npc/generate", json=body)
                times.append((time.perf_counter() - started) * 1000)
                response.raise_for_status()
                tokens.append(int(response.json()["completion_tokens"]))
            cpu_s = time.process_time() - cpu_started  # the whole process: the pod's other threads too
            series = f'flywheel_serving_generate_p95_seconds{{model="npc",version="{second.version}"}}'
            gauge = [line for line in client.get("/metrics").text.splitlines() if line.startswith(series)]
        producer.flush(10.0)
        http: dict[str, dict[str, dict[str, Any]]] = {}
        levels = [int(c) for c in args.concurrency.split(",") if c.strip()]
        prompts = [p for p, _ in pairs[16:16 + args.http_requests]]
        for threads in [int(t) for t in args.threads.split(",") if t.strip()] if levels else []:
            pod_settings = {"kafka_bootstrap": bootstrap, "database_url": url, "topic_prefix": settings.topic_prefix,
                            "data_dir": str(data_dir), "metrics_port": 0, "serve_models": "npc", "model_name": "npc",
                            "labels": "a,b", "generate_timeout_s": 600.0, "generate_threads": threads,
                            "generate_queue": max(levels)}
            with server(["pod", "--settings", json.dumps(pod_settings), "--torch-threads", "1"], Path(tmp),
                        f"pod-threads-{threads}", {}) as (base_url, pid):
                http[str(threads)] = {str(c): http_level(base_url, pid, prompts, c, args.max_tokens) for c in levels}
    full = [t for t, n in zip(times, tokens, strict=True) if n >= args.max_tokens]
    emit({"p95_generate_ms": round(nearest_rank(times, 0.95), 1) if times else None,
          "p50_generate_ms": round(statistics.median(times), 1) if times else None,
          "pod_p95_generate_ms": round(float(gauge[0].split()[-1]) * 1000, 1) if gauge else None,
          "p95_full_length_ms": round(nearest_rank(full, 0.95), 1) if full else None,
          "completion_tokens_mean": round(statistics.fmean(tokens), 1) if tokens else None,
          "full_length_answers": len(full), "requests": len(times), "max_tokens": args.max_tokens,
          "first_load_s": round(first_load_s, 2), "swap_load_s": round(swap_load_s, 2),
          "cpu_ms_per_token": round(cpu_s * 1000 / max(1, sum(tokens)), 1),
          "wall_ms_per_token": round(sum(times) / max(1, sum(tokens)), 1), "torch_threads": settings.generate_threads,
          "concurrency": 1, "workers": settings.generate_workers, "http": http}, probe)


def http_level(base_url: str, pid: int, prompts: list[str], clients: int, max_tokens: int) -> dict[str, Any]:
    """``prompts`` answered by a pod over HTTP with ``clients`` closed-loop clients (each takes the next prompt
    when its last answer came): per-request time (queue wait included), requests/s, the pod's CPU per request."""
    import httpx

    with httpx.Client(timeout=900.0) as client:  # one warm-up answer, not timed
        client.post(f"{base_url}/v1/models/npc/generate", json={"prompt": "Hello!", "max_tokens": 4}).raise_for_status()
    todo = iter(prompts)
    lock = threading.Lock()
    times: list[float] = []
    tokens: list[int] = []

    def user() -> None:
        with httpx.Client(timeout=900.0) as client:
            while True:
                with lock:
                    prompt = next(todo, None)
                if prompt is None:
                    return
                started = time.perf_counter()
                response = client.post(f"{base_url}/v1/models/npc/generate",
                                       json={"prompt": prompt, "max_tokens": max_tokens})
                elapsed = (time.perf_counter() - started) * 1000
                response.raise_for_status()
                with lock:
                    times.append(elapsed)
                    tokens.append(int(response.json()["completion_tokens"]))

    cpu, wall = process_cpu_s(pid), time.perf_counter()
    users = [threading.Thread(target=user, name=f"client-{i}") for i in range(clients)]
    for thread in users:
        thread.start()
    for thread in users:
        thread.join()
    wall, cpu = time.perf_counter() - wall, process_cpu_s(pid) - cpu
    series = 'flywheel_serving_generate_threads{model="npc"}'
    gauge = [line for line in httpx.get(f"{base_url}/metrics", timeout=60.0).text.splitlines()
             if line.startswith(series)]
    return {"threads_used": int(float(gauge[0].split()[-1])) if gauge else None,
            "p50_ms": round(statistics.median(times), 1), "p95_ms": round(nearest_rank(times, 0.95), 1),
            "requests_per_s": round(len(times) / wall, 3), "completion_tokens_mean": round(statistics.fmean(tokens), 1),
            "server_cpu_ms_per_request": round(cpu * 1000 / len(times), 1), "requests": len(times)}


if __name__ == "__main__":
    main()
