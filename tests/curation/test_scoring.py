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
    distrust_p,
    fdr_cutoff,
    label_quality,
    low_trust,
    model_evidence,
    parse_probabilities,
    plurality,
    population,
    trust,
    trusted,
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
    assert not low_trust(0, 4, ANN)  # not enough evidence yet (min_evidence 5)
    assert low_trust(0, 5, ANN) and not low_trust(4, 1, ANN)
    assert trust(-20, 30, ANN) == 0.0 and trust(30, -20, ANN) == 1.0  # clamped


def test_distrust_p_tests_agreement_below_the_population() -> None:
    # the mean of n units of evidence against the prior mean 0.8, sd model_gain 0.8 per unit
    assert distrust_p(0, 0, ANN) == 1.0
    assert distrust_p(8, 2, ANN) == pytest.approx(0.5)  # exactly the population's agreement
    assert distrust_p(4, 6, ANN) == pytest.approx(0.5 * math.erfc(math.sqrt(10) / 2 / math.sqrt(2)))
    assert distrust_p(40, 60, ANN) < distrust_p(4, 6, ANN) < distrust_p(6, 4, ANN) < 0.5 < distrust_p(10, 0, ANN)


def test_fdr_cutoff_is_benjamini_hochberg() -> None:
    assert fdr_cutoff([], 0.1) == -1.0
    assert fdr_cutoff([0.2, 0.5, 0.9], 0.1) == -1.0  # nobody stands out: no discovery, not even the lowest
    # m = 5, q = 0.1: k x q / m = 0.02, 0.04, 0.06, 0.08, 0.1; the largest k with p_(k) below is 3
    assert fdr_cutoff([0.5, 0.001, 0.05, 0.03, 0.9], 0.1) == 0.05
    # many who stand out loosen the cutoff: 0.03 alone among 20 users is no discovery, among 10 flippers it is
    honest = [0.3 + 0.03 * i for i in range(19)]
    assert fdr_cutoff([0.03, *honest], 0.3) == -1.0
    assert fdr_cutoff([0.03, *[1e-4] * 10, *honest[:9]], 0.3) == 0.03


def test_trusted_needs_evidence_and_the_trusted_level() -> None:
    assert not trusted(0, 0, ANN)  # a new user is not trusted yet, even at the prior mean
    assert trusted(4, 1, ANN) and trusted(3.5, 1.5, ANN)  # (4 + 3.5) / 10 = 0.75
    assert not trusted(2, 3, ANN)  # 0.6 < 0.65


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


def test_agreement_with_the_other_annotators() -> None:
    assert agreement("pos", [("pos", 0.9)]) is True
    assert agreement("pos", [("neg", 0.9), ("pos", 0.3)]) is False
    assert agreement("pos", []) is None  # no peers: no peer evidence
    assert agreement("pos", [("neg", 0.8), ("pos", 0.8)]) is None  # a tie is no evidence


def test_population_moments_per_slice_fall_back_to_overall() -> None:
    scores = [("tweets", "pos", 0.3), ("tweets", "pos", 0.5), ("movies", "pos", 0.9), (None, "pos", 0.9),
              ("tweets", "neg", 0.6)]
    pop = population(scores, 2)
    assert pop.thresholds == pytest.approx({"pos": 0.65})
    assert pop.moments("tweets", "pos") == pytest.approx((0.4, 0.1))
    assert pop.moments("movies", "pos") == pytest.approx(pop.overall["pos"])  # one sample: the overall
    assert pop.moments(None, "pos") == pytest.approx((0.65, math.sqrt(0.0675)))
    assert pop.moments("tweets", "neg") is None  # too few anywhere


def test_model_evidence_is_relative_to_the_population() -> None:
    # a label as plausible to the model as the population's average label is worth the prior mean,
    # whatever the model's accuracy on the slice
    assert model_evidence(0.9, 0.9, 0.1, ANN) == pytest.approx(0.8)
    assert model_evidence(0.45, 0.45, 0.2, ANN) == pytest.approx(0.8)
    # model_gain (0.8) per population standard deviation, the z-score clipped to +-3
    assert model_evidence(0.25, 0.45, 0.2, ANN) == pytest.approx(0.8 - 0.8)
    assert model_evidence(0.65, 0.45, 0.2, ANN) == pytest.approx(0.8 + 0.8)
    assert model_evidence(0.0, 0.9, 0.1, ANN) == pytest.approx(0.8 - 3 * 0.8)
    assert model_evidence(0.5, 0.5, 0.0, ANN) == pytest.approx(0.8)  # no spread: no division by zero


def test_an_average_user_keeps_the_prior_mean_and_a_flipper_falls() -> None:
    # binary, the model right on 60% of this slice (drift): p(true) = 0.7 or 0.4; 30% of the users flip
    honest = [0.7, 0.4, 0.7, 0.7, 0.4] * 20
    flipper = [1 - p for p in honest]
    labels = honest * 7 + flipper * 3
    mean = sum(labels) / len(labels)
    sd = math.sqrt(sum((p - mean) ** 2 for p in labels) / len(labels))

    def user_trust(ps: list[float]) -> float:
        agree = sum(model_evidence(p, mean, sd, ANN) for p in ps)
        return trust(agree, len(ps) - agree, ANN)

    assert user_trust(honest) > 0.9
    assert user_trust(flipper) < ANN.floor
    assert trust(0.8 * len(labels), 0.2 * len(labels), ANN) == pytest.approx(0.8)  # the population's average


def test_a_score_equal_to_its_class_mean_is_no_label_issue() -> None:
    # the threshold is a mean of floats: 0.2 averaged over many rows is not exactly 0.2
    scores = [("negative", 0.2)] * 3 + [("neutral", 0.6)] * 3  # mean of three 0.2s: 0.20000000000000004
    thresholds = class_thresholds(scores, 1)
    quality = label_quality({"negative": 0.2, "neutral": 0.6, "positive": 0.2}, "negative", thresholds)
    assert not quality.issue and quality.confident == "neutral"
