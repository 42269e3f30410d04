"""How the tree kinds (``lightgbm``, ``xgboost``) recover from the abrupt drift in data/rainfall.csv,
offline: is "within 1,000 outcomes, >= 0.9 of an oracle" (issue 19) reachable, and how?

The file is chronological, with a drift injected after row 12,000. Every model is scored on the same
held-out post-drift rows (15,000-18,158), never trained on:

- ``static``: trained on rows 0-11,999 (before the drift) only;
- ``oracle``: trained on the 3,000 post-drift rows 12,000-14,999;
- after the first ``k`` post-drift outcomes (rows 12,000 .. 12,000+k), k in 250/500/1,000/2,000:
  ``new_only`` (a refit on them alone), ``refit_w1`` / ``refit_w10`` (a full refit on the pre-drift rows +
  them, weighted 1 or 10), ``warm50`` / ``warm200`` (``partial_fit`` of the static model on them: 50 or
  200 more trees), ``warm200_replay`` (the same with 1,000 random pre-drift rows replayed beside them).

Each with the kind's default params, and (at k = 1,000) with params found by ``trainer.search`` on the
1,000 outcomes alone (3-fold CV, 20 trials: training rows only). Metrics: accuracy, ROC AUC, and their
ratio to the oracle's; ``lift`` = (accuracy - majority) / (oracle accuracy - majority), since 64% of
the held-out rows are dry and 0.9 of the oracle's accuracy is barely above always saying "dry".

    .venv/bin/python bench/tabular_offline.py [--kinds lightgbm xgboost] [--threads 1]

Last line: {"load": [...], "majority": ..., "<kind>": {"static": {...}, "oracle": {...}, "k=<k>": {...},
"tuned": {...}}}.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as `python bench/tabular_offline.py`: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import csv
import json
import os
import random
import tempfile
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.metrics import roc_auc_score

from bench._host import HostProbe, emit
from kinds import ModelKind, create, load_model
from tasks import FeatureSchema, Row
from trainer.search import search

DATA = Path(__file__).resolve().parents[1] / "data"
COLUMNS = {"temperature": "temperature", "dew point": "dew_point", "sea-level pressure": "sea_level_pressure",
           "visibility": "visibility", "average wind speed": "average_wind_speed",
           "max sustained wind-speed": "max_sustained_wind_speed", "minimum temperature": "minimum_temperature",
           "maximum temperature": "maximum_temperature"}
FEATURES = FeatureSchema.from_params([{"name": name, "type": "numeric"} for name in COLUMNS.values()]).to_params()
DRIFT, ORACLE_END, TEST = 12_000, 15_000, slice(15_000, None)
OUTCOMES = (250, 500, 1_000, 2_000)


def rainfall() -> tuple[list[Row], list[str]]:
    with (DATA / "rainfall.csv").open(newline="") as fh:
        records = list(csv.DictReader(fh))
    rows: list[Row] = [{name: float(r[column]) for column, name in COLUMNS.items()} for r in records]
    return rows, ["rain" if r["rain"] == "1" else "dry" for r in records]


class Bench:
    def __init__(self, kind: str, threads: int) -> None:
        self.kind, self.threads = kind, threads
        self.rows, self.labels = rainfall()
        self.test_rows, self.test_labels = self.rows[TEST], self.labels[TEST]
        self.truth = np.array([y == "rain" for y in self.test_labels])
        self.oracle: dict[str, float] = {}

    def make(self, params: dict[str, Any]) -> ModelKind:
        return create(self.kind, features=FEATURES, threads=self.threads, **params)

    def fit(self, params: dict[str, Any], start: int, stop: int, *, before: int = 0, weight: float = 1.0
            ) -> tuple[ModelKind, float]:
        """A refit on the rows [start, stop) (weight ``weight``) after the rows [0, before) (weight 1)."""
        started = time.perf_counter()
        rows, labels = self.rows[:before] + self.rows[start:stop], self.labels[:before] + self.labels[start:stop]
        model = self.make(params).fit(rows, labels, [1.0] * before + [weight] * (stop - start))
        return model, time.perf_counter() - started

    def score(self, model: ModelKind, seconds: float) -> dict[str, float]:
        proba = model.predict_proba(self.test_rows)[:, list(model.labels).index("rain")]
        accuracy = float(np.mean((proba > 0.5) == self.truth))
        auc = float(roc_auc_score(self.truth, proba))
        found = {"accuracy": round(accuracy, 4), "auc": round(auc, 4), "fit_s": round(seconds, 2)}
        if self.oracle:
            majority = 1 - float(self.truth.mean())
            found |= {"acc_ratio": round(accuracy / self.oracle["accuracy"], 3),
                      "auc_ratio": round(auc / self.oracle["auc"], 3),
                      "lift": round((accuracy - majority) / (self.oracle["accuracy"] - majority), 3)}
        return found

    def after(self, params: dict[str, Any], statics: dict[int, Path], k: int) -> dict[str, dict[str, float]]:
        """Every way to use the first ``k`` post-drift outcomes (module docstring)."""
        new = slice(DRIFT, DRIFT + k)
        out = {"new_only": self.score(*self.fit(params, DRIFT, DRIFT + k))}
        for weight in (1.0, 10.0):
            out[f"refit_w{weight:g}"] = self.score(*self.fit(params, DRIFT, DRIFT + k, before=DRIFT, weight=weight))
        replay = random.Random(0).sample(range(DRIFT), 1_000)
        for name, rounds, extra in (("warm50", 50, []), ("warm200", 200, []), ("warm200_replay", 200, replay)):
            model = load_model(statics[rounds])  # the static model, configured to add ``rounds`` trees
            started = time.perf_counter()
            model.partial_fit(self.rows[new] + [self.rows[i] for i in extra],
                              self.labels[new] + [self.labels[i] for i in extra])
            out[name] = self.score(model, time.perf_counter() - started)
        return out

    def statics(self, params: dict[str, Any], directory: Path) -> tuple[dict[str, float], dict[int, Path]]:
        """The static model's score, and it saved twice: set to warm start with 50 and with 200 trees."""
        saved: dict[int, Path] = {}
        for rounds in (50, 200):
            model, seconds = self.fit({**params, "warm_rounds": rounds}, 0, DRIFT)
            model.save(directory / f"static-{rounds}")
            saved[rounds] = directory / f"static-{rounds}"
        return self.score(model, seconds), saved

    def run(self, search_trials: int, directory: Path) -> dict[str, Any]:
        report: dict[str, Any] = {}
        self.oracle = report["oracle"] = self.score(*self.fit({}, DRIFT, ORACLE_END))
        report["static"], statics = self.statics({}, directory / "default")
        progress(self.kind, "static/oracle", report)
        for k in OUTCOMES:
            report[f"k={k}"] = self.after({}, statics, k)
            progress(self.kind, f"k={k}", report[f"k={k}"])
        started = time.perf_counter()
        found = search(self.make, self.rows[DRIFT:DRIFT + 1_000], self.labels[DRIFT:DRIFT + 1_000], None,
                       create(self.kind, features=FEATURES).search_space, folds=3, budget_s=300,
                       max_trials=search_trials, seed=0)
        search_s = time.perf_counter() - started
        tuned_static, tuned_statics = self.statics(found.best_params, directory / "tuned")
        report["tuned"] = {"params": {k: round(v, 4) if isinstance(v, float) else v
                                      for k, v in found.best_params.items()},
                           "cv_accuracy": round(found.best_score, 4), "trials": found.trials,
                           "search_s": round(search_s, 1), "static": tuned_static,
                           "oracle": self.score(*self.fit(found.best_params, DRIFT, ORACLE_END)),
                           "k=1000": self.after(found.best_params, tuned_statics, 1_000)}
        progress(self.kind, "tuned", report["tuned"])
        return report


def progress(kind: str, step: str, found: object) -> None:
    sys.stderr.write(f"{kind} {step}: {json.dumps(found)}\n")
    sys.stderr.flush()


def main(argv: Sequence[str] | None = None) -> None:
    probe = HostProbe()
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--kinds", nargs="+", default=["lightgbm", "xgboost"])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--search-trials", type=int, default=20)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    report: dict[str, Any] = {"load_start": [round(x, 2) for x in os.getloadavg()], "cpus": os.cpu_count()}
    with tempfile.TemporaryDirectory() as tmp:
        for kind in args.kinds:
            bench = Bench(kind, args.threads)
            report["majority"] = round(1 - float(bench.truth.mean()), 4)
            report[kind] = bench.run(args.search_trials, Path(tmp) / kind)
    report |= {"load_end": [round(x, 2) for x in os.getloadavg()], "elapsed_s": round(time.perf_counter() - started)}
    emit(report, probe)


if __name__ == "__main__":
    main()
