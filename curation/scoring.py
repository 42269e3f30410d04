"""Pure scores of one feedback sample: disagreement with the served prediction, label quality by
confident learning, annotator trust and the sample weight it implies.

Label quality (Northcutt, Jiang & Chuang, "Confident Learning", JAIR 2021): the served model's
probabilities for a text it had not trained on are out-of-sample. The *self-confidence* of a sample is
p(given label). The threshold of class j is the mean self-confidence of the samples labelled j. A sample
is a **label issue** when its self-confidence is below its class's threshold and some other class k
reaches its own threshold (p_k >= t_k): the confident joint counts it off the diagonal.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from curation.config import AnnotatorsConfig, WeightsConfig

Probabilities = Mapping[str, float]


def parse_probabilities(raw: object) -> dict[str, float] | None:
    """The probabilities stored with a prediction, or None when they are unusable (never raises)."""
    if not isinstance(raw, Mapping) or len(raw) < 2:
        return None
    out: dict[str, float] = {}
    for key, value in raw.items():
        if not isinstance(key, str) or isinstance(value, bool) or not isinstance(value, int | float):
            return None
        if not math.isfinite(value) or not 0.0 <= value <= 1.0:
            return None
        out[key] = float(value)
    return out


def disagreement(label: str | None, thumbs: str | None, predicted: str | None) -> bool:
    """The user says the served answer was wrong: a thumbs down, or a label other than the served one."""
    if thumbs == "down":
        return True
    return label is not None and predicted is not None and label != predicted


def class_thresholds(scores: Iterable[tuple[str, float]], min_count: int) -> dict[str, float]:
    """Per-class threshold = mean self-confidence of the samples given that class; classes with fewer
    than ``min_count`` samples get none (no label issue is decided for or against them)."""
    sums: dict[str, float] = {}
    counts: dict[str, int] = {}
    for label, score in scores:
        sums[label] = sums.get(label, 0.0) + score
        counts[label] = counts.get(label, 0) + 1
    return {label: sums[label] / n for label, n in counts.items() if n >= min_count}


@dataclass(frozen=True)
class LabelQuality:
    """``self_confidence`` = p(given label) (None without usable probabilities); ``confident`` = the class
    the model is confident about (the highest p_k among classes with p_k >= t_k), the model's vote;
    ``issue`` = a confident-learning label issue, ``suggested`` then names the confident other class."""

    self_confidence: float | None = None
    confident: str | None = None
    issue: bool = False
    suggested: str | None = None


def label_quality(probabilities: Probabilities | None, label: str | None,
                  thresholds: Mapping[str, float]) -> LabelQuality:
    if probabilities is None or label is None or label not in probabilities:
        return LabelQuality()
    score = probabilities[label]
    confident_set = [k for k, p in probabilities.items() if k in thresholds and p >= thresholds[k]]
    confident = max(confident_set, key=lambda k: (probabilities[k], k)) if confident_set else None
    others = [k for k in confident_set if k != label]
    if label in thresholds and score < thresholds[label] and others:
        suggested = max(others, key=lambda k: (probabilities[k], k))
        return LabelQuality(score, confident, True, suggested)
    return LabelQuality(score, confident, False, None)


def trust(agree: float, disagree: float, config: AnnotatorsConfig) -> float:
    """Posterior mean agreement rate under the Beta(prior_agree, prior_disagree) prior."""
    a, b = config.prior_agree, config.prior_disagree
    return (a + agree) / (a + b + agree + disagree)


def low_trust(agree: float, disagree: float, config: AnnotatorsConfig) -> bool:
    """Enough judged labels, and a trust below the floor: this user's samples are quarantined."""
    return agree + disagree >= config.min_evidence and trust(agree, disagree, config) < config.floor


def weight(user_trust: float | None, annotators: AnnotatorsConfig, weights: WeightsConfig) -> float:
    """clip(trust / prior mean, min, max): a user at the prior weighs 1; anonymous feedback too."""
    if user_trust is None:
        return min(max(1.0, weights.min), weights.max)
    return min(max(user_trust / annotators.prior_mean, weights.min), weights.max)


def weighted_votes(votes: Iterable[tuple[str, float]]) -> dict[str, float]:
    totals: dict[str, float] = {}
    for label, w in votes:
        if w > 0:
            totals[label] = totals.get(label, 0.0) + w
    return totals


def plurality(votes: Iterable[tuple[str, float]]) -> str | None:
    """The label with the most weight; None without votes or on a tie (no evidence either way)."""
    ranked = sorted(weighted_votes(votes).items(), key=lambda kv: -kv[1])
    if not ranked or (len(ranked) > 1 and math.isclose(ranked[0][1], ranked[1][1])):
        return None
    return ranked[0][0]


def consensus(votes: Sequence[tuple[str, float]], min_share: float) -> str | None:
    """The trust-weighted majority label when it holds at least ``min_share`` of the weight, else None."""
    totals = weighted_votes(votes)
    total = sum(totals.values())
    if not total:
        return None
    best = plurality(votes)
    return best if best is not None and totals[best] / total >= min_share else None


def agreement(label: str, others: Iterable[tuple[str, float]], model_vote: str | None,
              config: AnnotatorsConfig) -> bool | None:
    """Does ``label`` agree with the reference the other voters make: the other annotators of the same
    text (trust-weighted) plus the served model's confident class (``model_vote_weight``)? None when
    there is no reference or it is a tie: no evidence about the annotator either way."""
    votes = list(others)
    if model_vote is not None:
        votes.append((model_vote, config.model_vote_weight))
    reference = plurality(votes)
    return None if reference is None else reference == label
