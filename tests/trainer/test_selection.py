"""Choosing between candidates that passed the gates: a corpus-weight choice replaces the candidate at
the policy's corpus weight only when the evaluation gate, judging the two against each other on the same
rows, finds it better. Real models (tfidf-logreg on vader_tweets) and the real evaluation gate."""

from __future__ import annotations

from kinds.tfidf import TfidfLogReg
from trainer.config import PolicyConfig
from trainer.data import Frame
from trainer.gates import EvaluationConfig, EvaluationGate, Verdict
from trainer.selection import Candidate, select_candidate

from .lifecycle_helpers import rows

TWEETS = rows("vader_tweets")
HOLDOUT = Frame().extend((i + 1, r.text, r.label, 1.0, "tweets") for i, r in enumerate(TWEETS[:600]))
GATE = EvaluationGate(EvaluationConfig(metric_weights={"accuracy": 1.0}))
POLICY = PolicyConfig()


def candidate(train: slice, corpus_weight: float | None, score: float, *, c: float = 4.0) -> Candidate:
    model = TfidfLogReg(c=c).fit([r.text for r in TWEETS[train]], [r.label for r in TWEETS[train]])
    passed = Verdict("evaluation", True, "passed", {"candidate": {"score": score}})
    return Candidate("tfidf-logreg", model, 0.1, verdicts=[passed], corpus_weight=corpus_weight)


def test_a_choice_within_noise_of_the_policys_weight_gives_way_to_it() -> None:
    default = candidate(slice(600, 1000), None, 0.70)
    close = candidate(slice(600, 1000), 0.05, 0.71, c=3.0)  # the same data, barely another recipe
    chosen = select_candidate([close, default], HOLDOUT, GATE, POLICY)
    assert chosen is default
    assert close.selection is not None and not close.selection.passed
    assert "vs champion" in close.selection.reason and close.summary()["selection"]["chosen"] is False


def test_a_choice_the_gate_finds_better_is_chosen() -> None:
    default = candidate(slice(600, 700), None, 0.60)
    better = candidate(slice(600, 2600), 0.05, 0.72)  # 20x the labels
    chosen = select_candidate([better, default], HOLDOUT, GATE, POLICY)
    assert chosen is better and better.selection is not None and better.selection.passed, better.selection
    assert better.summary()["selection"]["chosen"] is True


def test_without_the_policys_weight_among_the_passing_the_best_score_wins() -> None:
    alone = candidate(slice(600, 700), 0.05, 0.65)
    assert select_candidate([alone], HOLDOUT, GATE, POLICY) is alone and alone.selection is None
    default = candidate(slice(600, 700), None, 0.66)
    assert select_candidate([default, alone], HOLDOUT, GATE, POLICY) is default and default.selection is None
