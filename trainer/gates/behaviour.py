"""Behavioural gate: the candidate runs the versioned CheckList-style suite (see :mod:`trainer.gates.suite`)
and must reach a pass rate per case type; then ``predict_proba`` latency on fixed-size batches (p95 over
timed repetitions after a warm-up) must stay within the budget.

A tabular model (:attr:`GateInput.features`) has no text suite; it must answer rows drawn from its feature
schema (every category, both booleans, range ends and midpoints, optional features absent) with finite
probabilities summing to 1, answer the same rows the same way (twice, and in reverse order within a
batch), and meet the same latency budget on batches of such rows.

Latency batches are suite texts tagged with a per-check nonce, so every timed text is new: a model with an
embedding cache (``minilm-head``) would otherwise be timed on cache hits. The price is that such a cache
keeps ``(latency_warmup + latency_repetitions) * batch_size`` throw-away entries per check.
"""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from kinds.base import ModelKind, Probabilities
from kinds.exceptions import KindError
from tasks import FeatureSchema, Row
from trainer.exceptions import TrainerError
from trainer.gates._private import jsonable
from trainer.gates.base import Clock, Gate, GateInput, Verdict, unusable_model
from trainer.gates.exceptions import ArtifactWriteError
from trainer.gates.suite import CASE_TYPES, BehaviourSuite, CaseType, DirectionalCase, InvarianceCase, load_suite


def _default_rates() -> dict[CaseType, float]:
    # measured on suite v1: tfidf-logreg on all of vader_movies 0.95 / 0.73 / 0.77, trained on
    # label-flipped data 0.95 / 0.40 / 0.15 (invariance is label-agnostic, so it cannot tell them apart)
    # directional / mft seen for tfidf-logreg: 3000 movie rows 0.60 / 0.62, 2800 rows 0.53 directional,
    # 640 rows 0.27 / 0.46; so 0.5 passes a usable baseline and refuses a starved or flipped model
    return {"invariance": 0.9, "directional": 0.5, "mft": 0.5}


class BehaviourConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    suite_version: str = Field(default="v1", pattern=r"^v[0-9]+$")
    suite_path: Path | None = None  # a test file outside the package; overrides suite_version
    min_pass_rate: dict[CaseType, float] = Field(default_factory=_default_rates)
    directional_min_shift: float = Field(default=0.0, ge=0.0)  # probability must move by more than this
    batch_size: int = Field(default=32, ge=1)
    latency_warmup: int = Field(default=3, ge=0)
    latency_repetitions: int = Field(default=20, ge=1)
    # measured on this 2-core CPU (shared, load ~4.5): minilm-head p50 770 ms, p95 1030 ms per batch of 32;
    # tfidf-logreg p95 2-10 ms. The default lets MiniLM through and stops anything far slower.
    latency_budget_ms: float = Field(default=1500.0, gt=0.0)


