"""The weighted BLEU-1..4 / ROUGE-L-precision score of the text-generation gate."""

from __future__ import annotations

import pytest

from trainer.gates.exceptions import GateConfigError, GateError
from trainer.gates.generation_metrics import DEFAULT_WEIGHTS, score_parts, weighted_score


def test_default_weights_are_the_chatbot_pipelines() -> None:
    assert dict(DEFAULT_WEIGHTS) == {"bleu1": 0.10, "bleu2": 0.15, "bleu3": 0.25, "bleu4": 0.40,
                                     "rougeL_precision": 0.10}


def test_identical_texts_score_one_and_unrelated_texts_zero() -> None:
    assert weighted_score(["the shop opens at nine tomorrow"], ["the shop opens at nine tomorrow"]) == \
        pytest.approx(1.0)
    assert weighted_score(["purple elephants sing"], ["the shop opens at nine"]) == 0.0


def test_parts_follow_their_definitions() -> None:
    parts = score_parts(["the cat sat on the mat"], ["the cat is on the mat"])
    assert parts["bleu1"] == pytest.approx(5 / 6)  # 5 of 6 unigrams match, same length: no brevity penalty
    assert parts["bleu2"] == pytest.approx((5 / 6 * 3 / 5) ** 0.5)
    assert parts["rougeL_precision"] == pytest.approx(5 / 6)  # LCS "the cat on the mat"
    assert parts["bleu1"] > parts["bleu2"] > parts["bleu3"] > parts["bleu4"] > 0


def test_a_short_answer_is_not_rewarded_by_the_brevity_penalty() -> None:
    short = score_parts(["the"], ["the shop opens at nine tomorrow morning"])
    assert short["rougeL_precision"] == 1.0  # precision alone would call it perfect
    assert short["bleu1"] < 0.01


def test_closer_hypotheses_score_higher_and_weights_are_configurable() -> None:
    ref = ["I can sell you a sword for ten gold coins"]
    near = weighted_score(["I can sell you a sword for twelve gold coins"], ref)
    far = weighted_score(["a sword costs money"], ref)
    assert near > far
    only_rouge = weighted_score(["a sword costs money"], ref, {"rougeL_precision": 2.0})
    assert only_rouge == pytest.approx(score_parts(["a sword costs money"], ref)["rougeL_precision"])


def test_bad_input_is_refused() -> None:
    with pytest.raises(GateError):
        weighted_score(["a"], ["a", "b"])
    with pytest.raises(GateError):
        weighted_score([], [])
    with pytest.raises(GateConfigError):
        weighted_score(["a"], ["a"], {"bleu5": 1.0})
    with pytest.raises(GateConfigError):
        weighted_score(["a"], ["a"], {"bleu1": -1.0, "bleu2": 2.0})


def test_the_score_bar_is_never_below_the_champion_on_the_same_references() -> None:
    """The best-in-history version is picked by its recorded score (on its own run's references); re-scored
    on today's it may fall below the champion, which then sets the bar. No history at all: the champion."""
    from trainer.gates.generation import GenerationConfig, GenerationMetrics, generation_verdicts

    def metrics(score: float) -> GenerationMetrics:
        return GenerationMetrics(score=score, parts={}, perplexity=10.0, toxicity_rate=0.0, p95_latency_ms=100.0,
                                 references=28, probes=10)

    config = GenerationConfig()
    champion = metrics(0.0886)
    between = metrics(0.07)  # above the re-scored best of history (0.0567), below the champion
    [verdict, *_] = generation_verdicts(between, champion, 0.0567, config)
    assert not verdict.passed and verdict.details["best_in_history"] == 0.0886
    [verdict, *_] = generation_verdicts(between, champion, None, config)
    assert not verdict.passed and "first model" not in verdict.reason
    [verdict, *_] = generation_verdicts(metrics(0.0886 + config.min_improvement), champion, 0.0567, config)
    assert verdict.passed
    [verdict, *_] = generation_verdicts(between, None, None, config)
    assert verdict.passed and "first model" in verdict.reason
