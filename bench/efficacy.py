"""Learning efficacy: does the running platform learn a drifted domain from its users' feedback?

Per scenario a fresh platform (embedded broker, its own database, the real ingest -> curation -> trainer
-> gates -> registry -> serving path) bootstraps a champion on vader_movies; then target-domain texts are
replayed through ``POST /predict`` and judged through ``POST /feedback`` (every prediction judged, 5%
label noise). After k = 100, 200, 400 labels the platform is let settle (every label landed, no run under
way) and the model it deploys is scored on held-out target rows it never saw. Baselines in the same run:
the static champion (never retrained) and an oracle, the same kind trained offline on every target label
outside the held-out rows (the best of target-only and corpus + target at each corpus weight the platform's
runs may choose).

The poisoned scenario repeats movies->tweets with 30% of the users flipping every label: the deployed
model must not end below the static champion, and curation must flag (quarantine or reject) >= 80% of
the flipped labels.

    python bench/efficacy.py [--kind tfidf-logreg|minilm-head] [--quick] [--scenario movies->products ...] [--orders 3]

Last line: ``{"scenarios": {...}, "poisoned": {...}}`` as the issue specifies.

``--orders N``: each clean scenario replayed in N stream orders (order 0 as split, then the same stream rows
shuffled with seeds 1..N-1; the held-out rows and so the oracle stay), each on a fresh platform; the order
moves the fraction of the oracle more than any recipe did (docs/benchmarks.md). A scenario's keys are then the
means over the orders (``first_promotion_at_label`` the median), beside ``fraction_of_oracle_at_400_se`` (its
standard error over the orders), ``k400_se`` (the held-out binomial standard error), ``first_promotion_at_labels``,
``promoted_by_150``, ``first_promoted_samples`` (per order, the stream samples the first promoted retrain
trained on: 10% of labels are reserved and curation holds some back, so 135 samples is ~150 labels) and
``orders`` (each order's figures).

``--task tabular``: the rainfall scenario (flywheel/demo/rainfall.py) on a fresh platform the same way: the
declared ``rainfall`` model (lightgbm; gates as a user sets them: accuracy and macro-F1 must each improve by
0.01 beside the weighted score's significant gain, recent outcomes weighing 0.9) bootstrapped on the days
before the drift (rows 0-11,999); then the first ``--outcomes`` (1,000) post-drift days are replayed from
row 12,000 through ``POST /v1/models/rainfall/predict`` at <= 15/s, each day's observed outcome sent
through ``POST /v1/models/rainfall/feedback`` 25 predictions later. After 250, 500 and all outcomes the
platform is let settle and the deployed model is scored on the post-drift rows 15,000-18,158, never
streamed. Baselines: the static champion (never retrained) and an oracle, lightgbm trained offline on the
post-drift rows 12,000-14,999 (the best of those alone and the history + them at corpus weights 1, 0.2 and
the model's 0.05). Last line: ``{"scenarios": {"rainfall": {"static", "oracle", "final",
"fraction_of_oracle", "outcomes"}}}``.

``--task generation``: the dialogue scenario (an NPC text generator learning chatterbot-corpus's knowledge topics from
its players' ratings and corrections; bench/_efficacy_generation.py). ``--quick`` runs it on the tiny-random
base (a smoke test: its scores mean nothing). Last line: ``{"scenarios": {"dialogue": {"static", "oracle",
"k100", "k200", "k400", "fraction_of_oracle_at_400", "run_seconds", "p95_generate_ms", ...}}}``: the scores are
means over 120 held-out pairs, the oracle the mean of 3 seeds (``oracle_seeds``), each with a bootstrap
``*_ci95`` interval.
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import math
import os
import statistics
import time
from pathlib import Path
from typing import Any

from bench import _efficacy_generation
from bench._host import HostProbe, emit
from bench._replay import replaying
from core.settings import FlywheelSettings
from flywheel.demo import (
    CORPUS_WEIGHT,
    KIND_PARAMS,
    SCENARIOS,
    DemoOptions,
    Replay,
    corpus_weight_choices,
    rainfall,
    read_rows,
    reset_dir,
    write_report,
)
from kinds.catalog import KINDS
from trainer.config import PolicyConfig

log = logging.getLogger("bench.efficacy")
CHECKPOINTS = (100, 200, 400)
TEXT_SCENARIOS = [name for name, s in SCENARIOS.items() if s.task == "text-classification"]


def tabular_oracle(replay: Replay, kind: str) -> float:
    """The kind trained on every post-drift row before the held-out ones (alone, and after the history at
    corpus weights 1, 0.2 and the model's), with default parameters; the best on the held-out rows."""
    best = 0.0
    history, target = replay.history, replay.target
    recipes = [(target, [1.0] * len(target))]
    for corpus_weight in dict.fromkeys((1.0, 0.2, rainfall.CORPUS_WEIGHT)):
        recipes.append((history + target, [corpus_weight] * len(history) + [1.0] * len(target)))
    for rows, weights in recipes:
        model = KINDS[kind](features=rainfall.features(), threads=1).fit([r.text for r in rows],
                                                                         [r.label for r in rows], weights)
        best = max(best, replay.accuracy_of(model))
    return best


def parse_kind_params(given: list[str]) -> dict[str, Any]:
    """``--kind-param NAME=JSON`` values as a dict (a value that is not JSON is taken as a string)."""
    found: dict[str, Any] = {}
    for item in given:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise SystemExit(f"--kind-param {item!r}: expected NAME=VALUE")
        try:
            found[name] = json.loads(value)
        except ValueError:
            found[name] = value
    return found


def oracle(replay: Replay, kind: str, extra: dict[str, Any] | None = None) -> float:
    """The same kind trained on every target label outside the held-out rows (target-only, and corpus +
    target at the default corpus weight and each one the platform's runs may choose), with the kind's
    default parameters and with the demo's; the best of them on the held-out rows. The demo's parameters
    are chosen for a few hundred labels: the defaults keep the oracle from being weakened by that choice."""
    source = read_rows(SCENARIOS[replay.options.scenario].source)
    target = replay.target
    best = 0.0
    recipes = [(target, [1.0] * len(target))]
    default = PolicyConfig().corpus_weight
    for corpus_weight in dict.fromkeys((default, CORPUS_WEIGHT.get(kind, default), *corpus_weight_choices(kind))):
        if corpus_weight == 0:  # the target-only recipe, already above
            continue
        recipes.append((source + target, [corpus_weight] * len(source) + [1.0] * len(target)))
    params = [{**p, **(extra or {})} for p in [{}, *([KIND_PARAMS[kind]] if KIND_PARAMS.get(kind) else [])]]
    for (rows, weights), kind_params in itertools.product(recipes, params):
        model = KINDS[kind](**kind_params).fit([r.text for r in rows], [r.label for r in rows], weights)
        proba = model.predict_proba([r.text for r in replay.holdout])
        right = sum(1 for p, r in zip(proba, replay.holdout, strict=True) if model.labels[int(p.argmax())] == r.label)
        best = max(best, right / len(replay.holdout))
    return best


def run_scenario(base: FlywheelSettings, root: Path, options: DemoOptions, with_oracle: bool,
                 checkpoints: tuple[int, ...] = CHECKPOINTS, oracle_known: float | None = None,
                 settle_timeout: float = 240.0, keep_database: bool = False) -> dict[str, Any]:
    """One replay of ``options`` on a fresh platform; with ``with_oracle`` its oracle (``oracle_known``: the
    one an earlier order of the same stream rows measured, the same rows and held-out rows). Its database is
    dropped afterwards unless ``keep_database``."""
    name = f"{options.scenario.replace('->', '-to-')}-{'poison' if options.poison else 'clean'}"
    name += f"-order{options.order}" if options.order else ""  # each order on its own database (below)
    data_dir = reset_dir(root / name)
    # a database per scenario: MLflow caches what it created per store URI, so a dropped and re-created
    # database under the same URL would look initialised to it
    # (and per kind: the two kinds' runs may go on side by side)
    database = f"flywheel_efficacy_{name.replace('-', '_')}_{options.kind.replace('-', '_')}"
    started = time.monotonic()
    with replaying(base, options, data_dir, database, keep_database=keep_database) as replay:
        static_version = replay.wait_ready()
        log.info("%s: champion %s serving after %.0fs", options.scenario, static_version,
                 time.monotonic() - started)
        at: dict[int, dict[str, Any]] = {}

        def checkpoint(k: int) -> Any:
            def check(r: Replay) -> None:
                r.settle(timeout=settle_timeout, quiet=15)
                version, semver = r.champion()
                at[k] = {"version": version, "semver": semver, "accuracy": round(r.accuracy(version), 4)}
                log.info("%s after %d labels: deployed %s, held-out accuracy %.4f", options.scenario, k,
                         semver, at[k]["accuracy"])
            return check

        replay.run(checkpoints={k: checkpoint(k) for k in checkpoints})
        replay.settle(timeout=settle_timeout, quiet=10)
        figures = replay.finish()
        paths = write_report(replay.timeline, data_dir / "report")
        log.info("%s: report %s", options.scenario, paths["html"])
        result: dict[str, Any] = {"static": figures["static_holdout_accuracy"],
                                  "final": figures["deployed_holdout_accuracy"], "figures": figures}
        for k in checkpoints:
            result[f"k{k}"] = at.get(k, {}).get("accuracy")
        # every prediction is judged at once in the text scenarios: the stream step is the label count
        promoted = [m.i for m in replay.timeline.markers if m.action in ("promote", "promoted")]
        result["first_promotion_at_label"] = min(promoted) + 1 if promoted else None
        result["first_promoted_samples"] = first_promoted_samples(replay.timeline.runs)
        result["holdout_rows"] = len(replay.holdout)
        if with_oracle and options.task == "tabular-classification":
            result["oracle"] = round(tabular_oracle(replay, options.kind), 4)
        elif with_oracle:
            result["oracle"] = (oracle_known if oracle_known is not None
                                else round(oracle(replay, options.kind, options.kind_params), 4))
            result["fraction_of_oracle_at_400"] = round(result["k400"] / result["oracle"], 4)
        result["seconds"] = round(time.monotonic() - started, 1)
        return result


ORDER_KEYS = ("order", "k100", "k200", "k400", "k400_se", "final", "fraction_of_oracle_at_400",
              "first_promotion_at_label", "first_promoted_samples", "seconds", "load")


def first_promoted_samples(runs: list[dict[str, Any]]) -> int | None:
    """The stream samples the first promoted retrain (not the bootstrap) was trained on, or None: what the
    first promotion needed, whatever the stream did while that run fitted (``first_promotion_at_label`` is
    where the stream was when the promotion showed, so it also counts the labels sent during the run)."""
    promoted = [r for r in runs if r["status"] == "promoted" and r["mode"] != "bootstrap"]
    return int(promoted[0]["sample_count"]) if promoted else None


def holdout_se(accuracy: float | None, rows: int) -> float | None:
    """The binomial standard error of an accuracy measured on ``rows`` held-out rows."""
    return None if accuracy is None or not rows else round(math.sqrt(accuracy * (1 - accuracy) / rows), 4)


def summary(results: list[dict[str, Any]]) -> dict[str, Any]:
    """A scenario's figures over its stream orders (:data:`ORDER_KEYS` of each under ``orders``). The keys
    of one order's run keep their names: ``k100``..``k400`` and ``fraction_of_oracle_at_400`` are the means
    over the orders, ``first_promotion_at_label`` the median (an order that promoted nothing counts as
    never: None when half of them or more did not); ``fraction_of_oracle_at_400_se`` is the standard error
    of that mean over the orders (None for one order), ``k400_se`` the held-out standard error of one
    order's k400 (the mean's binomial error on the held-out rows), ``promoted_by_150`` how many orders
    promoted within 150 labels, ``first_promoted_samples`` each order's (:func:`first_promoted_samples`)."""
    def mean(key: str) -> float | None:
        values = [r[key] for r in results]
        return None if any(v is None for v in values) else round(statistics.fmean(values), 4)

    for r in results:
        r["k400_se"] = holdout_se(r["k400"], r["holdout_rows"])
    extra = sorted((k for k in results[0] if k[0] == "k" and k[1:].isdigit() and k not in ORDER_KEYS),
                   key=lambda k: int(k[1:]))  # checkpoints beyond 100, 200, 400 (--checkpoint)
    firsts = [r["first_promotion_at_label"] for r in results]
    ranked = sorted(firsts, key=lambda v: math.inf if v is None else v)
    median = ranked[(len(ranked) - 1) // 2] if len(ranked) % 2 else None
    if len(ranked) % 2 == 0 and ranked[len(ranked) // 2] is not None:
        median = (ranked[len(ranked) // 2 - 1] + ranked[len(ranked) // 2]) / 2
    fractions = [r["fraction_of_oracle_at_400"] for r in results]
    return {
        "static": results[0]["static"], "oracle": results[0]["oracle"],
        **{k: mean(k) for k in sorted(("k100", "k200", "k400", *extra), key=lambda k: int(k[1:]))},
        "fraction_of_oracle_at_400": mean("fraction_of_oracle_at_400"),
        "first_promotion_at_label": median,
        "k400_se": holdout_se(mean("k400"), results[0]["holdout_rows"]),
        "fraction_of_oracle_at_400_se": (round(statistics.stdev(fractions) / math.sqrt(len(fractions)), 4)
                                         if len(fractions) > 1 and None not in fractions else None),
        "first_promotion_at_labels": firsts,
        "promoted_by_150": sum(1 for v in firsts if v is not None and v <= 150),
        "first_promoted_samples": [r.get("first_promoted_samples") for r in results],
        "holdout_rows": results[0]["holdout_rows"],
        "orders": [{k: r.get(k) for k in (*ORDER_KEYS, *extra)} for r in results],
    }


def main() -> None:
    probe = HostProbe()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", default="text", choices=["text", "tabular", "generation"])
    parser.add_argument("--kind", default=None, choices=sorted(KINDS),
                        help="default: tfidf-logreg (text), lightgbm (tabular)")
    parser.add_argument("--kind-param", action="append", default=[], metavar="NAME=JSON",
                        help="text: a parameter of the kind over the demo's, for the platform and the oracle alike "
                             "(repeatable; e.g. precision='\"fp32\"' for minilm-head)")
    parser.add_argument("--outcomes", type=int, default=1000, help="tabular: post-drift outcomes replayed")
    parser.add_argument("--quick", action="store_true", help="movies->tweets only, no poisoned run (generation: the "
                                                             "tiny-random base, a smoke test)")
    parser.add_argument("--scenario", action="append", choices=TEXT_SCENARIOS, dest="scenarios",
                        help="only these clean scenarios, no poisoned run (repeatable)")
    parser.add_argument("--data-dir", type=Path, default=Path(".flywheel/bench-efficacy"))
    parser.add_argument("--keep-databases", action="store_true",
                        help="keep each platform's Postgres database (flywheel_efficacy_*) after its run; by default "
                             "it is dropped once the run's report is written to --data-dir")
    parser.add_argument("--settle-timeout", type=float, default=240.0,
                        help="text: seconds a checkpoint waits for the platform to settle (every label landed, no "
                             "run under way); under load a run outlasts 240 s and the checkpoint measures the machine")
    parser.add_argument("--orders", type=int, default=1,
                        help="text: stream orders per clean scenario (0..N-1; the same rows and held-out rows, "
                             "shuffled; order 0 as split), each on a fresh platform; the scenario's figures are "
                             "their means, each order's under 'orders'")
    parser.add_argument("--checkpoint", type=int, action="append", dest="checkpoints", metavar="K",
                        help="text: let the platform settle after K labels and score what it deploys (repeatable; "
                             "default 100, 200, 400; 400 is always one). The stream runs at 30 labels/s, faster "
                             "than a run: without a checkpoint at 150, a promotion within 150 labels can only come "
                             "from a run finished in the settle at 100")
    parser.add_argument("--threshold", type=int, default=None,
                        help="training samples between retrains (each a full refit); 10%% of labels are reserved "
                             "for evaluation, so 50 means a retrain about every 56 labels (default: 50 for text, "
                             "the scenario's 200 for tabular)")
    _efficacy_generation.add_arguments(parser)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("alembic", "pgserver", "httpx", "uvicorn.access", "mlflow", "streams", "serving", "trainer",
                  "flywheel", "curation", "great_expectations"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    base = FlywheelSettings()
    if args.task == "tabular":
        tabular(args, base, probe)
        return
    if args.task == "generation":
        _efficacy_generation.run(args, base, probe)
        return
    args.kind = args.kind or "tfidf-logreg"
    args.threshold = args.threshold or 50
    scenarios = args.scenarios or (["movies->tweets"] if args.quick else TEXT_SCENARIOS)
    checkpoints = tuple(sorted({*(args.checkpoints or CHECKPOINTS), 400}))
    if checkpoints[0] < 1:
        parser.error(f"--checkpoint: label counts are positive, got {checkpoints[0]}")
    stream = max(checkpoints) + 60
    out: dict[str, Any] = {"scenarios": {}}
    kind_params = parse_kind_params(args.kind_param)
    print(f"kind: {args.kind} {kind_params or ''}, stream orders {list(range(args.orders))}", flush=True)
    for name in scenarios:
        results: list[dict[str, Any]] = []
        for order in range(args.orders):
            options = DemoOptions(scenario=name, stream=stream, feedback_rate=1.0, noise=0.05, kind=args.kind,
                                  rate=30.0, incremental_threshold=args.threshold, order=order,
                                  kind_params=kind_params)
            load = [round(x, 2) for x in os.getloadavg()]
            result = run_scenario(base, args.data_dir, options, with_oracle=True,
                                  oracle_known=results[0]["oracle"] if results else None, checkpoints=checkpoints,
                                  settle_timeout=args.settle_timeout, keep_database=args.keep_databases)
            result["order"], result["load"] = order, [load, [round(x, 2) for x in os.getloadavg()]]
            results.append(result)
            print(f"{name}, order {order}: static {result['static']}, k100 {result['k100']}, k200 {result['k200']}, "
                  f"k400 {result['k400']} (+- {holdout_se(result['k400'], result['holdout_rows'])}), oracle "
                  f"{result['oracle']} -> {result['fraction_of_oracle_at_400']} of the oracle, first promotion at "
                  f"label {result['first_promotion_at_label']} (trained on {result['first_promoted_samples']} samples; "
                  f"{result['seconds']} s, load {load} -> "
                  f"{result['load'][1]})", flush=True)
        out["scenarios"][name] = summary(results)
        if len(results) > 1:
            found = out["scenarios"][name]
            print(f"{name}, {len(results)} orders: k400 {found['k400']}, {found['fraction_of_oracle_at_400']} "
                  f"+- {found['fraction_of_oracle_at_400_se']} of the oracle (orders "
                  f"{[r['fraction_of_oracle_at_400'] for r in results]}), first promotions "
                  f"{found['first_promotion_at_labels']}", flush=True)
    if not (args.quick or args.scenarios):
        options = DemoOptions(scenario="movies->tweets", stream=stream, feedback_rate=1.0, noise=0.0, poison=0.3,
                              kind=args.kind, rate=30.0, incremental_threshold=args.threshold, kind_params=kind_params)
        result = run_scenario(base, args.data_dir, options, with_oracle=False, keep_database=args.keep_databases)
        f = result["figures"]
        print(f"poisoned movies->tweets: static {result['static']}, final {result['final']}, flipped labels "
              f"{f['poisoned_feedback']}, flagged {f['poisoned_flagged']} ({f['flip_recall']}), "
              f"all flagged samples {f['flagged_samples']} ({result['seconds']} s)", flush=True)
        out["poisoned"] = {"static": result["static"], "final": result["final"], "flip_recall": f["flip_recall"]}
    emit(out, probe)


def tabular(args: argparse.Namespace, base: FlywheelSettings, probe: HostProbe) -> None:
    """The rainfall scenario from the drift on (module docstring)."""
    load = [round(x, 2) for x in os.getloadavg()]
    options = DemoOptions.for_scenario("rainfall", start=rainfall.DRIFT, stream=args.outcomes, kind=args.kind,
                                       incremental_threshold=args.threshold)
    checkpoints = (*tuple(k for k in (250, 500) if k < args.outcomes), args.outcomes)
    print(f"rainfall: {options.kind}, {args.outcomes} post-drift outcomes, load {load}", flush=True)
    result = run_scenario(base, args.data_dir, options, with_oracle=True, checkpoints=checkpoints,
                          keep_database=args.keep_databases)
    f = result["figures"]
    fraction = round(result[f"k{args.outcomes}"] / result["oracle"], 4)
    print(f"rainfall: static {result['static']}, "
          + ", ".join(f"k{k} {result[f'k{k}']}" for k in checkpoints)
          + f", oracle {result['oracle']} -> {fraction} of the oracle; runs {f['runs']}, "
          f"{f['feedback']} outcomes ({result['seconds']} s, load {load} -> "
          f"{[round(x, 2) for x in os.getloadavg()]})", flush=True)
    emit({"scenarios": {"rainfall": {
        "static": result["static"], "oracle": result["oracle"], "final": result[f"k{args.outcomes}"],
        "fraction_of_oracle": fraction, "outcomes": f["feedback"]}}}, probe)


if __name__ == "__main__":
    main()