class BehaviourGate(Gate[BehaviourConfig]):
    """Loading the suite happens here, so a broken test file fails when the gate is built
    (:class:`~trainer.gates.exceptions.BehaviourSuiteError`), not when a candidate is checked."""

    name = "behaviour"

    def __init__(self, config: BehaviourConfig | None = None, *, clock: Clock = time.perf_counter) -> None:
        super().__init__(config or BehaviourConfig(), clock=clock)
        self.suite: BehaviourSuite = load_suite(self.config.suite_path, self.config.suite_version)

    def check(self, inputs: GateInput) -> Verdict:
        problem = unusable_model(inputs.candidate, "candidate")
        if problem is not None:
            return self.fail(problem)
        model = inputs.candidate
        assert model is not None
        if inputs.features is not None:
            return self._tabular(model, inputs.features)
        texts = self.suite.texts()
        try:
            proba = model.predict_proba(texts)
            latency = self._latency(model, texts)
        except TrainerError as exc:
            return self.fail(f"candidate predict_proba failed: {exc}")
        if proba.shape != (len(texts), len(model.labels)):
            return self.fail(f"candidate predict_proba returned shape {proba.shape} for {len(texts)} texts "
                             f"and {len(model.labels)} labels")
        cases = self._run_cases(model, dict(zip(texts, proba, strict=True)))
        summary = {t: [c for c in cases if c["type"] == t] for t in CASE_TYPES}
        rates = {t: sum(c["passed"] for c in cs) / len(cs) for t, cs in summary.items() if cs}
        required = self.config.min_pass_rate
        problems = [f"{t} pass rate {rates[t]:.2f} ({_count(summary[t])}) < {required[t]:g}, failed "
                    + _ids([c["id"] for c in summary[t] if not c["passed"]])
                    for t in rates if t in required and rates[t] < required[t]]
        budget, batch = self.config.latency_budget_ms, self.config.batch_size
        latency_text = f"p95 predict_proba latency {latency['p95_ms']:.2f} ms per batch of {batch}"
        if latency["p95_ms"] > budget:
            problems.append(f"{latency_text} > budget {budget:g} ms")
        details = {"suite_version": self.suite.version, "cases": len(cases),
                   "labels_missing_from_model": sorted(set(self.suite.labels) - set(model.labels)),
                   "pass_rates": rates, "required": {t: required[t] for t in rates if t in required},
                   "counts": {t: [sum(c["passed"] for c in cs), len(cs)] for t, cs in summary.items() if cs},
                   "failed": {t: [c["id"] for c in cs if not c["passed"]] for t, cs in summary.items() if cs},
                   "latency": latency}
        artifacts = self._write(self.artifact_dir(inputs), cases, latency)
        prefix = f"behaviour suite v{self.suite.version}"
        if problems:
            return self.verdict(False, f"{prefix} failed: " + "; ".join(problems), jsonable(details), artifacts)
        met = ", ".join(f"{t} {_count(summary[t])}={rates[t]:.2f}" for t in rates)
        return self.verdict(True, f"{prefix} passed: {met}; {latency_text} <= {budget:g} ms",
                            jsonable(details), artifacts)

    def _tabular(self, model: ModelKind, features: FeatureSchema) -> Verdict:
        cfg = self.config
        rows = schema_rows(features, max(cfg.batch_size, 16))
        try:
            first = np.asarray(model.predict_proba(rows), dtype=np.float64)
            again = np.asarray(model.predict_proba(rows), dtype=np.float64)
            reversed_ = np.asarray(model.predict_proba(rows[::-1]), dtype=np.float64)[::-1]
            timings = []
            for rep in range(cfg.latency_warmup + cfg.latency_repetitions):
                batch = [rows[(rep + i) % len(rows)] for i in range(cfg.batch_size)]
                started = self.clock()
                model.predict_proba(batch)
                if rep >= cfg.latency_warmup:
                    timings.append((self.clock() - started) * 1000)
        except (TrainerError, KindError) as exc:
            return self.fail(f"candidate predict_proba failed on schema rows: {exc}")
        problems = []
        if first.shape != (len(rows), len(model.labels)):
            problems.append(f"predict_proba returned shape {first.shape} for {len(rows)} rows")
        elif not np.all(np.isfinite(first)) or not np.allclose(first.sum(axis=1), 1.0, atol=1e-6):
            problems.append("probabilities are not finite or do not sum to 1 on every schema row")
        elif not np.array_equal(first, again):
            problems.append("the same rows got different probabilities on a second call")
        elif not np.allclose(first, reversed_, atol=1e-9):
            problems.append("a row's probabilities depend on its position in the batch")
        p95 = float(np.percentile(timings, 95))
        latency_text = f"p95 predict_proba latency {p95:.2f} ms per batch of {cfg.batch_size} rows"
        if p95 > cfg.latency_budget_ms:
            problems.append(f"{latency_text} > budget {cfg.latency_budget_ms:g} ms")
        details = {"rows": len(rows), "latency": {"p95_ms": p95, "batch_size": cfg.batch_size,
                                                   "repetitions": cfg.latency_repetitions}}
        if problems:
            return self.verdict(False, "tabular behaviour failed: " + "; ".join(problems), jsonable(details))
        return self.verdict(True, f"tabular behaviour passed on {len(rows)} schema rows (valid, repeatable, "
                            f"order-free); {latency_text} <= {cfg.latency_budget_ms:g} ms", jsonable(details))

    def _run_cases(self, model: ModelKind, proba: dict[str, Probabilities]) -> list[dict[str, Any]]:
        def label_of(text: str) -> str:
            return model.labels[int(np.argmax(proba[text]))]

        out: list[dict[str, Any]] = []
        for case in self.suite.cases:
            row: dict[str, Any] = {"id": case.id, "type": case.type, "domain": case.domain}
            if isinstance(case, InvarianceCase):
                predicted = [label_of(t) for t in (case.base, *case.variants)]
                row.update(perturbation=case.perturbation, predicted=predicted, passed=len(set(predicted)) == 1)
            elif isinstance(case, DirectionalCase):
                row.update(perturbation=case.perturbation, label=case.label, direction=case.direction)
                if case.label not in model.labels:
                    row.update(passed=False, note="label not in the model's label set")
                else:
                    i = model.labels.index(case.label)
                    shift = float(proba[case.variant][i] - proba[case.base][i])
                    sign = 1.0 if case.direction == "increase" else -1.0
                    row.update(shift=shift, passed=sign * shift > self.config.directional_min_shift)
            else:
                predicted_label = label_of(case.text)
                row.update(expected=case.expected, predicted=predicted_label, passed=predicted_label == case.expected)
            out.append(row)
        return out

    def _latency(self, model: ModelKind, texts: list[str]) -> dict[str, Any]:
        cfg = self.config
        samples = []
        nonce = uuid.uuid4().hex[:8]
        for rep in range(cfg.latency_warmup + cfg.latency_repetitions):
            batch = _fresh_batch(texts, cfg.batch_size, rep, nonce)
            start = self.clock()
            model.predict_proba(batch)
            if rep >= cfg.latency_warmup:
                samples.append((self.clock() - start) * 1000.0)
        p50, p95 = np.percentile(samples, [50, 95])
        return {"batch_size": cfg.batch_size, "warmup": cfg.latency_warmup, "repetitions": cfg.latency_repetitions,
                "p50_ms": float(p50), "p95_ms": float(p95), "max_ms": float(max(samples)),
                "budget_ms": cfg.latency_budget_ms}

    def _write(self, out: Path | None, cases: list[dict[str, Any]], latency: dict[str, Any]) -> dict[str, Path]:
        if out is None:
            return {}
        path = out / "cases.json"
        report = {"suite_version": self.suite.version, "cases": cases, "latency": latency}
        try:
            path.write_text(json.dumps(jsonable(report), indent=2, sort_keys=True))
        except OSError as exc:
            raise ArtifactWriteError(out, str(exc)) from exc
        return {"cases": path}


