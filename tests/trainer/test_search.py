"""Hyperparameter search (trainer/search.py): better than a bad start, bounded by its trial count and time
budget, deterministic for a seed, and clear errors for what it cannot search."""

from __future__ import annotations

import math
import time
from typing import Any

import pytest

from kinds import KINDS, Choice, FloatRange, IntRange, KindError, ModelKind, create
from tests.trainer.tabular_data import MIXED_FEATURES, mixed
from trainer.exceptions import TrainerError
from trainer.search import search

FEATURES = MIXED_FEATURES.to_params()
SPACE = {"learning_rate": FloatRange(0.001, 0.5, log=True), "num_leaves": IntRange(2, 16),
         "min_child_samples": IntRange(2, 200, log=True)}
BAD = {"learning_rate": 0.001, "num_leaves": 2, "min_child_samples": 200}


def make(params: dict[str, Any]) -> ModelKind:
    return create("lightgbm", features=FEATURES, n_estimators=15, **params)


def test_finds_better_params_than_a_bad_start() -> None:
    inputs, labels = mixed(300, seed=1)
    bad = search(lambda p: make({**p, **BAD}), inputs, labels, None, {"learning_rate": Choice((0.001,))},
                 folds=3, budget_s=60, max_trials=1, seed=0)
    found = search(make, inputs, labels, None, SPACE, folds=3, budget_s=60, max_trials=12, seed=0)
    assert set(found.best_params) == set(SPACE)
    assert found.best_score > bad.best_score + 0.15, (found, bad)
    assert found.trials == 12 and found.elapsed_s > 0


def test_log_loss_is_minimised() -> None:
    inputs, labels = mixed(300, seed=1)
    bad = search(lambda p: make({**p, **BAD}), inputs, labels, None, {"learning_rate": Choice((0.001,))},
                 folds=3, budget_s=60, max_trials=1, seed=0, metric="log_loss")
    found = search(make, inputs, labels, None, SPACE, folds=3, budget_s=60, max_trials=8, seed=0, metric="log_loss")
    assert found.best_score < bad.best_score - 0.1, (found, bad)


def test_deterministic_for_a_seed_and_seed_dependent() -> None:
    inputs, labels = mixed(200, seed=2)
    weights = [1.0 + (i % 3) for i in range(len(labels))]
    a = search(make, inputs, labels, weights, SPACE, folds=3, budget_s=60, max_trials=5, seed=3)
    b = search(make, inputs, labels, weights, SPACE, folds=3, budget_s=60, max_trials=5, seed=3)
    c = search(make, inputs, labels, weights, SPACE, folds=3, budget_s=60, max_trials=5, seed=4)
    assert (a.best_params, a.best_score, a.trials) == (b.best_params, b.best_score, b.trials)
    assert c.best_params != a.best_params


def test_respects_max_trials_and_the_time_budget() -> None:
    inputs, labels = mixed(120, seed=3)
    assert search(make, inputs, labels, None, SPACE, folds=2, budget_s=60, max_trials=3, seed=0).trials == 3

    def slow(params: dict[str, Any]) -> ModelKind:
        time.sleep(0.1)
        return make(params)

    started = time.monotonic()
    result = search(slow, inputs, labels, None, SPACE, folds=2, budget_s=0.5, max_trials=1000, seed=0)
    # each trial takes >= 0.2 s (two folds); the budget ends the search, a trial under way finishes
    assert 1 <= result.trials <= 4
    assert time.monotonic() - started < 0.5 + 1.5
    assert result.elapsed_s < 0.5 + 1.5


def test_pruning_still_finds_a_result() -> None:
    inputs, labels = mixed(200, seed=4)
    result = search(make, inputs, labels, None, SPACE, folds=3, budget_s=60, max_trials=8, seed=0, prune=True)
    assert result.trials == 8 and 0.5 < result.best_score <= 1.0


def test_trials_the_kind_refuses_fail_and_the_search_goes_on() -> None:
    inputs, labels = mixed(120, seed=5)

    def picky(params: dict[str, Any]) -> ModelKind:
        if params["num_leaves"] > 8:
            raise KindError("too many leaves")
        return make(params)

    result = search(picky, inputs, labels, None, SPACE, folds=2, budget_s=60, max_trials=6, seed=0)
    assert result.trials == 6 and result.best_params["num_leaves"] <= 8
    with pytest.raises(TrainerError, match="no search trial completed"):
        search(lambda p: picky({**p, "num_leaves": 9}), inputs, labels, None, SPACE, folds=2, budget_s=60,
               max_trials=2, seed=0)


@pytest.mark.parametrize(("change", "match"), [
    ({"space": {}}, "empty"),
    ({"budget_s": 0}, "budget_s"),
    ({"budget_s": -1.0}, "budget_s"),
    ({"budget_s": math.nan}, "budget_s"),
    ({"budget_s": math.inf}, "budget_s"),
    ({"max_trials": 0}, "max_trials"),
    ({"folds": 1}, "folds"),
    ({"folds": 1000}, "folds"),
    ({"metric": "auc"}, "metric"),
    ({"weights": [1.0]}, "line up"),
])
def test_refuses_what_it_cannot_search(change: dict[str, Any], match: str) -> None:
    inputs, labels = mixed(60, seed=6)
    args: dict[str, Any] = {"space": SPACE, "weights": None, "folds": 3, "budget_s": 10.0, "max_trials": 2,
                            "metric": "accuracy", **change}
    with pytest.raises(TrainerError, match=match):
        search(make, inputs, labels, args.pop("weights"), args.pop("space"), seed=0, **args)


def test_every_kind_declares_a_valid_search_space_of_its_own_params() -> None:
    for kind, cls in KINDS.items():
        assert cls.search_space, kind
        for name, dim in cls.search_space.items():
            assert isinstance(dim, FloatRange | IntRange | Choice), (kind, name)
        features = {"features": FEATURES} if "tabular-classification" in cls.tasks else {}
        defaults = cls(**features).params  # type: ignore[arg-type]
        assert set(cls.search_space) <= set(defaults), kind


@pytest.mark.parametrize("bad", [lambda: FloatRange(1.0, 1.0), lambda: FloatRange(0.0, 1.0, log=True),
                                 lambda: IntRange(0, 5, log=True), lambda: Choice(()), lambda: Choice((1, 1)),
                                 lambda: FloatRange(0.0, math.inf)])
def test_dimensions_refuse_bad_ranges(bad: Any) -> None:
    with pytest.raises(KindError):
        bad()
