"""bench/efficacy.py --task generation: its scores are means over held-out pairs with stated uncertainty (the
oracle averaged over seeds, paired bootstrap intervals), and the whole bench runs on the tiny-random base."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from bench._efficacy_generation import run_places, summarise, summarise_runs

ROOT = Path(__file__).resolve().parents[2]


def test_the_oracle_is_the_mean_of_its_seeds_and_the_fraction_is_against_that_mean() -> None:
    n = 60
    static = [0.0] * n
    k400 = [0.1 if i % 2 else 0.0 for i in range(n)]  # mean 0.05
    oracles = [[0.12] * n, [0.08] * n, [0.10] * n]  # means 0.12, 0.08, 0.10: mean 0.10
    out = summarise(static, {100: None, 200: k400, 400: k400}, oracles, resamples=500)
    assert out["oracle_seeds"] == [0.12, 0.08, 0.1] and out["oracle"] == 0.1 and out["oracle_sd"] == 0.02
    assert out["k400"] == 0.05 and out["fraction_of_oracle_at_400"] == 0.5 and out["holdout_pairs"] == n
    assert out["k100"] is None and out["k100_ci95"] is None
    assert out["static_ci95"] == [0.0, 0.0]  # no spread, no interval
    lo, hi = out["k400_ci95"]
    assert 0.02 < lo < 0.05 < hi < 0.08  # a coin per pair: sd 0.05 / sqrt(60) = 0.0065
    lo, hi = out["oracle_ci95"]
    assert lo < 0.1 < hi and lo >= 0.08 and hi <= 0.12  # only the seeds vary: within their range
    lo, hi = out["fraction_of_oracle_at_400_ci95"]
    assert lo < 0.5 < hi and hi - lo > 0.2  # both the pairs and the oracle's seeds widen it


def test_the_intervals_narrow_with_more_held_out_pairs_and_are_seeded() -> None:
    def width(n: int) -> float:
        k400 = [(i % 5) / 20 for i in range(n)]
        out = summarise([0.0] * n, {400: k400}, [[0.2] * n] * 3, resamples=500)
        return float(out["k400_ci95"][1] - out["k400_ci95"][0])

    assert width(160) < 0.7 * width(40)  # ~1/2 expected: sqrt(40 / 160)
    args = ([0.0, 0.1, 0.2], {400: [0.1, 0.0, 0.3]}, [[0.2, 0.2, 0.3]])
    assert summarise(*args) == summarise(*args)
    with pytest.raises(ValueError, match="same held-out pairs"):
        summarise([0.0, 0.1], {400: [0.1]}, [[0.2, 0.2]])
    with pytest.raises(ValueError, match="one oracle seed"):
        summarise([0.0], {400: [0.1]}, [])


def test_several_platform_runs_are_averaged_and_their_spread_widens_the_intervals() -> None:
    """``--runs N``: each score is the mean over the runs, each run is reported, and two runs that disagree give a
    wider interval than two that agree (the resamples draw the runs as well as the pairs)."""
    n = 80
    static, oracles = [0.0] * n, [[0.1] * n]
    low = [0.05 + (i % 2) * 0.01 for i in range(n)]  # mean 0.055
    high = [0.09 + (i % 2) * 0.01 for i in range(n)]  # mean 0.095
    out = summarise_runs([static, static], [{400: low}, {400: high}], oracles, resamples=500)
    assert out["k400"] == 0.075 and out["fraction_of_oracle_at_400"] == 0.75
    assert [r["fraction_of_oracle_at_400"] for r in out["runs"]] == [0.55, 0.95]
    assert [r["k400"] for r in out["runs"]] == [0.055, 0.095]
    agree = summarise_runs([static, static], [{400: low}, {400: low}], oracles, resamples=500)
    assert agree["k400"] == 0.055

    def width(result: dict[str, object]) -> float:
        lo, hi = result["k400_ci95"]  # type: ignore[misc]
        return float(hi - lo)

    assert width(out) > 4 * width(agree)  # the runs' spread (0.04) against the pairs' alone (~0.002)
    lo, hi = out["k400_ci95"]
    assert lo <= 0.055 + 0.002 and hi >= 0.095 - 0.002  # either run alone is a possible draw
    assert "runs" not in summarise(static, {400: low}, oracles)  # one run: the output as before
    assert summarise_runs([static, static], [{400: low}, {400: None}], oracles)["k400"] is None  # one fell short
    with pytest.raises(ValueError, match="same held-out pairs"):
        summarise_runs([static, static], [{400: low}], oracles)


def test_each_platform_run_has_its_own_database_and_data_dir(tmp_path: Path) -> None:
    """Without FLYWHEEL_DATABASE_URL a run's Postgres is a pgserver in its data dir, and MLflow keeps its store per
    URL for the process: a second run in the first's dir found the first's cached store (2026-12-06)."""
    places = [run_places("flywheel_efficacy_dialogue", tmp_path, n) for n in range(3)]
    assert places[0] == ("flywheel_efficacy_dialogue", tmp_path / "dialogue")  # one run: as before
    assert len({database for database, _ in places}) == len({data_dir for _, data_dir in places}) == 3


@pytest.mark.timeout(1200)
def test_the_quick_bench_prints_the_oracle_seeds_and_the_intervals(tmp_path: Path, pg_admin_url: str) -> None:
    """``--quick`` (the tiny-random base: its scores mean nothing), two platform runs (``--runs 2``), each on a fresh
    platform and database: the last line carries the issue's keys and the oracle's seeds, the held-out count, the
    intervals and each run's figures."""
    env = {**os.environ, "FLYWHEEL_DATA_DIR": str(tmp_path), "FLYWHEEL_DATABASE_URL": pg_admin_url,
           "PYTHONPATH": str(ROOT)}
    env.pop("FLYWHEEL_KAFKA_BOOTSTRAP", None)  # the bench starts its own embedded broker
    database = f"flywheel_test_geneff_{os.getpid()}"
    try:
        done = subprocess.run([sys.executable, "-m", "bench.efficacy", "--task", "generation", "--quick",
                               "--data-dir", str(tmp_path / "bench"), "--latency-requests", "3", "--settle-quiet", "4",
                               "--database", database, "--runs", "2"], cwd=ROOT, env=env, capture_output=True,
                              text=True, timeout=1150)
    finally:
        with psycopg.connect(pg_admin_url, autocommit=True) as conn:
            names = (database, f"{database}_1")  # the second run's database of its own
            found = conn.execute("SELECT datname FROM pg_database WHERE datname = ANY(%s)", [list(names)])
            left = [row[0] for row in found]
            for name in names:
                conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert left == []  # each run's database dropped once its figures were taken (no --keep-databases)
    result = json.loads(done.stdout.strip().splitlines()[-1])["scenarios"]["dialogue"]
    assert {"static", "oracle", "k100", "k200", "k400", "fraction_of_oracle_at_400", "run_seconds",
            "p95_generate_ms"} <= set(result)  # the keys, as before
    assert result["holdout_pairs"] == 120 and result["oracle_pairs"] == 200 and len(result["oracle_seeds"]) == 3
    assert result["oracle"] == pytest.approx(sum(result["oracle_seeds"]) / 3, abs=1e-4)
    for key in ("static", "k100", "k200", "k400", "oracle"):
        lo, hi = result[f"{key}_ci95"]
        assert lo <= result[key] <= hi, (key, result)
    assert "fraction_of_oracle_at_400_ci95" in result and result["oracle_sd"] is not None
    assert len(result["runs"]) == 2
    for run in result["runs"]:
        assert {"k100", "k200", "k400", "fraction_of_oracle_at_400", "run_seconds", "p95_generate_ms",
                "verdicts"} <= set(run)
    assert result["p95_generate_ms"] == max(run["p95_generate_ms"] for run in result["runs"])
