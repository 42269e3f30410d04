"""One full gated training run, timed in isolation: the demo's trainer config (every gate on, its thresholds,
corpus weights and kind parameters, read from :func:`flywheel.demo.platform.demo_settings`), a champion
bootstrapped from the demo corpus, target-domain feedback landed and curated in Postgres the way ingest and
curation land it, then ``maybe_train("admin", requested="full")`` twice:

1. against the bootstrap champion, on ``labels`` feedback samples;
2. when the first promoted, against that full-mode champion on ``labels + more`` samples: the demo's steady
   state, where the champion's recipe is refit per fold too (``cross_fit_champion``).

For minilm-head every text's embedding is computed before the clock starts (the platform caches them in
Postgres as they arrive), so the figure is the run itself. Run alone (``python -m bench._full_run``) it prints
the figures as its last JSON line; under a profiler it is the profile of one full run. ``cpu_seconds`` is
the CPU time of the process and its fit workers during the run (every thread): on a shared machine it says
what the wall clock cannot, how much work the run is. The trainer is warmed first (:meth:`Trainer.warm`,
as the trainer service does at start: fit workers started, Great Expectations imported).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from core import db
from core.settings import FlywheelSettings
from curation import CurationConfig, Curator, PostgresCurationStore
from curation.config import load_curation_config
from flywheel.demo.options import SCENARIOS, DemoOptions
from flywheel.demo.platform import demo_settings
from flywheel.lifecycle import lifecycle
from trainer.config import TrainerConfig, load_trainer_config
from trainer.data import CorpusRow, read_labelled_csv

DATA = Path(__file__).resolve().parents[1] / "data"
LABELS = ("negative", "neutral", "positive")


def _rows(name: str) -> list[CorpusRow]:
    found = read_labelled_csv(DATA / f"{name}.csv", LABELS)
    random.Random(7).shuffle(found)  # the files are ordered by sentiment
    return found


def demo_configs(kind: str, scenario: str, work: Path) -> tuple[TrainerConfig, CurationConfig]:
    """The trainer and curation configs a demo of ``scenario`` with ``kind`` runs with."""
    settings = demo_settings(FlywheelSettings(), DemoOptions.for_scenario(scenario, kind=kind), work / "demo",
                             None, 0)
    assert settings.trainer_config is not None and settings.curation_config is not None
    return load_trainer_config(settings.trainer_config), load_curation_config(settings.curation_config)


def land(url: str, samples: Sequence[CorpusRow], curation: CurationConfig, model: str = "sentiment") -> None:
    """Predictions + joined label feedback in one transaction (as ingest commits them), then curated."""
    with db.connect(url) as conn, conn.cursor() as cur:
        ids = [uuid.uuid4().hex for _ in samples]
        with cur.copy("COPY predictions (prediction_id, model, model_version, variant, text, label, probabilities, "
                      "latency_ms, domain, ts) FROM STDIN") as copy:
            for pid, row in zip(ids, samples, strict=True):
                copy.write_row((pid, model, "1", "champion", row.text, "neutral",
                                json.dumps({"negative": 0.2, "neutral": 0.6, "positive": 0.2}), 3.0, row.domain,
                                "2026-11-22T00:00:00Z"))
        with cur.copy("COPY feedback (feedback_id, content_key, prediction_id, label, source, ts, status, model, "
                      "model_version, variant, predicted_label, resolved_at) FROM STDIN") as copy:
            for n, (pid, row) in enumerate(zip(ids, samples, strict=True)):
                copy.write_row((uuid.uuid4().hex, uuid.uuid4(), pid, row.label, f"user{n % 60}",
                                "2026-11-22T00:00:01Z", "joined", model, "1", "champion", "neutral",
                                "2026-11-22T00:00:02Z"))
        conn.commit()
    curator = Curator(curation, LABELS)
    with db.connect(url, autocommit=True) as conn:
        store = PostgresCurationStore(conn, curation.annotators, model=model)
        while curator.curate_batch(store, sweep=True) is not None:
            pass


def _cpu_seconds() -> float:
    """CPU seconds of this process and of its fit workers (children started by multiprocessing, not the
    broker the bench may run), every thread."""
    import psutil  # type: ignore[import-untyped]

    me = psutil.Process()
    total = float(sum(me.cpu_times()[:2]))
    for child in me.children(recursive=True):
        try:
            if any("multiprocessing" in part for part in child.cmdline()):
                total += sum(child.cpu_times()[:2])
        except psutil.Error:
            continue
    return total


def measure_full(kind: str, bootstrap: str, url: str, *, labels: int = 300, more: int = 150,
                 scenario: str = "movies->tweets", corpus_rows: int | None = None,
                 workers: int | None = None, params: dict[str, Any] | None = None,
                 policy: dict[str, Any] | None = None) -> dict[str, Any]:
    """Two full runs of ``kind`` with the demo's config on a fresh database ``url`` (see the module doc);
    ``workers``: the trainer's fit workers (default: the config's, 2); ``params``: the kind's parameters
    over the demo's (e.g. ``{"solver": "lbfgs"}``: a tfidf-logreg as fitted before); ``policy``: policy
    settings over the demo's (e.g. ``{"start_at_champion": false}``)."""
    with tempfile.TemporaryDirectory() as tmp:
        config, curation = demo_configs(kind, scenario, Path(tmp))
        if workers is not None:
            config = config.model_copy(update={"workers": workers})
        if policy:
            config = config.model_copy(update={"policy": config.policy.model_copy(update=policy)})
        if params:
            kind_params = {**config.policy.kind_params, kind: {**config.policy.kind_params.get(kind, {}), **params}}
            config = config.model_copy(update={"policy": config.policy.model_copy(update={"kind_params": kind_params})})
        settings = FlywheelSettings(kafka_bootstrap=bootstrap, database_url=url,  # type: ignore[arg-type]
                                    topic_prefix=f"full{uuid.uuid4().hex[:6]}", data_dir=Path(tmp) / "data",
                                    metrics_port=0, schema_registry_port=0)
        source, target = SCENARIOS[scenario].source, SCENARIOS[scenario].target
        stream = _rows(target)
        with lifecycle(settings, settings.kafka_connection(), url, config) as lc:
            started = time.perf_counter()
            boot = lc.trainer.bootstrap(_rows(source)[:corpus_rows], source=f"{source}.csv", kind=kind)
            bootstrap_s = time.perf_counter() - started
            if boot.status != "promoted":  # no champion, no full run to time: say why instead of a figure
                sys.stderr.write(f"bootstrap of {kind} was {boot.status}: {boot.reason}\n")
                return {"kind": kind, "corpus_rows": corpus_rows, "workers": config.workers, "params": params,
                        "policy": policy, "seconds": None, "cpu_seconds": None, "runs": [],
                        "bootstrap_seconds": round(bootstrap_s, 2),
                        "bootstrap": f"{boot.status}: {boot.reason}"[:2000]}
            lc.trainer.warm()  # as the trainer service does at start: fit workers up, Great Expectations imported
            runs = []
            for n, batch in enumerate((stream[:labels], stream[labels:labels + more])):
                land(url, batch, curation)
                if kind == "minilm-head":  # the platform embeds texts as they arrive: cached before the run
                    lc.trainer.resources.embedder.embed([r.text for r in stream[:labels + more]])  # type: ignore[union-attr]
                started, cpu = time.perf_counter(), _cpu_seconds()
                result = lc.trainer.maybe_train("admin", requested="full")
                seconds, cpu = time.perf_counter() - started, _cpu_seconds() - cpu
                runs.append({"seconds": round(seconds, 3), "cpu_seconds": round(cpu, 3), "status": result.status,
                             "against": "bootstrap champion" if n == 0 else "full champion",
                             "samples": labels + (more if n else 0),
                             "chosen": result.version.tags.get("corpus_weight") if result.version else None,
                             "candidates": [{"name": c["name"], "passed": c["passed"], "score": round(c["score"], 4),
                                             "verdicts": [v["gate"] + (":pass" if v["passed"] else ":fail")
                                                          for v in c["verdicts"]]} for c in result.candidates]})
                if result.status not in ("promoted", "canary"):
                    break
    return {"kind": kind, "corpus_rows": corpus_rows, "workers": config.workers, "params": params, "policy": policy,
            "seconds": max(r["seconds"] for r in runs), "cpu_seconds": max(r["cpu_seconds"] for r in runs),
            "runs": runs,
            "bootstrap_seconds": round(bootstrap_s, 2)}


