"""``bench/efficacy.py --task generation``: the dialogue scenario (flywheel/demo/dialogue.py) on a fresh platform.

The declared ``npc`` model (``smollm2-lora`` on the base ``--base``) is bootstrapped on chatterbot-corpus small
talk; then prompts of the corpus's knowledge topics (the drifted domain) are asked through ``POST
/v1/models/npc/generate`` and every answer is judged through ``POST /v1/models/npc/feedback``: a 1-5 rating from
its weighted score against the reference (10% noise) and, for a rating of 3 or lower, the reference as a
correction (70% of them). After k = 100, 200, 400 feedback pairs the platform is let settle (every feedback
landed and curated, no run under way) and the model the pod serves is scored on the held-out target pairs
(``--holdout``, never asked).

Baselines in the same run: the static champion (the bootstrap adapter, never retrained) and an oracle: a fresh
adapter with the model's parameters for one epoch over every target pair outside the holdout (547 with the
default ``--holdout`` 40; ~0.6 CPU s a pair on one thread, so ~5.5 CPU minutes, measured on 64 of them;
``--oracle-pairs`` caps them, for a machine too busy; ``--quick``: 200). ``run_seconds``: the training time
(``train_seconds`` of the platform's runs, gates excluded) of the runs that trained on the first 400 pairs.
``p95_generate_ms``: ``--latency-requests`` sequential requests of 64 new tokens to the platform's pod at the
end (client time, queue included), nearest rank.

Last line: ``{"scenarios": {"dialogue": {"static", "oracle", "k100", "k200", "k400",
"fraction_of_oracle_at_400", "run_seconds", "p95_generate_ms"}}, "host": {...}}``.
"""

from __future__ import annotations

import argparse
import logging
import os
import time
from typing import Any

from bench._host import HostProbe, emit
from bench._replay import replaying
from core.settings import FlywheelSettings
from flywheel.demo import DemoOptions, Replay, dialogue, reset_dir

log = logging.getLogger("bench.efficacy")
CHECKPOINTS = (100, 200, 400)
SCENARIO = "dialogue"


def options_for(args: argparse.Namespace) -> DemoOptions:
    quick = args.quick
    return DemoOptions.for_scenario(
        # promotion direct: the bench measures what the model learns by k pairs, not the rollout (a 5% canary would
        # see a handful of the 420 questions and stay undecided, leaving the static champion serving)
        SCENARIO, stream=max(CHECKPOINTS) + 20, feedback_rate=1.0, promotion="direct",
        base="tiny-random" if quick else args.base, max_tokens=8 if quick else args.max_tokens,
        lora_steps=2 if quick else args.lora_steps, incremental_threshold=args.threshold or (40 if quick else 50),
        holdout_pairs=args.holdout,
        rate=20.0 if quick else 5.0, window=50)


def oracle(replay: Replay, options: DemoOptions, cap: int) -> tuple[float, int, float]:
    """(score, pairs, fit seconds) of a fresh adapter with the model's parameters, one epoch over every
    target pair outside the holdout (the first ``cap`` when set)."""
    from kinds.base_models import load_base
    from kinds.catalog import GENERATORS
    from kinds.generation import GeneratorResources

    params = dict(dialogue.spec(options)["training"]["generation"]["params"], max_steps=0)
    pairs = replay.pairs_target[:cap] if cap else replay.pairs_target
    model = GENERATORS["smollm2-lora"](**params).bind(GeneratorResources(load_base(options.base,
                                                                                   replay.settings.data_dir)))
    started = time.perf_counter()
    model.fit(pairs)
    return replay.score_of(model), len(pairs), time.perf_counter() - started


