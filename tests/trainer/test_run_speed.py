"""The faster full run decides as the slower one did: on fixed data (seeded feedback ids, so the same reserved
holdout), the same snapshot is trained twice against the same champion, once the way runs went before
issue 18 (every fit's vectorizer fitted from scratch, the behaviour suite on every candidate the evaluation
passed, then the choice) and once as they go now (n-grams counted once per run, behaviour only where the
choice looks). Every candidate's evaluation verdict, the behaviour verdicts both ran, the status and the
chosen candidate must be the same: against the bootstrap champion, then against a full-mode champion whose
recipe is refit per fold. Real broker, Postgres, MLflow store and demo data."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from core.settings import FlywheelSettings
from flywheel.lifecycle import Lifecycle, lifecycle
from kinds.tfidf import TfidfLogReg
from registry import CHALLENGER
from trainer import steps
from trainer.gates import GateInput
from trainer.runs import RunResult
from trainer.selection import Candidate, select_candidate

from .lifecycle_helpers import DEMO_CANARY_CONFIG, land_feedback, rows

CONFIG = DEMO_CANARY_CONFIG


@pytest.fixture
def lc(settings: FlywheelSettings, registry_db_url: str) -> Iterator[Lifecycle]:
    with lifecycle(settings, settings.kafka_connection(), registry_db_url, CONFIG) as found:
        yield found


def _eager_choose(self: steps.RunSteps, candidates: Sequence[Candidate], holdout: Any, workdir: Path
                  ) -> Candidate | None:
    """The choice as it was made before: the behaviour suite on every candidate the evaluation passed."""
    for c in candidates:
        if c.passed:
            c.verdicts.append(self.behaviour.check(GateInput(candidate=c.model, features=self.features,
                                                             out_dir=workdir / c.name)))
    passing = sorted((c for c in candidates if c.passed), key=lambda c: c.score, reverse=True)
    return select_candidate(passing, holdout, self.evaluation, self.policy) if passing else None


def _full_run(lc: Lifecycle, monkeypatch: pytest.MonkeyPatch, *, before: bool) -> RunResult:
    with monkeypatch.context() as m:
        if before:
            m.setattr(steps, "_counted_once", lambda frame: contextlib.nullcontext())
            m.setattr(steps.RunSteps, "_choose", _eager_choose)
        return lc.trainer.maybe_train("admin", requested="full")


def _verdicts(result: RunResult) -> dict[str, dict[str, tuple[bool, str]]]:
    return {c["name"]: {v["gate"]: (v["passed"], v["reason"]) for v in c["verdicts"]} for c in result.candidates}


def _same_decision(before: RunResult, after: RunResult) -> None:
    assert after.status == before.status, (before.reason, after.reason)
    assert after.reason.split(":")[0] == before.reason.split(":")[0]
    old, new = _verdicts(before), _verdicts(after)
    assert list(new) == list(old)
    for name in old:
        assert new[name]["evaluation"] == old[name]["evaluation"], name
        if "behaviour" in new[name]:  # the same pass rates (its latency is a timing: never equal twice)
            (passed, reason), (was, before_reason) = new[name]["behaviour"], old[name]["behaviour"]
            assert passed == was and reason.split("; p95")[0] == before_reason.split("; p95")[0], name
    chosen = {r.version.tags.get("corpus_weight") if r.version else None for r in (before, after)}
    assert len(chosen) == 1, chosen
    # what the faster run left out is only ever the behaviour suite of a candidate the choice did not read
    for c in after.candidates:
        if "skipped" in c:
            assert not c["passed"] and [v["gate"] for v in c["verdicts"]] == ["evaluation"]


def test_a_full_run_decides_as_before_on_fixed_data(lc: Lifecycle, registry_db_url: str,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    boot = lc.trainer.bootstrap(rows("vader_movies")[:2500], source="vader_movies.csv", kind="tfidf-logreg")
    assert boot.status == "promoted", boot.reason
    land_feedback(registry_db_url, rows("vader_tweets")[:300], seed=18)
    before = _full_run(lc, monkeypatch, before=True)
    after = _full_run(lc, monkeypatch, before=False)
    _same_decision(before, after)
    assert after.status == "canary" and after.version is not None, after.reason
    lc.promote(CHALLENGER, "a full-mode champion for the next run")
    land_feedback(registry_db_url, rows("vader_tweets")[300:450], seed=19)
    before = _full_run(lc, monkeypatch, before=True)
    after = _full_run(lc, monkeypatch, before=False)
    _same_decision(before, after)
    assert all("for the champion too" in reasons["evaluation"][1] for reasons in _verdicts(after).values())


# the demo's tfidf-logreg features (flywheel/demo/platform.py KIND_PARAMS), on which the solver was measured
CHAR_WB = {"analyzer": "char_wb", "ngram_min": 2, "ngram_max": 5, "min_df": 2}


@pytest.fixture
def lc_char(settings: FlywheelSettings, registry_db_url: str) -> Iterator[Lifecycle]:
    """The demo's features; every fit in the trainer's process (1 worker), where the solver is switched."""
    config = CONFIG.model_copy(update={"workers": 1, "policy": CONFIG.policy.model_copy(
        update={"kind_params": {"tfidf-logreg": CHAR_WB}})})
    with lifecycle(settings, settings.kafka_connection(), registry_db_url, config) as found:
        yield found


def _fitted_as_before(lc: Lifecycle, monkeypatch: pytest.MonkeyPatch) -> RunResult:
    """A full run whose every tfidf-logreg fit (candidates, folds, the champion's recipe per fold) solves
    as before: lbfgs from zero, its parameters untouched (they say whether a candidate is the champion's
    recipe)."""
    new_classifier = TfidfLogReg._new_classifier

    def lbfgs(self: TfidfLogReg, warm: bool) -> Any:
        clf = new_classifier(self, warm)
        clf.solver = "lbfgs"
        return clf

    with monkeypatch.context() as m:
        m.setattr(TfidfLogReg, "_new_classifier", lbfgs)
        m.setattr(TfidfLogReg, "starting_at", lambda self, solution: self)
        return lc.trainer.maybe_train("admin", requested="full")


def _same_verdicts(before: RunResult, after: RunResult) -> None:
    """The same status, the same candidates passing or failing each gate, the same one chosen (a solver
    reaches the optimum only up to its tolerance: the scores in the reasons move in the 3rd decimal)."""
    assert after.status == before.status, (before.reason, after.reason)
    passed = [{c["name"]: {v["gate"]: v["passed"] for v in c["verdicts"]} for c in r.candidates}
              for r in (before, after)]
    assert passed[0] == passed[1]
    chosen = {r.version.tags.get("corpus_weight") if r.version else None for r in (before, after)}
    assert len(chosen) == 1, chosen


def test_newton_cg_started_at_the_champion_decides_as_lbfgs_on_fixed_data(
        lc_char: Lifecycle, registry_db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """tfidf-logreg fits with newton-cg, each full run's fits started at the champion's solution (issue 18):
    on fixed data, the full runs against the bootstrap champion and against a full-mode champion (its recipe
    refit per fold) decide as with lbfgs from zero, as fitted before."""
    boot = lc_char.trainer.bootstrap(rows("vader_movies")[:2500], source="vader_movies.csv", kind="tfidf-logreg")
    assert boot.status == "promoted", boot.reason
    land_feedback(registry_db_url, rows("vader_tweets")[:300], seed=18)
    before = _fitted_as_before(lc_char, monkeypatch)
    after = lc_char.trainer.maybe_train("admin", requested="full")
    _same_verdicts(before, after)
    assert after.status == "canary" and after.version is not None, after.reason
    assert "solver" not in lc_char.registry.load(after.version.version, lc_char.trainer.resources).params  # the default
    lc_char.promote(CHALLENGER, "a full-mode champion for the next run")
    land_feedback(registry_db_url, rows("vader_tweets")[300:450], seed=19)
    before = _fitted_as_before(lc_char, monkeypatch)
    after = lc_char.trainer.maybe_train("admin", requested="full")
    _same_verdicts(before, after)
    assert all("for the champion too" in reasons["evaluation"][1] for reasons in _verdicts(after).values())