def main() -> None:
    from bench._host import HostProbe, emit
    from bench._stack import bench_stack

    probe = HostProbe()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kinds", nargs="+", default=["tfidf-logreg", "minilm-head"])
    parser.add_argument("--labels", type=int, default=300)
    parser.add_argument("--more", type=int, default=150)
    parser.add_argument("--corpus-rows", type=int, default=None, help="of the demo corpus (default: all, as the demo)")
    parser.add_argument("--workers", type=int, nargs="+", default=[None],
                        help="fit workers, one measurement each in turn (e.g. 2 1 2 1: serial vs parallel "
                             "under the same load); default: the config's")
    parser.add_argument("--params", type=json.loads, nargs="+", default=[{}],
                        help="the kind's parameters over the demo's, as JSON, one measurement each in turn (each "
                             "with every --workers), e.g. '{\"solver\": \"lbfgs\"}' '{}': before and after "
                             "under the same load")
    parser.add_argument("--policy", type=json.loads, nargs="+", default=[{}],
                        help="policy settings over the demo's, as JSON, paired in turn with --params (the last "
                             "repeated), e.g. --params '{\"solver\": \"lbfgs\"}' '{}' --policy "
                             "'{\"start_at_champion\": false}' '{}': as fitted before issue 18's solver work, "
                             "then now")
    args = parser.parse_args()
    results: dict[str, Any] = {}
    for kind in args.kinds:
        variants = max(len(args.params), len(args.policy))
        for n in range(variants):
            params, policy = args.params[min(n, len(args.params) - 1)], args.policy[min(n, len(args.policy) - 1)]
            for workers in args.workers:
                name = kind
                if len(args.workers) > 1:
                    name += f"/workers={workers}"
                if variants > 1:
                    name += f"/{json.dumps({**params, **policy}, sort_keys=True)}"
                if name != kind:
                    name += f"#{len(results)}"
                with bench_stack() as (bootstrap, url):
                    results[name] = measure_full(kind, bootstrap, url, labels=args.labels, more=args.more,
                                                 corpus_rows=args.corpus_rows, workers=workers, params=params,
                                                 policy=policy)
                sys.stderr.write(f"{name}: {results[name]}\n")
    emit({"full_run_seconds": {k: r["seconds"] for k, r in results.items()},
          "by_champion": {k: {run["against"]: {"seconds": run["seconds"], "cpu_seconds": run["cpu_seconds"]}
                              for run in r["runs"]} for k, r in results.items()},
          "details": results}, probe)


if __name__ == "__main__":
    main()