def latency(replay: Replay, requests: int) -> float:
    """p95 (nearest rank) of ``requests`` sequential 64-token requests to the pod, client time in ms."""
    times = []
    for pair in replay.pairs_holdout[:requests]:
        started = time.perf_counter()
        answer = replay.http.post(f"{replay.route}/generate", json={"prompt": pair.prompt.prompt, "max_tokens": 64},
                                  timeout=600.0)
        answer.raise_for_status()
        times.append((time.perf_counter() - started) * 1000)
    ordered = sorted(times)
    return ordered[min(len(ordered) - 1, max(0, -(-95 * len(ordered) // 100) - 1))]


def run(args: argparse.Namespace, base: FlywheelSettings, probe: HostProbe) -> None:
    options = options_for(args)
    load = [round(x, 2) for x in os.getloadavg()]
    print(f"dialogue: smollm2-lora on {options.base}, {options.stream} players' questions, {options.max_tokens} "
          f"tokens, a run every {options.incremental_threshold} pairs ({options.lora_steps} steps), load {load}",
          flush=True)
    data_dir = reset_dir(args.data_dir / "dialogue")
    started = time.monotonic()
    with replaying(base, options, data_dir, "flywheel_efficacy_dialogue") as replay:
        replay.with_static = False  # the static champion is scored on the held-out pairs instead
        static_version = replay.wait_ready(timeout=1800)
        static = round(replay.accuracy(static_version), 4)
        log.info("dialogue: champion %s serving after %.0fs, held-out score %.4f", static_version,
                 time.monotonic() - started, static)
        at: dict[int, dict[str, Any]] = {}
        scores: dict[str, float] = {static_version: static}

        def checkpoint(k: int) -> Any:
            def check(r: Replay) -> None:
                r.settle(timeout=1200, quiet=15)
                version, semver = r.champion()
                if version not in scores:
                    scores[version] = round(r.accuracy(version), 4)
                at[k] = {"version": version, "semver": semver, "score": scores[version],
                         "runs": len(r.timeline.runs)}
                log.info("dialogue after %d pairs: deployed %s, held-out score %.4f", k, semver, scores[version])
            return check

        replay.run(checkpoints={k: checkpoint(k) for k in CHECKPOINTS})
        figures = replay.finish()
        # the runs that trained on the first 400 pairs: those finished by the k400 checkpoint
        trained = [r for r in replay.timeline.runs[:at.get(400, {}).get("runs", len(replay.timeline.runs))]
                   if r["mode"] != "bootstrap"]
        run_seconds = sum(float(c.get("train_seconds") or 0.0) for r in trained for c in (r["candidates"] or []))
        p95 = latency(replay, args.latency_requests)
        best, pairs, fit_s = oracle(replay, options, args.oracle_pairs or (200 if args.quick else 0))
    result = {"static": static, "oracle": round(best, 4), **{f"k{k}": at.get(k, {}).get("score") for k in CHECKPOINTS}}
    k400 = result["k400"]
    result |= {"fraction_of_oracle_at_400": round(k400 / best, 4) if k400 is not None and best > 0 else None,
               "run_seconds": round(run_seconds, 1), "p95_generate_ms": round(p95, 1)}
    print(f"dialogue: static {static}, k100 {result['k100']}, k200 {result['k200']}, k400 {k400}, oracle "
          f"{result['oracle']} ({pairs} pairs, fit {fit_s:.0f} s) -> {result['fraction_of_oracle_at_400']} of the "
          f"oracle; {len(trained)} runs trained {run_seconds:.0f} s; p95 {p95:.0f} ms for 64 tokens; runs "
          f"{figures['runs']}, {figures['feedback']} feedback ({time.monotonic() - started:.0f} s, load {load} -> "
          f"{[round(x, 2) for x in os.getloadavg()]})", flush=True)
    emit({"scenarios": {SCENARIO: result}}, probe)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("--task generation")
    group.add_argument("--base", default="smollm2-135m-instruct", help="generation: the base model (--quick: "
                       "tiny-random)")
    group.add_argument("--max-tokens", type=int, default=24, help="generation: new tokens per answer and gate answer")
    group.add_argument("--lora-steps", type=int, default=8, help="generation: LoRA steps per run (batch 8)")
    group.add_argument("--holdout", type=int, default=40, help="generation: held-out target pairs scored")
    group.add_argument("--oracle-pairs", type=int, default=0, help="generation: cap the oracle's pairs (0: all)")
    group.add_argument("--latency-requests", type=int, default=20, help="generation: 64-token requests timed")
