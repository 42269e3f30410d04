"""Pure parts of the trainer: the retrain decision, the cron schedule, the config file."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from trainer.config import PolicyConfig, TrainerConfig, load_trainer_config
from trainer.exceptions import TrainerError
from trainer.policy import decide
from trainer.schedule import Cron

POLICY = PolicyConfig(incremental_threshold=200, full_threshold=2000)


@pytest.mark.parametrize(("new", "mode"), [(0, None), (199, None), (200, "incremental"), (1999, "incremental"),
                                           (2000, "full"), (50_000, "full")])
def test_thresholds(new: int, mode: str | None) -> None:
    decision = decide(POLICY, trigger="signal", new_since_attempt=new, new_since_champion=new, has_champion=True)
    assert decision.mode == mode, decision.reason


def test_no_champion_never_trains_on_signals_or_requests() -> None:
    for trigger in ("signal", "admin", "drift", "schedule"):
        decision = decide(POLICY, trigger=trigger, new_since_attempt=10_000, new_since_champion=10_000,  # type: ignore[arg-type]
                          has_champion=False)
        assert decision.mode is None and "bootstrap" in decision.reason


def test_requests_choose_the_mode() -> None:
    assert decide(POLICY, trigger="admin", new_since_attempt=0, new_since_champion=0, has_champion=True).mode == "full"
    drifted = decide(POLICY, trigger="drift", new_since_attempt=20, new_since_champion=20, has_champion=True)
    assert drifted.mode == "full"
    assert decide(POLICY, trigger="admin", new_since_attempt=0, new_since_champion=5, has_champion=True,
                  requested="incremental").mode == "incremental"
    nothing_new = decide(POLICY, trigger="admin", new_since_attempt=0, new_since_champion=0, has_champion=True,
                         requested="incremental")
    assert nothing_new.mode is None and "no new samples" in nothing_new.reason
    ignore = PolicyConfig(drift_action="ignore")
    assert decide(ignore, trigger="drift", new_since_attempt=9, new_since_champion=9, has_champion=True).mode is None


def test_a_drift_alert_on_the_data_the_last_run_trained_on_is_skipped() -> None:
    # a threshold run at 300 samples, then a drift alert 5 samples later: the same data, the same outcome
    just_ran = decide(POLICY, trigger="drift", new_since_attempt=5, new_since_full=5, new_since_champion=305,
                      has_champion=True)
    assert just_ran.mode is None and "drift_min_new 20" in just_ran.reason and "5 samples" in just_ran.reason
    # counted against the last run of the mode it would train: an incremental run since does not hide new data
    assert decide(POLICY, trigger="drift", new_since_attempt=5, new_since_full=250, new_since_champion=305,
                  has_champion=True).mode == "full"
    incremental = PolicyConfig(drift_action="incremental")
    assert decide(incremental, trigger="drift", new_since_attempt=5, new_since_full=250, new_since_champion=305,
                  has_champion=True).mode is None
    always = PolicyConfig(drift_min_new=0)
    assert decide(always, trigger="drift", new_since_attempt=0, new_since_champion=0, has_champion=True).mode == "full"
    # an operator's request is never second-guessed
    assert decide(POLICY, trigger="admin", new_since_attempt=0, new_since_champion=0, has_champion=True).mode == "full"


@pytest.mark.parametrize(("new", "mode"), [(0, None), (19, None), (20, "incremental"), (199, "incremental"),
                                           (200, "incremental"), (2000, "full")])
def test_a_quiet_stream_trains_the_labels_below_the_threshold(new: int, mode: str | None) -> None:
    decision = decide(POLICY, trigger="quiet", new_since_attempt=new, new_since_champion=new, has_champion=True)
    assert decision.mode == mode, decision.reason
    if mode is not None and new < 200:
        assert "went quiet" in decision.reason
    # only the quiet trigger: a signal or the reconcile timer keeps to the thresholds
    assert decide(POLICY, trigger="reconcile", new_since_attempt=min(new, 199), new_since_champion=new,
                  has_champion=True).mode is None


def test_a_quiet_stream_trains_full_where_every_retrain_is_full() -> None:
    every_full = PolicyConfig(incremental_threshold=100, full_threshold=100, quiet_min_samples=10)
    assert decide(every_full, trigger="quiet", new_since_attempt=10, new_since_champion=10,
                  has_champion=True).mode == "full"
    assert decide(every_full, trigger="quiet", new_since_attempt=9, new_since_champion=9,
                  has_champion=True).mode is None


@pytest.mark.parametrize(("expr", "after", "expected"), [
    ("*/15 * * * *", datetime(2026, 11, 22, 12, 7, tzinfo=UTC), datetime(2026, 11, 22, 12, 15, tzinfo=UTC)),
    ("30 3 * * 1", datetime(2026, 11, 22, 12, 0, tzinfo=UTC), datetime(2026, 11, 23, 3, 30, tzinfo=UTC)),
    ("0 0 1 * *", datetime(2026, 11, 22, 12, 0, tzinfo=UTC), datetime(2026, 12, 1, 0, 0, tzinfo=UTC)),
    ("0 12 13 * 5", datetime(2026, 11, 22, 12, 0, tzinfo=UTC), datetime(2026, 11, 27, 12, 0, tzinfo=UTC)),  # dom or dow
    ("0 0 29 2 *", datetime(2026, 3, 1, tzinfo=UTC), datetime(2028, 2, 29, 0, 0, tzinfo=UTC)),
    ("5 4 * * 0,7", datetime(2026, 11, 22, 4, 5, tzinfo=UTC), datetime(2026, 11, 29, 4, 5, tzinfo=UTC)),
])
def test_cron_next(expr: str, after: datetime, expected: datetime) -> None:
    cron = Cron(expr)
    assert cron.next_after(after) == expected
    assert cron.matches(expected)


@pytest.mark.parametrize("expr", ["* * * *", "61 * * * *", "*/0 * * * *", "a * * * *", "5-1 * * * *"])
def test_bad_cron_is_a_clear_error(expr: str) -> None:
    with pytest.raises(TrainerError, match="cron"):
        Cron(expr)


def test_config_file(tmp_path: Path) -> None:
    assert load_trainer_config(None) == TrainerConfig()
    path = tmp_path / "t.yaml"
    path.write_text("policy:\n  incremental_threshold: 50\n  full_cron: '0 3 * * *'\n"
                    "gates:\n  evaluation:\n    min_improvement: 0.01\npromotion:\n  mode: direct\n")
    config = load_trainer_config(path)
    assert config.policy.incremental_threshold == 50 and config.gates.evaluation.min_improvement == 0.01
    assert config.promotion.mode == "direct" and config.policy.full_threshold == 2000
    path.write_text("policy:\n  incremental_treshold: 50\n")
    with pytest.raises(TrainerError, match="incremental_treshold"):
        load_trainer_config(path)
    path.write_text("policy:\n  full_cron: 'every day'\n")
    with pytest.raises(TrainerError, match="cron"):
        load_trainer_config(path)


def test_full_threshold_counts_since_the_last_full_run_not_the_last_incremental() -> None:
    # incremental runs every 200 samples reset new_since_attempt; the full threshold still comes round
    decision = decide(POLICY, trigger="signal", new_since_attempt=200, new_since_full=2000, new_since_champion=200,
                      has_champion=True)
    assert decision.mode == "full" and "since the last full run" in decision.reason
    assert decide(POLICY, trigger="signal", new_since_attempt=200, new_since_full=1999, new_since_champion=200,
                  has_champion=True).mode == "incremental"


def test_drift_requests_follow_the_policy_unless_they_name_a_mode() -> None:
    incremental = PolicyConfig(drift_action="incremental")
    assert decide(incremental, trigger="drift", new_since_attempt=20, new_since_champion=23,
                  has_champion=True).mode == "incremental"
    assert decide(incremental, trigger="drift", new_since_attempt=20, new_since_champion=23, has_champion=True,
                  requested="full").mode == "full"


def test_the_evaluation_set_weights_recent_traffic_to_its_share() -> None:
    from trainer.config import PolicyConfig
    from trainer.data import Frame
    from trainer.frames import evaluation_set

    corpus = [(-i, f"old {i}", "positive", 1.0, "movies") for i in range(1, 301)]
    recent = [(i, f"new {i}", "negative", 1.0, "movies") for i in range(1, 41)]  # traffic the corpus covers
    frame = Frame().extend(corpus + recent)
    holdout = evaluation_set(frame, PolicyConfig(recent_share=0.5, recent_min=30))
    assert holdout.weights is not None and holdout.slices is not None
    assert sum(holdout.weights[300:]) == pytest.approx(sum(holdout.weights[:300]))  # half the weight each
    assert set(holdout.weights[:300]) == {1.0} and holdout.slices[-1] == "movies"
    assert holdout.current == [False] * 300 + [True] * 40 and holdout.cross_fitted is None
    assert evaluation_set(frame, PolicyConfig(recent_share=0.5, recent_min=41)).weights is None  # too few
    assert evaluation_set(frame, PolicyConfig(recent_share=0.0)).weights is None
    only_recent = evaluation_set(Frame().extend(recent), PolicyConfig())
    assert only_recent.weights is None


def test_traffic_outside_the_corpus_slices_carries_more_of_the_evaluation_weight() -> None:
    from trainer.config import PolicyConfig
    from trainer.data import Frame
    from trainer.frames import evaluation_set, recent_share

    corpus = [(-i, f"old {i}", "positive", 1.0, "movies") for i in range(1, 301)]
    tweets = [(i, f"new {i}", "negative", 1.0, "tweets") for i in range(1, 41)]
    policy = PolicyConfig(recent_share=0.5, uncovered_recent_share=0.9, recent_min=30)
    drifted = evaluation_set(Frame().extend(corpus + tweets), policy)
    assert drifted.weights is not None
    assert sum(drifted.weights[300:]) / sum(drifted.weights) == pytest.approx(0.9)  # all of it drifted
    half = Frame().extend(corpus + tweets[:20] + [(i, f"m {i}", "negative", 1.0, "movies") for i in range(41, 61)])
    assert recent_share(half, policy) == pytest.approx(0.7)  # half of it outside the corpus's slices
    unknown = Frame().extend(corpus + [(i, t, lbl, w, None) for i, t, lbl, w, _ in tweets])
    assert recent_share(unknown, policy) == pytest.approx(0.5)  # no slice: no evidence of drift
    assert recent_share(Frame().extend(corpus + tweets), policy.model_copy(update={"uncovered_recent_share": 0.2})) \
        == pytest.approx(0.5)  # never below recent_share


def test_cross_fitted_training_samples_join_the_evaluation_set_as_current_traffic() -> None:
    from trainer.config import PolicyConfig
    from trainer.data import Frame
    from trainer.frames import CrossFit, evaluation_set

    corpus = [(-i, f"old {i}", "positive", 1.0, "movies") for i in range(1, 301)]
    reserved = [(i, f"new {i}", "negative", 1.0, "movies") for i in range(1, 11)]
    trained = Frame().extend([(i, f"seen {i}", "neutral", 0.5, "movies") for i in range(100, 130)])
    cross = CrossFit(trained, [("neutral", 0.7)] * 30, folds=5)
    holdout = evaluation_set(Frame().extend(corpus + reserved), PolicyConfig(recent_share=0.5, recent_min=30), cross)
    assert len(holdout) == 340 and list(holdout.inputs[-30:]) == trained.inputs
    assert holdout.cross_fitted is not None and list(holdout.cross_fitted.rows) == list(range(310, 340))
    assert holdout.cross_fitted.folds == 5 and holdout.current is not None and sum(holdout.current) == 40
    assert holdout.weights is not None  # 10 reserved + 30 cross-fitted rows reach recent_min together
    assert sum(holdout.weights[300:]) == pytest.approx(sum(holdout.weights[:300]))
