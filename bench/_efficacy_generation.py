"""``bench/efficacy.py --task generation``: the dialogue scenario (flywheel/demo/dialogue.py) on a fresh platform.

The declared ``npc`` model (``smollm2-lora`` on the base ``--base``) is bootstrapped on chatterbot-corpus small
talk; then prompts of the corpus's knowledge topics (the drifted domain) are asked through ``POST
/v1/models/npc/generate`` and every answer is judged through ``POST /v1/models/npc/feedback``: a 1-5 rating from
its weighted score against the reference (10% noise) and, for a rating of 3 or lower, the reference as a
correction (70% of them). After k = 100, 200, 400 feedback pairs the platform is let settle (every feedback
landed and curated, no run under way) and the model the pod serves is scored on the held-out target pairs
(``--holdout``, default 120 of the 600 short target pairs, never asked; 40 until 2026-12-06).

Baselines in the same run: the static champion (the bootstrap adapter, never retrained) and an oracle: fresh
adapters with the model's parameters for one epoch over every target pair outside the holdout (460 with the
default ``--holdout`` 120), one per seed (``--oracle-seeds``, default 3: a one-epoch adapter's held-out score
moves with its seed as much as with its data, 0.108-0.152 on the same 547 pairs); ``oracle`` is their mean,
``oracle_seeds`` each. ``--oracle-pairs`` caps the pairs, for a machine too busy; ``--quick``: 200.
``run_seconds``: the training time (``train_seconds`` of the platform's runs, gates excluded) of the runs that
trained on the first 400 pairs. ``p95_generate_ms``: ``--latency-requests`` sequential requests of 64 new tokens
to the platform's pod at the end, once the platform has settled (no run training beside the pod: until 2026-12-06
the timing could overlap the last run and a swap), client time, queue included, nearest rank.

Uncertainty (:func:`summarise`): every score is the mean of per-pair weighted scores on the same held-out pairs,
so the ``*_ci95`` keys are a paired bootstrap (``--resamples``, seeded) over those pairs; for ``oracle`` and
``fraction_of_oracle_at_400`` each resample also draws the oracle's seeds with replacement. The platform's own
draw (its adapters' seeds, when its runs trigger) moves k400 as much as the pairs do (the same defaults gave 1.135,
0.916 and 0.871 of the oracle in three runs): ``--runs N`` repeats the platform run N times, each on a fresh
platform (one oracle, fitted after the last), every score is the mean over the runs, each resample also draws the
runs with replacement, ``runs`` lists each run's scores, fraction, ``run_seconds``, ``p95_generate_ms`` and
verdicts, and the top-level ``run_seconds`` / ``p95_generate_ms`` are the slowest run's.

Last line: ``{"scenarios": {"dialogue": {"static", "oracle", "k100", "k200", "k400",
"fraction_of_oracle_at_400", "run_seconds", "p95_generate_ms", "holdout_pairs", "oracle_pairs",
"oracle_seeds", "oracle_sd", "static_ci95", "k100_ci95", "k200_ci95", "k400_ci95", "oracle_ci95",
"fraction_of_oracle_at_400_ci95"}}, "host": {...}}``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import statistics
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
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
        holdout_pairs=args.holdout, gate_references=args.gate_references, replay_pairs=args.replay_pairs,
        rate=20.0 if quick else 5.0, window=50)


def pair_scores(replay: Replay, model: Any) -> list[float]:
    """``model``'s weighted BLEU/ROUGE-L-precision score on each held-out pair (their mean is
    :meth:`Replay.score_of`: the score is a mean over pairs)."""
    from trainer.gates.generation_metrics import weighted_score

    held = replay.pairs_holdout
    answers = replay.answers(model, [p.prompt.prompt for p in held])
    return [weighted_score([a], [p.response]) for a, p in zip(answers, held, strict=True)]


def oracle(replay: Replay, options: DemoOptions, cap: int, seeds: int) -> tuple[list[list[float]], int, float]:
    """(per seed, the per-pair held-out scores; pairs; fit CPU seconds of all seeds) of fresh adapters with the
    model's parameters and seeds 0..``seeds``-1, one epoch over every target pair outside the holdout (the
    first ``cap`` when set)."""
    from kinds.base_models import load_base
    from kinds.catalog import GENERATORS
    from kinds.generation import GeneratorResources

    params = dict(dialogue.spec(options)["training"]["generation"]["params"], max_steps=0)
    pairs = replay.pairs_target[:cap] if cap else replay.pairs_target
    resources = GeneratorResources(load_base(options.base, replay.settings.data_dir))
    scores, cpu = [], 0.0
    for seed in range(seeds):
        model = GENERATORS["smollm2-lora"](**params, seed=seed).bind(resources)
        started = time.process_time()
        model.fit(pairs)
        cpu += time.process_time() - started
        scores.append(pair_scores(replay, model))
        log.info("dialogue: oracle seed %d (%d pairs) held-out score %.4f", seed, len(pairs), _mean(scores[-1]))
        del model  # its adapter leaves the shared base (a finalizer)
    return scores, len(pairs), cpu


def _mean(xs: Sequence[float]) -> float:
    return sum(xs) / len(xs)


def _interval(values: list[float]) -> list[float]:
    """The 2.5th and 97.5th percentiles (nearest rank) of ``values``, rounded."""
    ordered = sorted(values)
    last = len(ordered) - 1
    return [round(ordered[round(0.025 * last)], 4), round(ordered[round(0.975 * last)], 4)]


def summarise(static: Sequence[float], at: Mapping[int, Sequence[float] | None], oracles: Sequence[Sequence[float]],
              resamples: int = 2000, seed: int = 0) -> dict[str, Any]:
    """The bench's scores from one platform run's per-pair held-out scores (:func:`summarise_runs` of one run)."""
    return summarise_runs([static], [at], oracles, resamples, seed)


def summarise_runs(statics: Sequence[Sequence[float]], ats: Sequence[Mapping[int, Sequence[float] | None]],
                   oracles: Sequence[Sequence[float]], resamples: int = 2000, seed: int = 0) -> dict[str, Any]:
    """The bench's scores from per-pair held-out scores (every list over the same pairs, in the same order) of one
    or more platform runs (``statics[r]``, ``ats[r]``: run r's): each score is the mean over runs of its mean over
    pairs (a checkpoint some run did not reach is None), the oracle's mean over its seeds (and each seed's),
    ``fraction_of_oracle_at_400`` against that mean, and ``*_ci95`` intervals of a paired bootstrap over the pairs;
    for the oracle and the fraction each resample also draws the oracle's seeds with replacement, and with more
    than one run each resample draws the runs with replacement too: the platform's own draw counts. With more
    than one run, ``runs`` gives each run's k-scores and fraction."""
    n = len(statics[0]) if statics else 0
    lists = [*oracles, *statics, *(s for at in ats for s in at.values() if s is not None)]
    if not oracles or not statics or len(statics) != len(ats) or any(len(s) != n for s in lists):
        raise ValueError("every score list must be over the same held-out pairs, with at least one oracle seed")
    keys = list(ats[0])
    series: dict[str, list[Sequence[float]] | None] = {"static": list(statics)}
    for k in keys:
        runs_k = [at.get(k) for at in ats]
        series[f"k{k}"] = None if any(s is None for s in runs_k) else [s for s in runs_k if s is not None]
    oracle = _mean([_mean(s) for s in oracles])
    means = {key: None if runs is None else round(_mean([_mean(s) for s in runs]), 4) for key, runs in series.items()}
    out: dict[str, Any] = {"static": means.pop("static"), "oracle": round(oracle, 4), **means}
    k400 = series.get("k400")
    out["fraction_of_oracle_at_400"] = (round(_mean([_mean(s) for s in k400]) / oracle, 4)
                                        if k400 is not None and oracle > 0 else None)
    seeds = [round(_mean(s), 4) for s in oracles]
    out |= {"holdout_pairs": n, "oracle_seeds": seeds,
            "oracle_sd": round(statistics.stdev(seeds), 4) if len(seeds) > 1 else None}
    if len(statics) > 1:
        out["runs"] = [_run_scores(at, oracle) for at in ats]
    rng = random.Random(seed)
    boot: dict[str, list[float]] = {}
    for _ in range(resamples):
        idx = [rng.randrange(n) for _ in range(n)]
        drawn = [oracles[rng.randrange(len(oracles))] for _ in oracles]
        # one run: no draw (the same resamples as before runs were counted)
        picked = [rng.randrange(len(statics)) for _ in statics] if len(statics) > 1 else [0]
        o = _mean([sum(s[i] for i in idx) / n for s in drawn])
        boot.setdefault("oracle", []).append(o)
        for key, runs in series.items():
            if runs is not None:
                boot.setdefault(key, []).append(_mean([sum(runs[r][i] for i in idx) / n for r in picked]))
        if k400 is not None and o > 0:
            boot.setdefault("fraction_of_oracle_at_400", []).append(boot["k400"][-1] / o)
    for key in ("static", *(f"k{k}" for k in keys), "oracle", "fraction_of_oracle_at_400"):
        out[f"{key}_ci95"] = _interval(boot[key]) if boot.get(key) else None
    return out


