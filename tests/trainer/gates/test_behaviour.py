"""The behavioural gate: the packaged suite against real tfidf-logreg models, the latency budget, and
the validation of the versioned test file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from kinds import ModelKind
from tests.trainer.gates._data import Scripted, confident
from trainer.gates import (
    BehaviourConfig,
    BehaviourGate,
    BehaviourSuiteError,
    FakeClock,
    GateInput,
    load_suite,
)
from trainer.gates.suite import DirectionalCase, InvarianceCase, MftCase


def test_the_packaged_suite_is_versioned_and_covers_every_case_type() -> None:
    suite = load_suite()
    assert suite.version == 1 and suite.labels == ["negative", "neutral", "positive"]
    assert len(suite.cases) >= 40
    by_type = {t: [c for c in suite.cases if c.type == t] for t in ("invariance", "directional", "mft")}
    assert all(len(cases) >= 10 for cases in by_type.values())
    perturbations = {c.perturbation for c in suite.cases if isinstance(c, InvarianceCase | DirectionalCase)}
    assert {"name", "punctuation", "casing", "typo", "emoji", "negation", "intensifier"} <= perturbations
    assert {c.domain for c in suite.cases} == {"movies", "products", "tweets"}
    assert {c.expected for c in suite.cases if isinstance(c, MftCase)} == set(suite.labels)


def test_a_good_model_passes(good_model: ModelKind, tmp_path: Path) -> None:
    verdict = BehaviourGate().check(GateInput(candidate=good_model, out_dir=tmp_path))
    assert verdict.passed, verdict.reason
    rates = verdict.details["pass_rates"]
    assert all(rates[t] >= verdict.details["required"][t] for t in rates)
    assert verdict.reason.startswith("behaviour suite v1 passed: invariance ")
    report = yaml.safe_load(verdict.artifacts["cases"].read_text())  # JSON is YAML
    assert len(report["cases"]) == verdict.details["cases"]


def test_a_model_trained_on_flipped_labels_fails(flipped_model: ModelKind, good_model: ModelKind) -> None:
    verdict = BehaviourGate().check(GateInput(candidate=flipped_model))
    assert not verdict.passed
    rates = verdict.details["pass_rates"]
    assert rates["mft"] < 0.3 and rates["directional"] < 0.5
    assert "directional pass rate" in verdict.reason and "mft pass rate" in verdict.reason
    assert "mft-pos-01" in verdict.details["failed"]["mft"]
    good = BehaviourGate().check(GateInput(candidate=good_model)).details["pass_rates"]
    assert good["mft"] - rates["mft"] > 0.5


def test_a_too_tight_latency_budget_fails_with_the_measured_p95(good_model: ModelKind) -> None:
    verdict = BehaviourGate(BehaviourConfig(latency_budget_ms=0.001, latency_repetitions=5)).check(
        GateInput(candidate=good_model))
    assert not verdict.passed
    latency = verdict.details["latency"]
    assert latency["p95_ms"] > 0.001 and latency["repetitions"] == 5 and latency["batch_size"] == 32
    assert (f"p95 predict_proba latency {latency['p95_ms']:.2f} ms per batch of 32 > budget 0.001 ms"
            in verdict.reason)
    assert "pass rate" not in verdict.reason, "only the latency failed"


def test_latency_is_timed_on_fresh_batches_with_the_injected_clock() -> None:
    model = Scripted()
    config = BehaviourConfig(batch_size=8, latency_warmup=2, latency_repetitions=4)
    verdict = BehaviourGate(config, clock=FakeClock(step=0.002)).check(GateInput(candidate=model))
    assert verdict.details["latency"]["p95_ms"] == pytest.approx(2.0)
    suite_texts = set(load_suite().texts())
    batches = model.seen[1:]  # the first call scores the suite
    assert len(batches) == 6 and all(len(b) == 8 for b in batches)
    timed = [t for b in batches for t in b]
    assert len(set(timed)) == len(timed) and not suite_texts & set(timed), "no cache could answer"
    again = Scripted()
    BehaviourGate(config, clock=FakeClock(step=0.002)).check(GateInput(candidate=again))
    assert not {t for b in again.seen[1:] for t in b} & set(timed), "fresh across checks too"


def test_cases_are_judged_as_documented() -> None:
    suite = load_suite()
    script: dict[str, list[float]] = {}
    for case in suite.cases:  # a model that gets every case right ...
        if isinstance(case, MftCase):
            script[case.text] = confident(case.expected)
        elif isinstance(case, DirectionalCase):
            low, high = confident(case.label, 0.4), confident(case.label, 0.8)
            script[case.base], script[case.variant] = (low, high) if case.direction == "increase" else (high, low)
        else:
            for text in (case.base, *case.variants):
                script[text] = confident("neutral")
    verdict = BehaviourGate().check(GateInput(candidate=Scripted(script=script)))
    assert verdict.details["pass_rates"] == {"invariance": 1.0, "directional": 1.0, "mft": 1.0}, verdict.reason
    first = next(c for c in suite.cases if isinstance(c, InvarianceCase))
    script[first.variants[-1]] = confident("positive")  # ... except one changed prediction
    broken = BehaviourGate().check(GateInput(candidate=Scripted(script=script)))
    assert broken.details["failed"]["invariance"] == [first.id]
    strict = BehaviourGate(BehaviourConfig(directional_min_shift=0.5)).check(
        GateInput(candidate=Scripted(script=script)))
    assert strict.details["pass_rates"]["directional"] == 0.0, "the shifts above are 0.4"


def test_a_model_without_some_suite_label_fails_those_cases() -> None:
    suite = load_suite()
    script = {c.text: confident(c.expected, labels=("negative", "positive"))
              for c in suite.cases if isinstance(c, MftCase) and c.expected != "neutral"}
    verdict = BehaviourGate().check(GateInput(candidate=Scripted(labels=("negative", "positive"), script=script)))
    assert verdict.details["labels_missing_from_model"] == ["neutral"]
    neutral = [c.id for c in suite.cases if isinstance(c, MftCase) and c.expected == "neutral"]
    assert neutral and verdict.details["failed"]["mft"] == neutral


def _write(tmp_path: Path, data: Any) -> Path:
    path = tmp_path / "suite.yaml"
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return path


GOOD_CASE = {"id": "m1", "type": "mft", "text": "great", "expected": "positive"}


@pytest.mark.parametrize(("data", "message"), [
    ("version: [1\n", "is not valid YAML"),
    ({"labels": ["negative", "positive"], "cases": [GOOD_CASE]}, "version: Field required"),
    ({"version": 1, "labels": ["negative", "positive"], "cases": [{**GOOD_CASE, "type": "vibes"}]},
     "does not match any of the expected tags"),
    ({"version": 1, "labels": ["negative", "positive"], "cases": [GOOD_CASE, GOOD_CASE]},
     "case ids must be unique; repeated: ['m1']"),
    ({"version": 1, "labels": ["negative", "positive"], "cases": [{**GOOD_CASE, "expected": "happy"}]},
     "cases name labels ['happy'] that are not in labels"),
    ({"version": 1, "labels": ["negative", "positive"],
      "cases": [{"id": "i1", "type": "invariance", "perturbation": "name", "base": "x", "variants": []}]},
     "cases.0.invariance.variants: List should have at least 1 item"),
    ({"version": 1, "labels": ["negative", "positive"], "cases": [{**GOOD_CASE, "txet": "typo"}]},
     "Extra inputs are not permitted"),
], ids=["yaml", "no version", "unknown type", "duplicate ids", "unknown label", "no variants", "unknown key"])
def test_a_broken_test_file_is_a_clear_error(tmp_path: Path, data: Any, message: str) -> None:
    path = _write(tmp_path, data)
    with pytest.raises(BehaviourSuiteError) as info:
        BehaviourGate(BehaviourConfig(suite_path=path))
    assert info.value.path == path
    assert str(path) in str(info.value) and message in str(info.value), str(info.value)


def test_missing_suite_files_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(BehaviourSuiteError, match="cannot be read"):
        load_suite(tmp_path / "nope.yaml")
    with pytest.raises(BehaviourSuiteError, match=r"v99\.yaml"):
        BehaviourGate(BehaviourConfig(suite_version="v99"))
