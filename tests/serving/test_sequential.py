"""The canary's sequential test, by seeded simulation: error rates under repeated looks, power at the
configured effect, and the sample floor."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest
from pydantic import ValidationError

from serving.sequential import Counts, Outcome, SequentialConfig, decide, thresholds

CONFIG = SequentialConfig(alpha=0.05, beta=0.2, effect=0.05, min_samples=100)
RUNS = 1000
SPLIT = (180, 20)  # judged predictions per look: champion, canary (a 10% canary)
HORIZON = 150  # looks: up to 3000 canary outcomes


def simulate(p_champion: float, p_canary: float, config: SequentialConfig, seed: int,
             runs: int = RUNS, horizon: int = HORIZON) -> Counter[Outcome]:
    """The first terminal outcome of each run, looking after every batch ("undecided" at the horizon)."""
    rng = np.random.default_rng(seed)
    champion = rng.binomial(SPLIT[0], p_champion, size=(runs, horizon)).cumsum(axis=1)
    canary = rng.binomial(SPLIT[1], p_canary, size=(runs, horizon)).cumsum(axis=1)
    found: Counter[Outcome] = Counter()
    for run in range(runs):
        outcome: Outcome = "undecided"
        for look in range(horizon):
            n_a, n_b = SPLIT[0] * (look + 1), SPLIT[1] * (look + 1)
            decision = decide(Counts(n_a, int(champion[run, look])), Counts(n_b, int(canary[run, look])), config)
            if decision.outcome != "undecided":
                outcome = decision.outcome
                break
        found[outcome] += 1
    return found


def test_equal_accuracy_rarely_declares_a_winner() -> None:
    found = simulate(0.8, 0.8, CONFIG, seed=1)
    winners = (found["better"] + found["worse"]) / RUNS
    assert winners <= CONFIG.alpha + 0.015, found  # measured (seed 1): 0.034 (11 better, 23 worse)
    assert found["equivalent"] / RUNS >= 0.9, found


def test_equal_accuracy_stays_valid_under_continuous_monitoring_without_a_lower_bound() -> None:
    """With no way to stop for equivalence (beta ~ 0), looking 150 times still errs <= alpha (Ville)."""
    config = CONFIG.model_copy(update={"beta": 1e-12})
    found = simulate(0.8, 0.8, config, seed=2)
    winners = (found["better"] + found["worse"]) / RUNS
    assert winners <= config.alpha + 0.015, found  # measured (seed 2): 0.030 (13 better, 17 worse)
    assert abs(found["better"] - found["worse"]) <= 0.03 * RUNS, found  # two-sided, symmetric


@pytest.mark.parametrize(("p_canary", "expected"), [(0.85, "better"), (0.75, "worse")])
def test_a_difference_of_the_configured_effect_is_found_in_the_right_direction(p_canary: float,
                                                                               expected: Outcome) -> None:
    found = simulate(0.8, p_canary, CONFIG, seed=3)
    assert found[expected] / RUNS >= 1 - CONFIG.beta - 0.05, found  # measured (seed 3): 0.914 better / 0.874 worse
    wrong: Outcome = "worse" if expected == "better" else "better"
    assert found[wrong] / RUNS <= 0.005, found


def test_a_large_difference_is_found_quickly() -> None:
    found = simulate(0.8, 0.6, CONFIG, seed=4, runs=200, horizon=20)
    assert found["worse"] / 200 >= 0.95, found


def test_below_the_minimum_sample_size_it_always_continues() -> None:
    rng = np.random.default_rng(5)
    for _ in range(500):
        n_a, n_b = int(rng.integers(0, 5000)), int(rng.integers(0, 5000))
        if min(n_a, n_b) >= CONFIG.min_samples:
            n_a = int(rng.integers(0, CONFIG.min_samples))
        champion = Counts(n_a, int(rng.integers(0, n_a + 1)))
        canary = Counts(n_b, int(rng.integers(0, n_b + 1)))
        decision = decide(champion, canary, CONFIG)
        assert decision.verdict == "continue" and decision.outcome == "undecided"
        assert "too few samples" in decision.reason
    # even an overwhelming difference waits for the floor
    assert decide(Counts(99, 99), Counts(5000, 0), CONFIG).verdict == "continue"


def test_verdicts_reasons_and_thresholds() -> None:
    lower, upper = thresholds(CONFIG)
    assert upper == pytest.approx(math.log(40)) and lower == pytest.approx(math.log(0.2 / 0.975))
    worse = decide(Counts(200, 160), Counts(200, 120), CONFIG)
    assert worse.verdict == "rollback" and worse.outcome == "worse" and worse.statistic >= upper
    assert "canary worse" in worse.reason and "120/200" in worse.reason and worse.difference == pytest.approx(-0.2)
    better = decide(Counts(200, 120), Counts(200, 160), CONFIG)
    assert better.verdict == "promote" and better.outcome == "better" and better.z > 0
    same = decide(Counts(20000, 16000), Counts(20000, 16000), CONFIG)
    assert same.outcome == "equivalent" and same.verdict == "rollback"  # the champion stays by default
    keep = decide(Counts(20000, 16000), Counts(20000, 16000), CONFIG.model_copy(update={"on_equivalent": "continue"}))
    assert keep.verdict == "continue" and keep.outcome == "equivalent"
    perfect = decide(Counts(100, 100), Counts(100, 100), CONFIG)  # no division by a zero variance
    assert math.isfinite(perfect.statistic)


def test_bad_inputs_are_refused() -> None:
    with pytest.raises(ValueError, match="correct"):
        Counts(3, 4)
    with pytest.raises(ValidationError):
        SequentialConfig(alpha=0)
    with pytest.raises(ValidationError):
        SequentialConfig(unknown=1)  # type: ignore[call-arg]