def _fresh_batch(texts: list[str], size: int, rep: int, nonce: str) -> list[str]:
    """``size`` suite texts (cycling through the suite), each tagged so that none was ever seen before."""
    return [f"{texts[(rep * size + i) % len(texts)]} [{nonce}.{rep}.{i}]" for i in range(size)]


def _ids(ids: list[str], shown: int = 5) -> str:
    return ", ".join(ids[:shown]) + (f" (+{len(ids) - shown} more)" if len(ids) > shown else "")


def _count(cases: list[dict[str, Any]]) -> str:
    return f"{sum(c['passed'] for c in cases)}/{len(cases)}"


def schema_rows(features: FeatureSchema, n: int, seed: int = 0) -> list[Row]:
    """``n`` rows a tabular model must answer: each feature's values in turn (every category, both booleans,
    a numeric range's ends and midpoint, absent for an optional feature), combined by a seeded shuffle."""
    rng = np.random.default_rng(seed)
    choices: dict[str, list[Any]] = {}
    for f in features.features:
        if f.type == "categorical":
            values: list[Any] = list(f.categories or ())
        elif f.type == "boolean":
            values = [True, False]
        else:
            lo = f.min if f.min is not None else (f.max - 1.0 if f.max is not None else -1.0)
            hi = f.max if f.max is not None else lo + 2.0
            values = [lo, (lo + hi) / 2, hi]
        choices[f.name] = values + ([None] if not f.required else [])
    rows: list[Row] = []
    for i in range(n):
        rows.append({name: values[(i + int(rng.integers(len(values)))) % len(values)]
                     for name, values in choices.items()})
    return rows
