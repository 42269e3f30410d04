"""The pure scores: probabilities parsing, disagreement, confident-learning label quality, annotator
trust, weights and consensus."""

from __future__ import annotations

import math

import pytest

from curation.config import AnnotatorsConfig, WeightsConfig
from curation.scoring import (
    agreement,
    class_thresholds,
    consensus,
    disagreement,
    label_quality,
    low_trust,
    parse_probabilities,
    plurality,
    trust,
    weight,
)

ANN = AnnotatorsConfig()


@pytest.mark.parametrize("raw", [None, [], "x", {"a": 1.0}, {"a": "0.5", "b": 0.5}, {"a": True, "b": 0.0},
                                 {"a": math.nan, "b": 0.5}, {"a": 1.5, "b": -0.5}, {1: 0.5, "b": 0.5}])
def test_unusable_probabilities_are_none_never_an_error(raw: object) -> None:
    assert parse_probabilities(raw) is None


def test_probabilities_parse() -> None:
    assert parse_probabilities({"negative": 0.25, "positive": 1}) == {"negative": 0.25, "positive": 1.0}


def test_disagreement_is_a_thumbs_down_or_a_label_other_than_the_served_one() -> None:
    assert disagreement(None, "down", "positive")
    assert not disagreement("positive", "up", "positive")
    assert disagreement("negative", None, "positive")
    assert not disagreement("positive", None, "positive")
    assert not disagreement("positive", None, None)


def test_class_thresholds_are_mean_self_confidence_per_class_with_a_minimum_count() -> None:
    scores = [("pos", 0.9), ("pos", 0.7), ("neg", 0.6), ("neg", 0.4), ("neu", 0.3)]
    assert class_thresholds(scores, 2) == pytest.approx({"pos": 0.8, "neg": 0.5})
    assert class_thresholds(scores, 1)["neu"] == pytest.approx(0.3)


def test_a_label_below_its_threshold_with_a_confident_other_class_is_an_issue() -> None:
    t = {"neg": 0.5, "neu": 0.2, "pos": 0.6}
    flipped = label_quality({"neg": 0.8, "neu": 0.1, "pos": 0.1}, "pos", t)
    assert flipped.issue and flipped.suggested == "neg" and flipped.self_confidence == pytest.approx(0.1)
    assert flipped.confident == "neg"
    fine = label_quality({"neg": 0.1, "neu": 0.1, "pos": 0.8}, "pos", t)
    assert not fine.issue and fine.confident == "pos" and fine.suggested is None


def test_low_self_confidence_alone_is_not_an_issue() -> None:
    t = {"neg": 0.5, "neu": 0.5, "pos": 0.6}
    unsure = label_quality({"neg": 0.34, "neu": 0.33, "pos": 0.33}, "pos", t)  # nothing confident
    assert not unsure.issue and unsure.confident is None and unsure.self_confidence == pytest.approx(0.33)


def test_no_decision_without_a_threshold_for_the_label_or_without_probabilities() -> None:
    probs = {"neg": 0.9, "neu": 0.05, "pos": 0.05}
    assert not label_quality(probs, "pos", {"neg": 0.5}).issue  # pos has too few samples yet
    assert label_quality(None, "pos", {"neg": 0.5}).self_confidence is None
    assert label_quality(probs, "other", {"neg": 0.5}).self_confidence is None
    assert label_quality(probs, None, {"neg": 0.5}) == label_quality(None, None, {})


def test_trust_is_the_beta_smoothed_agreement_rate() -> None:
    assert trust(0, 0, ANN) == pytest.approx(0.8)  # the prior mean, Beta(4, 1)
    assert trust(10, 0, ANN) == pytest.approx(14 / 15)
    assert trust(0, 10, ANN) == pytest.approx(4 / 15)
    assert not low_trust(0, 9, ANN)  # not enough evidence yet
    assert low_trust(0, 10, ANN) and not low_trust(6, 4, ANN)


def test_weight_scales_trust_by_the_prior_mean_and_clips() -> None:
    w = WeightsConfig(min=0.2, max=1.0)
    assert weight(0.8, ANN, w) == pytest.approx(1.0)
    assert weight(0.4, ANN, w) == pytest.approx(0.5)
    assert weight(0.05, ANN, w) == pytest.approx(0.2)
    assert weight(0.95, ANN, WeightsConfig(max=1.5)) == pytest.approx(0.95 / 0.8)
    assert weight(None, ANN, w) == 1.0


def test_consensus_is_the_trust_weighted_majority_with_a_share() -> None:
    assert plurality([("a", 0.8), ("b", 0.8)]) is None
    assert plurality([("a", 0.8), ("b", 0.8), ("a", 0.2)]) == "a"
    assert plurality([]) is None
    assert consensus([("a", 0.9), ("b", 0.3)], 0.6) == "a"
    assert consensus([("a", 0.5), ("b", 0.4)], 0.6) is None  # 0.56 of the weight: not settled
    assert consensus([("a", 0.8), ("a", 0.8), ("b", 0.8)], 0.6) == "a"


def test_agreement_with_other_annotators_and_the_model() -> None:
    assert agreement("pos", [], "pos", ANN) is True
    assert agreement("pos", [], "neg", ANN) is False
    assert agreement("pos", [], None, ANN) is None  # no reference: no evidence
    # two trusted users outvote the model; a tie is no evidence
    assert agreement("pos", [("pos", 0.9), ("pos", 0.9)], "neg", ANN) is True
    assert agreement("pos", [("neg", 1.0)], "pos", ANN) is None
