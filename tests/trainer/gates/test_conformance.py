"""One conformance suite over every registered gate (``trainer.gates.GATES``): a Verdict with the gate's
name, a one-line reason, JSON-serialisable details, existing artifacts, the same verdict for the same
inputs, and a failing verdict (never an exception) on degenerate evidence."""

from __future__ import annotations

import importlib
import inspect
import json
import pkgutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import pydantic
import pytest

import trainer.gates
from kinds import ModelKind, create
from tests.trainer.gates._data import frame, texts_labels
from trainer.gates import GATES, FakeClock, Gate, GateInput, GatesConfig, Holdout, Verdict

Scenario = Callable[[ModelKind, Path], GateInput]


def _holdout(n: int = 200) -> Holdout:
    texts, labels = texts_labels("vader_movies", 0, n)
    return Holdout(texts, labels, ["movies" if i % 2 else "tweets" for i in range(n)])


DEGENERATE: dict[str, Scenario] = {
    "nothing given": lambda model, out: GateInput(),
    "unfitted models, empty frame, empty holdout": lambda model, out: GateInput(
        candidate=create("tfidf-logreg"), champion=create("tfidf-logreg"),
        training=pd.DataFrame({"text": [], "label": [], "weight": []}), holdout=Holdout([], []), out_dir=out),
}
ODD: dict[str, Scenario] = {
    "frame without the required columns": lambda model, out: GateInput(
        candidate=model, training=pd.DataFrame({"sentence": ["fine"]}), holdout=_holdout(), out_dir=out),
    "a single class everywhere": lambda model, out: GateInput(
        candidate=model, champion=model, training=frame("vader_movies", 0, 50).assign(label="positive"),
        holdout=Holdout(texts_labels("vader_movies", 0, 30)[0], ["positive"] * 30), out_dir=out),
    "holdout lengths disagree, no champion": lambda model, out: GateInput(
        candidate=model, training=frame("vader_movies", 0, 50),
        holdout=Holdout(["a", "b", "c"], ["positive"], ["x", "y"]), out_dir=out),
    "non-string texts, null labels, odd weights": lambda model, out: GateInput(
        candidate=model, label_set=("negative", "neutral", "positive"),
        training=pd.DataFrame({"text": [1, 2.5, None, "ok"], "label": [None, "positive", "negative", "neutral"],
                               "weight": ["heavy", 1, -2, None]}), out_dir=out),
    "realistic": lambda model, out: GateInput(
        candidate=model, champion=model, training=frame("vader_movies", 0, 500), holdout=_holdout(),
        out_dir=out),
}


@pytest.fixture(params=GATES, ids=lambda cls: cls.name)
def gate_cls(request: pytest.FixtureRequest) -> type[Gate[Any]]:
    cls: type[Gate[Any]] = request.param
    return cls


def _check(gate_cls: type[Gate[Any]], inputs: GateInput) -> Verdict:
    return gate_cls(clock=FakeClock()).check(inputs)


def _assert_well_formed(verdict: Verdict, gate_cls: type[Gate[Any]]) -> None:
    assert isinstance(verdict, Verdict)
    assert verdict.gate == gate_cls.name
    assert isinstance(verdict.passed, bool)
    assert verdict.reason.strip() and "\n" not in verdict.reason
    json.dumps(verdict.details, allow_nan=False)
    json.dumps(verdict.to_dict(), allow_nan=False)
    for path in verdict.artifacts.values():
        assert path.is_file() and path.stat().st_size > 0, path


@pytest.mark.parametrize("scenario", sorted(DEGENERATE))
def test_degenerate_evidence_fails_with_a_reason(gate_cls: type[Gate[Any]], scenario: str,
                                                 weak_model: ModelKind, tmp_path: Path) -> None:
    verdict = _check(gate_cls, DEGENERATE[scenario](weak_model, tmp_path))
    _assert_well_formed(verdict, gate_cls)
    assert not verdict.passed, verdict.reason


@pytest.mark.parametrize("scenario", sorted(ODD))
def test_well_formed_and_deterministic(gate_cls: type[Gate[Any]], scenario: str, weak_model: ModelKind,
                                       tmp_path: Path) -> None:
    first = _check(gate_cls, ODD[scenario](weak_model, tmp_path))
    _assert_well_formed(first, gate_cls)
    second = _check(gate_cls, ODD[scenario](weak_model, tmp_path))
    assert second.to_dict() == first.to_dict()


def test_a_model_compared_with_itself_is_not_an_improvement(weak_model: ModelKind, tmp_path: Path) -> None:
    """The realistic scenario decides something: clean data passes, a copy of the champion does not."""
    verdicts = {cls.name: _check(cls, ODD["realistic"](weak_model, tmp_path)) for cls in GATES}
    assert not verdicts["evaluation"].passed
    assert verdicts["quality"].passed, verdicts["quality"].reason


def test_constructor_parameters_are_the_whole_configuration(gate_cls: type[Gate[Any]]) -> None:
    gate = gate_cls()
    config = gate.config
    assert type(config)() == config, "every field has a default"
    assert repr(config) in repr(gate)
    with pytest.raises(pydantic.ValidationError):
        type(config).model_validate({"no_such_option": 1})
    with pytest.raises(pydantic.ValidationError):
        config.__setattr__(next(iter(type(config).model_fields)), None)  # frozen
    assert gate_cls(config).config is config
    grouped = {field.annotation for field in GatesConfig.model_fields.values()}
    assert type(config) in grouped, "GatesConfig groups every gate's config"


def test_every_gate_in_the_package_is_registered() -> None:
    found: set[type[Gate[Any]]] = set()
    for info in pkgutil.iter_modules(trainer.gates.__path__, "trainer.gates."):
        module = importlib.import_module(info.name)
        found |= {obj for _, obj in inspect.getmembers(module, inspect.isclass)
                  if issubclass(obj, Gate) and obj is not Gate and not inspect.isabstract(obj)}
    assert found == set(GATES)
    assert len({cls.name for cls in GATES}) == len(GATES)