def _run_scores(at: Mapping[int, Sequence[float] | None], oracle: float) -> dict[str, float | None]:
    """One run's mean score at each checkpoint and its fraction of the oracle at 400."""
    out: dict[str, float | None] = {}
    for k, scores in at.items():
        out[f"k{k}"] = None if scores is None else round(_mean(scores), 4)
    k400 = at.get(400)
    out["fraction_of_oracle_at_400"] = None if k400 is None or oracle <= 0 else round(_mean(k400) / oracle, 4)
    return out


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
    seeds, runs = max(1, args.oracle_seeds), max(1, args.runs)
    print(f"dialogue: smollm2-lora on {options.base}, {options.stream} players' questions, {options.max_tokens} "
          f"tokens, a run every {options.incremental_threshold} pairs ({options.lora_steps} steps), "
          f"{options.holdout_pairs} held-out pairs, {runs} platform run(s), oracle over {seeds} seeds, load {load}",
          flush=True)
    started, cpu = time.monotonic(), time.process_time()
    platforms: list[dict[str, Any]] = []
    for number in range(runs):
        database, data_dir = run_places(args.database, args.data_dir, number)
        platforms.append(_platform_run(args, base, options, database, data_dir, last=number == runs - 1))
    oracles, pairs, fit_cpu = platforms[-1].pop("oracle")
    result = summarise_runs([p["static"] for p in platforms], [p["at"] for p in platforms], oracles,
                            resamples=args.resamples)
    # the targets hold per run: the slowest run's figures
    result |= {"run_seconds": max(p["run_seconds"] for p in platforms),
               "p95_generate_ms": max(p["p95_generate_ms"] for p in platforms), "oracle_pairs": pairs}
    for figures, platform in zip(result.get("runs", []), platforms, strict=False):
        figures |= {key: platform[key] for key in ("run_seconds", "p95_generate_ms", "verdicts")}
    per_run = [r["fraction_of_oracle_at_400"] for r in result["runs"]] if runs > 1 else ""
    print(f"dialogue: static {result['static']} {result['static_ci95']}, k100 {result['k100']}, k200 "
          f"{result['k200']}, k400 {result['k400']} {result['k400_ci95']}, oracle {result['oracle']} "
          f"{result['oracle_ci95']} (seeds {result['oracle_seeds']}, {pairs} pairs, fit {fit_cpu:.0f} CPU s) -> "
          f"{result['fraction_of_oracle_at_400']} {result['fraction_of_oracle_at_400_ci95']} of the oracle on "
          f"{result['holdout_pairs']} held-out pairs over {runs} platform run(s) "
          f"{per_run}; slowest run_seconds {result['run_seconds']}, "
          f"p95 {result['p95_generate_ms']:.0f} ms for 64 tokens ({time.monotonic() - started:.0f} s wall, bench "
          f"process {time.process_time() - cpu:.0f} CPU s, load {load} -> {[round(x, 2) for x in os.getloadavg()]})",
          flush=True)
    # per-pair scores, for a paired comparison of two benches on the same held-out pairs
    (args.data_dir / "dialogue" / "pair_scores.json").write_text(json.dumps({
        "oracle_seeds": oracles, "runs": [{"static": p["static"], **{f"k{k}": s for k, s in p["at"].items()},
                                           "versions": p["versions"]} for p in platforms]}))
    emit({"scenarios": {SCENARIO: result}}, probe)


