"""bench/efficacy.py --orders: a scenario's figures over several stream orders (means, the median first
promotion, the standard errors), and the demo's ``order`` option: the same stream rows and held-out rows,
in another order."""

from __future__ import annotations

import math
from collections import Counter

import pytest

from bench.efficacy import first_promoted_samples, holdout_se, summary
from bench.recipes_offline import split
from core.settings import FlywheelSettings
from flywheel.demo import DemoOptions, Replay
from flywheel.demo.stream import split_target


def order(i: int, k400: float, first: int | None, oracle: float = 0.74) -> dict[str, object]:
    return {"order": i, "static": 0.57, "oracle": oracle, "k100": 0.6, "k200": 0.62, "k400": k400, "final": k400,
            "fraction_of_oracle_at_400": round(k400 / oracle, 4), "first_promotion_at_label": first,
            "holdout_rows": 1260, "seconds": 200.0, "load": [[1.0, 1.0, 1.0], [2.0, 1.5, 1.0]],
            "first_promoted_samples": None if first is None else first - 20}


def test_one_order_keeps_the_keys_and_figures_of_a_single_run() -> None:
    found = summary([order(0, 0.651, 100)])
    assert {k: found[k] for k in ("static", "oracle", "k100", "k200", "k400", "fraction_of_oracle_at_400",
                                  "first_promotion_at_label")} == {
        "static": 0.57, "oracle": 0.74, "k100": 0.6, "k200": 0.62, "k400": 0.651,
        "fraction_of_oracle_at_400": round(0.651 / 0.74, 4), "first_promotion_at_label": 100}
    assert found["fraction_of_oracle_at_400_se"] is None  # no spread from one order
    assert found["k400_se"] == round(math.sqrt(0.651 * 0.349 / 1260), 4)
    assert found["orders"][0]["order"] == 0 and found["promoted_by_150"] == 1


def test_orders_are_averaged_with_their_spread_and_each_kept() -> None:
    found = summary([order(0, 0.651, 100), order(1, 0.666, 400), order(2, 0.636, None)])
    fractions = [round(k / 0.74, 4) for k in (0.651, 0.666, 0.636)]
    assert found["k400"] == pytest.approx(0.651, abs=1e-4)
    assert found["fraction_of_oracle_at_400"] == pytest.approx(sum(fractions) / 3, abs=1e-4)
    sd = math.sqrt(sum((f - sum(fractions) / 3) ** 2 for f in fractions) / 2)
    assert found["fraction_of_oracle_at_400_se"] == pytest.approx(sd / math.sqrt(3), abs=1e-4)
    # an order that never promoted counts as never: the median of (100, 400, never) is 400
    assert found["first_promotion_at_label"] == 400 and found["first_promotion_at_labels"] == [100, 400, None]
    assert found["promoted_by_150"] == 1
    assert [o["k400"] for o in found["orders"]] == [0.651, 0.666, 0.636]
    assert found["first_promoted_samples"] == [80, 380, None]
    assert [o["first_promoted_samples"] for o in found["orders"]] == [80, 380, None]


def test_a_checkpoint_beyond_the_issues_is_averaged_and_kept_per_order() -> None:
    """``--checkpoint 150``: each order's k150 is kept and averaged like k100..k400 (a checkpoint some order
    did not reach makes the mean None, as for the others)."""
    found = summary([{**order(0, 0.651, 150), "k150": 0.63}, {**order(1, 0.666, 200), "k150": 0.60}])
    assert found["k150"] == pytest.approx(0.615, abs=1e-4)
    assert [o["k150"] for o in found["orders"]] == [0.63, 0.60]
    assert found["promoted_by_150"] == 1
    assert "k150" not in summary([order(0, 0.651, 100)])
    assert summary([{**order(0, 0.651, 150), "k150": None}])["k150"] is None


def test_the_first_promoted_samples_are_those_of_the_first_promoted_retrain() -> None:
    def run(mode: str, status: str, samples: int) -> dict[str, object]:
        return {"mode": mode, "status": status, "sample_count": samples}

    runs = [run("bootstrap", "promoted", 0), run("full", "refused", 62), run("incremental", "failed", 70),
            run("full", "promoted", 141), run("full", "promoted", 199)]
    assert first_promoted_samples(runs) == 141
    assert first_promoted_samples(runs[:3]) is None
    assert first_promoted_samples([]) is None


def test_the_median_first_promotion_is_none_when_half_the_orders_never_promoted() -> None:
    assert summary([order(0, 0.65, 120), order(1, 0.65, None)])["first_promotion_at_label"] is None
    assert summary([order(0, 0.65, 120), order(1, 0.65, 200)])["first_promotion_at_label"] == 160


def test_holdout_standard_error() -> None:
    assert holdout_se(0.5, 100) == 0.05
    assert holdout_se(None, 100) is None and holdout_se(0.5, 0) is None


@pytest.mark.parametrize("scenario", ["movies->tweets", "movies->products"])
def test_an_order_replays_the_same_rows_with_the_same_held_out_rows(scenario: str) -> None:
    def replay(k: int) -> Replay:
        return Replay(DemoOptions(scenario=scenario, order=k, stream=400), FlywheelSettings(),
                      "http://127.0.0.1:9", "postgresql://unused", None)  # type: ignore[arg-type]

    first, other = replay(0), replay(1)
    try:
        stream, held = split_target(first.scenario.target, 0.3, 0)
        assert first.target == stream and first.stream == stream[:400]  # order 0: as split, as before
        assert other.holdout == first.holdout == held
        assert Counter(other.target) == Counter(first.target) and other.target != first.target
        assert other.target == split(scenario, 1)[2]  # the order recipes_offline --draw 1 replays offline
        assert other.stream == other.target[:400] != first.stream
    finally:
        first.close()
        other.close()
