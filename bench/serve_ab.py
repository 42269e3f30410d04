"""Two settings of a serving pod, measured against each other on the same host minutes.

This host's speed drifts by 10-20% within minutes (``timeit`` of a bare loop moved 10.5-19.3 µs in one hour),
so a pod measured after another is not a before/after. Here one champion is bootstrapped, then pods of the
same code are started one at a time with ``--a`` and ``--b`` settings (``FLYWHEEL_*`` environment
assignments), alternated A B B A A B ... for ``--rounds`` pairs. Each pod is fresh (an empty embedding cache),
warms up on texts it is not measured on, then serves the same distinct texts at ``--clients`` closed-loop
clients for ``--seconds``. Per pod: requests/s and p99, and the CPU a request of its event loop's thread and
of all its other threads (``/proc/<pod>/task/*/stat`` over the level, divided by the requests the pod itself
counted in ``flywheel_serving_request_seconds_count``): the event loop's share is the request path, the
other threads' mostly the model.

    .venv/bin/python -m bench.serve_ab --b FLYWHEEL_PREDICT_FAST_PATH=false [--a ...] [--kind tfidf-logreg]
        [--precision int8-pc] [--clients 8] [--seconds 8] [--rounds 4]

Last line: {"kind", "clients", "a", "b", "pods": {"a": [...], "b": [...]}, "loop_cpu_ms": {"a", "b"},
"other_cpu_ms": {...}, "rps": {...} (means over the pods), "b_faster_pairs", "host"}.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as `python bench/serve_ab.py`: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import json
import random
import statistics
import tempfile
import urllib.request
import uuid
from typing import Any

from bench._host import HostProbe, emit, process_cpu_s, stat_cpu_s
from bench.serve import DATA, LABELS, TRAIN_ROWS, corpus_texts, load, metric_value, server, train
from kinds.minilm import DEFAULT_PRECISION

REQUESTS = 'flywheel_serving_request_seconds_count{route="/predict",variant="champion"}'


def assignments(text: str) -> dict[str, str]:
    """``NAME=VALUE[,NAME=VALUE]`` -> environment; names must be ``FLYWHEEL_*``."""
    found = dict(part.split("=", 1) for part in text.split(",") if part)
    if any(not name.startswith("FLYWHEEL_") for name in found):
        raise SystemExit(f"--a/--b take FLYWHEEL_* settings, not {sorted(found)}")
    return found


def thread_cpu_s(pid: int) -> tuple[float, float]:
    """CPU seconds so far of the process's main thread (its event loop) and of all its other threads (the
    process's total minus the main thread's: threads that have ended count too)."""
    main = stat_cpu_s(Path(f"/proc/{pid}/task/{pid}/stat").read_text())
    return main, process_cpu_s(pid) - main


def served(url: str) -> float:
    with urllib.request.urlopen(f"{url}/metrics", timeout=5) as response:
        return metric_value(response.read().decode(), REQUESTS)


def measure(role: list[str], tmp: Path, env: dict[str, str], texts: Path, warm_offset: int,
            args: argparse.Namespace) -> dict[str, Any]:
    """One fresh pod: warm-up on other texts, then one level; its rate and CPU a request by thread."""
    with server(role, tmp, "pod", {"ONEDNN_PRIMITIVE_CACHE_CAPACITY": "8", **env}) as (url, pid):
        load(url, texts, "p99", [1], 2.0, offset=warm_offset, pid=pid)
        count, (main, other) = served(url), thread_cpu_s(pid)
        [level] = load(url, texts, "p99", [args.clients], args.seconds, pid=pid)
        requests = served(url) - count
        main_after, other_after = thread_cpu_s(pid)
    return {"rps": level["rps"], "p99_ms": level["p99_ms"], "errors": level["errors"], "requests": requests,
            "loop_cpu_ms": round((main_after - main) * 1000 / max(requests, 1), 3),
            "other_cpu_ms": round((other_after - other) * 1000 / max(requests, 1), 3)}


def main(args: argparse.Namespace) -> None:
    from bench._stack import bench_stack
    from core.settings import FlywheelSettings
    from trainer.data import read_labelled_csv

    probe = HostProbe()
    sides = {"a": assignments(args.a), "b": assignments(args.b)}
    movies = read_labelled_csv(DATA / "vader_movies.csv", LABELS)
    random.Random(7).shuffle(movies)
    trained = {r.text for r in movies[:TRAIN_ROWS]}
    pool = [t for t in corpus_texts() if t not in trained]
    pods: dict[str, list[dict[str, Any]]] = {"a": [], "b": []}
    with bench_stack() as (bootstrap, url), tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        texts = tmp / "texts.json"
        texts.write_text(json.dumps(pool))
        values: dict[str, Any] = {
            "kafka_bootstrap": bootstrap, "database_url": url, "topic_prefix": f"b{uuid.uuid4().hex[:8]}",
            "model_name": "bench_ab", "data_dir": str(tmp / "data"), "metrics_port": 0, "schema_registry_port": 0}
        params = {"precision": args.precision} if args.kind == "minilm-head" else {}
        train(FlywheelSettings(**values), url, args.kind, movies[:TRAIN_ROWS], params)
        role = ["pod", "--settings", json.dumps(values), "--torch-threads", "1"]
        for n in range(args.rounds):
            for side in ("a", "b") if n % 2 == 0 else ("b", "a"):
                pods[side].append(found := measure(role, tmp, sides[side], texts, len(pool) - 600, args))
                print(f"round {n} {side} {sides[side] or '(defaults)'}: {found}", flush=True)

    def mean(side: str, key: str) -> float:
        return round(statistics.fmean(p[key] for p in pods[side]), 3)

    keys = ("rps", "loop_cpu_ms", "other_cpu_ms")
    print(f"{args.kind}, {args.clients} clients, {args.rounds} pods a side: "
          + "; ".join(f"{k} a {mean('a', k)} / b {mean('b', k)}" for k in keys))
    emit({"kind": args.kind, "clients": args.clients, "a": sides["a"], "b": sides["b"], "pods": pods,
          **{k: {s: mean(s, k) for s in ("a", "b")} for k in keys},
          "b_faster_pairs": sum(b["rps"] > a["rps"] for a, b in zip(pods["a"], pods["b"], strict=True))}, probe)


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--a", default="", help="NAME=VALUE,... of pod A (default: the defaults)")
    parser.add_argument("--b", required=True, help="NAME=VALUE,... of pod B")
    parser.add_argument("--kind", choices=["minilm-head", "tfidf-logreg"], default="minilm-head")
    parser.add_argument("--precision", default=DEFAULT_PRECISION,
                        help="the minilm-head champion's encoder precision (default: the kind's)")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--rounds", type=int, default=4, help="pairs of pods (A B, then B A, ...)")
    return parser.parse_args()


if __name__ == "__main__":
    main(parse())