def run_places(database: str, data_dir: Path, number: int) -> tuple[str, Path]:
    """Platform run ``number``'s database name and data dir, each its own: MLflow keeps its store per database
    URL for the life of the process, and without ``FLYWHEEL_DATABASE_URL`` the platform's Postgres is a
    pgserver inside the data dir, whose URL names that dir (a second run in the same dir found MLflow's cached
    store of the first, dropped with it: "relation experiments does not exist")."""
    if number == 0:
        return database, data_dir / SCENARIO
    return f"{database}_{number}", data_dir / f"{SCENARIO}-{number}"


def _platform_run(args: argparse.Namespace, base: FlywheelSettings, options: DemoOptions, database: str,
                  data_dir: Path, last: bool) -> dict[str, Any]:
    """One platform run on a fresh data dir and database: the static champion's and the served model's per-pair
    held-out scores at each checkpoint, its training seconds to k400 and the pod's p95; with ``last``, the
    oracle too (fitted once per bench: it depends on the data, not on the platform's draw)."""
    data_dir = reset_dir(data_dir)
    started = time.monotonic()
    with replaying(base, options, data_dir, database, keep_database=args.keep_databases) as replay:
        replay.with_static = False  # the static champion is scored on the held-out pairs instead
        static_version = replay.wait_ready(timeout=1800)
        scores: dict[str, list[float]] = {static_version: pair_scores(replay, replay.model(static_version))}
        log.info("dialogue: champion %s serving after %.0fs, held-out score %.4f", static_version,
                 time.monotonic() - started, _mean(scores[static_version]))
        at: dict[int, dict[str, Any]] = {}

        def checkpoint(k: int) -> Any:
            def check(r: Replay) -> None:
                r.settle(timeout=1200, quiet=args.settle_quiet)
                version, semver = r.champion()
                if version not in scores:
                    scores[version] = pair_scores(r, r.model(version))
                at[k] = {"version": version, "semver": semver, "runs": len(r.timeline.runs)}
                log.info("dialogue after %d pairs: deployed %s, held-out score %.4f", k, semver,
                         _mean(scores[version]))
            return check

        replay.run(checkpoints={k: checkpoint(k) for k in CHECKPOINTS})
        figures = replay.finish()
        # the runs that trained on the first 400 pairs: those finished by the k400 checkpoint
        trained = [r for r in replay.timeline.runs[:at.get(400, {}).get("runs", len(replay.timeline.runs))]
                   if r["mode"] != "bootstrap"]
        run_seconds = sum(float(c.get("train_seconds") or 0.0) for r in trained for c in (r["candidates"] or []))
        replay.settle(timeout=1200, quiet=args.settle_quiet)  # the pod alone: no run, no swap under way
        p95 = latency(replay, args.latency_requests)
        oracles = oracle(replay, options, args.oracle_pairs or (200 if args.quick else 0),
                         max(1, args.oracle_seeds)) if last else None
    k_scores = {k: scores[at[k]["version"]] if k in at else None for k in CHECKPOINTS}
    k400 = k_scores.get(400)
    log.info("dialogue: platform run done in %.0f s: k400 %s, %d runs trained %.0f s, p95 %.0f ms, runs %s",
             time.monotonic() - started, None if k400 is None else round(_mean(k400), 4), len(trained), run_seconds,
             p95, figures["runs"])
    return {"static": scores[static_version], "at": k_scores, "run_seconds": round(run_seconds, 1),
            "p95_generate_ms": round(p95, 1), "verdicts": figures["runs"],
            "versions": {f"k{k}": at[k]["semver"] for k in at}, "oracle": oracles}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("--task generation")
    group.add_argument("--base", default="smollm2-135m-instruct", help="generation: the base model (--quick: "
                       "tiny-random)")
    group.add_argument("--max-tokens", type=int, default=24, help="generation: new tokens per answer and gate answer")
    group.add_argument("--lora-steps", type=int, default=0,
                       help="generation: LoRA steps per run (batch 8; 0, the demo's default: one epoch over the run's "
                       "pairs)")
    group.add_argument("--replay-pairs", type=int, default=1000,
                       help="generation: earlier training pairs an incremental run replays beside the new ones")
    group.add_argument("--holdout", type=int, default=120, help="generation: held-out target pairs scored (of 600; "
                       "a stream of 420 leaves 460 for the oracle)")
    group.add_argument("--oracle-pairs", type=int, default=0, help="generation: cap the oracle's pairs (0: all)")
    group.add_argument("--oracle-seeds", type=int, default=3,
                       help="generation: oracle adapters (seeds 0..n-1) averaged")
    group.add_argument("--resamples", type=int, default=2000, help="generation: bootstrap resamples of the intervals")
    group.add_argument("--latency-requests", type=int, default=20, help="generation: 64-token requests timed")
    group.add_argument("--settle-quiet", type=float, default=15.0,
                       help="generation: seconds with no run under way or started that a checkpoint waits before it "
                       "scores the served model (shorter: a run that starts later is missed)")
    group.add_argument("--gate-references", type=int, default=64,
                       help="generation: recent reserved pairs the gates score on beside the bootstrap's 12")
    group.add_argument("--runs", type=int, default=1,
                       help="generation: platform runs (each on a fresh platform; one oracle): the scores are their "
                       "means and the intervals also draw the runs")
    group.add_argument("--database", default="flywheel_efficacy_dialogue",
                       help="generation: the platform's database (dropped and created afresh; run n > 0 of --runs "
                       "uses NAME_n)")
