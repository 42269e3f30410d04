"""How fast does a ``smollm2-lora`` dialogue model learn a drifted domain from feedback pairs, offline
(issue 20)? Scenario ``chitchat->chatterbot``: an NPC model bootstrapped on informal chat (chitchat-dataset,
domain A) meets players who talk like an assistant corpus (chatterbot-corpus, the target domain).

Every model is scored (the weighted BLEU-1..4 / ROUGE-L-precision score of
:mod:`trainer.gates.generation_metrics`, greedy decoding) on the same held-out target pairs, never trained on:

- ``static``: a fresh adapter fitted on ``--bootstrap`` domain-A pairs;
- ``k100`` / ``k200`` / ``k400``: the static adapter continued (``partial_fit``, incremental runs) on the
  first 100, then the next 100, then the next 200 target pairs;
- ``oracle``: a fresh adapter fitted on all target training pairs (``--oracle-pairs`` caps them).

``run_seconds`` is the wall time of LoRA training over 400 target pairs (the three incremental runs summed;
``cpu_seconds`` the process CPU time of the same); ``p95_generate_ms`` the p95 wall time of one
``generate`` call of up to 64 new tokens (greedy) on held-out prompts with the k400 model. Torch runs on
one thread. On a shared machine the wall times depend on the load, printed before and after.

``--part probe`` only times ``--probe-steps`` LoRA steps and a few generations, extrapolating the run
time of 400 pairs (for a machine too busy for the full runs).

The static chain and the oracle can run as two processes (``--part chain`` / ``--part oracle``, each
writing ``--out``), then ``--combine a.json b.json`` prints the last line; without ``--part`` both run in
this process.

    .venv/bin/python bench/generation_offline.py --data-dir .flywheel [--base smollm2-135m-instruct]

Last line: {"scenarios": {"chitchat->chatterbot": {"static", "oracle", "k100", "k200", "k400",
"fraction_of_oracle_at_400", "run_seconds", "p95_generate_ms", ...}}, "host": {...}}.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as `python bench/generation_offline.py`: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import json
import logging
import random
import statistics
import time
from collections.abc import Sequence
from typing import Any

import torch

from bench._host import HostProbe, emit
from kinds.base_models import load_base
from kinds.generation import GeneratorResources, Pair
from kinds.smollm2_lora import SmolLM2LoRA
from trainer.dialogue_data import chatterbot_pairs, chitchat_pairs
from trainer.gates.generation_metrics import score_parts, weighted_score

SCENARIO = "chitchat->chatterbot"
STAGES = ((100, "k100"), (200, "k200"), (400, "k400"))
log = logging.getLogger("bench.generation_offline")


def split(args: argparse.Namespace) -> tuple[list[Pair], list[Pair], list[Pair]]:
    """Domain-A bootstrap pairs, target training pairs (in arrival order) and held-out target pairs."""
    rng = random.Random(args.seed)
    chat = [p.pair for p in chitchat_pairs() if len(p.pair.response) <= 200 and len(p.pair.prompt.prompt) <= 200]
    rng.shuffle(chat)
    target = [p.pair for p in chatterbot_pairs()]
    rng.shuffle(target)
    return chat[:args.bootstrap], target[args.holdout:], target[:args.holdout]


def evaluate(model: SmolLM2LoRA, holdout: Sequence[Pair], max_new_tokens: int) -> dict[str, Any]:
    hypotheses: list[str] = []
    for start in range(0, len(holdout), 8):
        batch = holdout[start:start + 8]
        hypotheses += [g.text.strip() for g in model.generate([p.prompt for p in batch],
                                                               max_new_tokens=max_new_tokens)]
    references = [p.response for p in holdout]
    return {"score": weighted_score(hypotheses, references), "parts": score_parts(hypotheses, references),
            "perplexity": model.perplexity(holdout), "examples": list(zip(hypotheses[:3], references[:3],
                                                                          strict=True))}


def timed_fit(model: SmolLM2LoRA, pairs: Sequence[Pair], *, fresh: bool) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    if fresh:
        model.fit(pairs)
    else:
        model.partial_fit(pairs)
    return time.perf_counter() - wall, time.process_time() - cpu


def run_chain(args: argparse.Namespace, resources: GeneratorResources) -> dict[str, Any]:
    bootstrap, target, holdout = split(args)
    model = SmolLM2LoRA(base=args.base, seed=args.seed).bind(resources)
    wall, cpu = timed_fit(model, bootstrap, fresh=True)
    out: dict[str, Any] = {"bootstrap_pairs": len(bootstrap), "holdout_pairs": len(holdout),
                           "static_fit_seconds": round(wall, 1)}
    static = evaluate(model, holdout, args.max_new_tokens)
    out["static"], out["details"] = static["score"], {"static": static}
    log.info("static %.4f (fit %.0f s)", static["score"], wall)
    done, run_wall, run_cpu = 0, 0.0, 0.0
    for k, name in STAGES:
        wall, cpu = timed_fit(model, target[done:k], fresh=False)
        done, run_wall, run_cpu = k, run_wall + wall, run_cpu + cpu
        result = evaluate(model, holdout, args.max_new_tokens)
        out[name], out["details"][name] = result["score"], result
        log.info("%s %.4f (run %.0f s wall, %.0f s cpu)", name, result["score"], wall, cpu)
    out["run_seconds"], out["cpu_seconds"] = round(run_wall, 1), round(run_cpu, 1)
    latencies, tokens = [], []
    for pair in holdout[:args.latency_samples]:
        generation = model.generate([pair.prompt], max_new_tokens=64)[0]
        latencies.append(generation.latency_ms)
        tokens.append(generation.completion_tokens)
    out["p95_generate_ms"] = round(_p95(latencies), 1)
    out["latency"] = {"samples": len(latencies), "median_ms": round(statistics.median(latencies), 1),
                      "mean_completion_tokens": round(statistics.mean(tokens), 1),
                      "ms_per_token": round(sum(latencies) / max(1, sum(tokens)), 1)}
    return out


def run_oracle(args: argparse.Namespace, resources: GeneratorResources) -> dict[str, Any]:
    _, target, holdout = split(args)
    pairs = target[:args.oracle_pairs] if args.oracle_pairs else target
    model = SmolLM2LoRA(base=args.base, seed=args.seed).bind(resources)
    wall, cpu = timed_fit(model, pairs, fresh=True)
    result = evaluate(model, holdout, args.max_new_tokens)
    log.info("oracle %.4f on %d pairs (fit %.0f s)", result["score"], len(pairs), wall)
    return {"oracle": result["score"], "oracle_pairs": len(pairs), "oracle_fit_seconds": round(wall, 1),
            "oracle_cpu_seconds": round(cpu, 1), "details": {"oracle": result}}


def run_probe(args: argparse.Namespace, resources: GeneratorResources) -> dict[str, Any]:
    """What one LoRA step and one 64-token generation cost here (the full runs do not fit a busy
    machine's time): wall and CPU seconds of ``--probe-steps`` steps of 8 target pairs, extrapolated to a
    400-pair run (50 steps at the default batch of 8), and ``--latency-samples`` generations."""
    _, target, holdout = split(args)
    steps = args.probe_steps
    model = SmolLM2LoRA(base=args.base, seed=args.seed, max_steps=steps).bind(resources)
    wall, cpu = timed_fit(model, target[:8 * steps], fresh=True)
    latencies, cpus, tokens = [], [], []
    for pair in holdout[:args.latency_samples]:
        started = time.process_time()
        generation = model.generate([pair.prompt], max_new_tokens=64)[0]
        latencies.append(generation.latency_ms)
        cpus.append((time.process_time() - started) * 1000)
        tokens.append(generation.completion_tokens)
    per_step_wall, per_step_cpu = wall / steps, cpu / steps
    return {"probe_steps": steps, "step_wall_seconds": round(per_step_wall, 1),
            "step_cpu_seconds": round(per_step_cpu, 1),
            "run_seconds_400_extrapolated": round(per_step_wall * 50, 1),
            "run_cpu_seconds_400_extrapolated": round(per_step_cpu * 50, 1),
            "p95_generate_ms": round(_p95(latencies), 1), "generate_cpu_ms": [round(c) for c in cpus],
            "generate_ms": [round(v) for v in latencies], "completion_tokens": tokens}


def combine(parts: Sequence[dict[str, Any]]) -> dict[str, Any]:
    merged: dict[str, Any] = {"details": {}}
    for part in parts:
        merged["details"].update(part.get("details", {}))
        merged.update({k: v for k, v in part.items() if k != "details"})
    if "oracle" in merged and "k400" in merged and merged["oracle"] > 0:
        merged["fraction_of_oracle_at_400"] = round(merged["k400"] / merged["oracle"], 3)
    return merged


def _p95(values: Sequence[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, default=Path(".flywheel"), help="where base models are prepared")
    parser.add_argument("--base", default="smollm2-135m-instruct")
    parser.add_argument("--part", choices=("chain", "oracle", "probe"), default=None)
    parser.add_argument("--probe-steps", type=int, default=2, help="LoRA steps timed by --part probe")
    parser.add_argument("--out", type=Path, default=None, help="write this part's result here (with --part)")
    parser.add_argument("--combine", type=Path, nargs="+", default=None, help="merge parts and print the line")
    parser.add_argument("--bootstrap", type=int, default=200, help="domain-A pairs of the static model")
    parser.add_argument("--holdout", type=int, default=40, help="held-out target pairs scored")
    parser.add_argument("--oracle-pairs", type=int, default=0, help="cap the oracle's pairs (0: all)")
    parser.add_argument("--max-new-tokens", type=int, default=48, help="when scoring")
    parser.add_argument("--latency-samples", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    probe = HostProbe()
    if args.combine:
        merged = combine([json.loads(p.read_text()) for p in args.combine])
        emit({"scenarios": {SCENARIO: merged}}, probe)
        return 0
    torch.set_num_threads(1)
    resources = GeneratorResources(base=load_base(args.base, args.data_dir))
    parts = []
    if args.part in (None, "chain"):
        parts.append(run_chain(args, resources))
    if args.part in (None, "oracle"):
        parts.append(run_oracle(args, resources))
    if args.part == "probe":
        parts.append(run_probe(args, resources))
    merged = combine(parts)
    merged["load"] = probe.report()
    if args.out:
        args.out.write_text(json.dumps(merged, indent=2))
    emit({"scenarios": {SCENARIO: merged}}, probe)
    return 0


if __name__ == "__main__":
    sys.exit(main())
