"""Pure scores of one feedback sample: disagreement with the served prediction, label quality by
confident learning, annotator trust and the sample weight it implies.

Label quality (Northcutt, Jiang & Chuang, "Confident Learning", JAIR 2021): the served model's
probabilities for a text it had not trained on are out-of-sample. The *self-confidence* of a sample is
p(given label). The threshold of class j is the mean self-confidence of the samples labelled j. A sample
is a **label issue** when its self-confidence is below its class's threshold and some other class k
reaches its own threshold (p_k >= t_k): the confident joint counts it off the diagonal.

Annotator trust counts agreement with the other users of the same text (peers) and the served model's
evidence about each label, read *relative to the population*: where every user's labels get a low
self-confidence (the model is wrong there: drift), a user as low as everyone else loses nothing; a user far
below the population (one who flips labels) does (:func:`model_evidence`).
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from statistics import NormalDist
from typing import TypeVar

from curation.config import AnnotatorsConfig, WeightsConfig

Probabilities = Mapping[str, float]
_K = TypeVar("_K", bound=Hashable)


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
    return _means(scores, min_count)


def _means(scores: Iterable[tuple[_K, float]], min_count: int) -> dict[_K, float]:
    return {key: mean for key, (mean, _sd) in _moments(scores, min_count).items()}


def _moments(scores: Iterable[tuple[_K, float]], min_count: int) -> dict[_K, tuple[float, float]]:
    sums: dict[_K, tuple[int, float, float]] = {}
    for key, score in scores:
        n, s, ss = sums.get(key, (0, 0.0, 0.0))
        sums[key] = (n + 1, s + score, ss + score * score)
    return {key: (s / n, math.sqrt(max(0.0, ss / n - (s / n) ** 2))) for key, (n, s, ss) in sums.items()
            if n >= min_count}


@dataclass(frozen=True)
class Population:
    """How much the served model agrees with the population's labels over the recent window: the mean (and
    standard deviation) of the self-confidence of each label, overall (the means are the confident-learning
    thresholds) and per slice (``COALESCE(domain, segment)``)."""

    overall: Mapping[str, tuple[float, float]]
    slices: Mapping[tuple[str, str], tuple[float, float]]

    @property
    def thresholds(self) -> dict[str, float]:
        return {label: mean for label, (mean, _sd) in self.overall.items()}

    def moments(self, slice_: str | None, label: str) -> tuple[float, float] | None:
        """(mean, sd) of ``label``'s self-confidence in the slice, else overall (None: too few samples)."""
        if slice_ is not None and (slice_, label) in self.slices:
            return self.slices[(slice_, label)]
        return self.overall.get(label)


def population(scores: Iterable[tuple[str | None, str, float]], min_count: int) -> Population:
    """:class:`Population` from (slice, label, self-confidence); a mean needs ``min_count`` samples."""
    rows = list(scores)
    return Population(_moments(((label, score) for _slice, label, score in rows), min_count),
                      _moments((((slice_, label), score) for slice_, label, score in rows if slice_ is not None),
                               min_count))


def model_evidence(self_confidence: float, mean: float, sd: float, config: AnnotatorsConfig) -> float:
    """The served model's evidence that a label is right, relative to the population: the prior mean,
    moved by ``model_gain`` for each population standard deviation the label's self-confidence lies above or
    below the population's mean for that label (in its slice); the z-score is clipped to +-3.

    A user who agrees with the model as much as the population does gets the prior mean on average,
    however wrong the model is on the slice (drift); one who contradicts it far more than everyone else
    (flipping labels) gets less. The standard deviation makes it scale-free: one label moves agreement by
    ``model_gain`` per standard deviation, whatever the model's probabilities look like on the slice. May
    fall outside [0, 1] for one label; the trust over many is clamped."""
    z = (self_confidence - mean) / max(sd, _MIN_SD)
    return config.prior_mean + config.model_gain * min(_MAX_Z, max(-_MAX_Z, z))


_TIE = 1e-9  # probabilities closer than this are equal
_MIN_SD = 1e-3  # a label the model scores the same everywhere: any difference is a large z, clipped
_MAX_Z = 3.0  # one outlying label moves a user's agreement by at most 3 x model_gain


@dataclass(frozen=True)
class LabelQuality:
    """``self_confidence`` = p(given label) (None without usable probabilities); ``confident`` = the class
    the model is confident about (the highest p_k among classes with p_k >= t_k);
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
    # thresholds are means of floats: a score equal to the mean of equal scores must not fall "below" it
    confident_set = [k for k, p in probabilities.items() if k in thresholds and p >= thresholds[k] - _TIE]
    confident = max(confident_set, key=lambda k: (probabilities[k], k)) if confident_set else None
    others = [k for k in confident_set if k != label]
    if label in thresholds and score < thresholds[label] - _TIE and others:
        suggested = max(others, key=lambda k: (probabilities[k], k))
        return LabelQuality(score, confident, True, suggested)
    return LabelQuality(score, confident, False, None)


def trust(agree: float, disagree: float, config: AnnotatorsConfig) -> float:
    """Posterior mean agreement rate under the Beta(prior_agree, prior_disagree) prior, clamped to [0, 1]
    (the model's evidence about one label may fall outside [0, 1])."""
    a, b = config.prior_agree, config.prior_disagree
    return min(1.0, max(0.0, (a + agree) / (a + b + agree + disagree)))


def low_trust(agree: float, disagree: float, config: AnnotatorsConfig) -> bool:
    """Enough judged labels, and a trust below the floor: this user's samples are quarantined."""
    return agree + disagree >= config.min_evidence and trust(agree, disagree, config) < config.floor


def distrust_p(agree: float, disagree: float, config: AnnotatorsConfig) -> float:
    """One-sided p-value of "this user agrees less than the population": a label's evidence has the prior
    mean and a standard deviation of ``model_gain`` under that null (:func:`model_evidence` standardises
    it against the population; a peer vote, a Bernoulli at the prior mean, varies less), so the mean of
    n units of evidence is tested with z = (agree / n - prior mean) x sqrt(n) / model_gain."""
    n = agree + disagree
    if n <= 0:
        return 1.0
    return NormalDist().cdf((agree / n - config.prior_mean) * math.sqrt(n) / config.model_gain)


def fdr_cutoff(p_values: Iterable[float], level: float) -> float:
    """The Benjamini-Hochberg cutoff at false-discovery rate ``level``: the largest p_(k) with
    p_(k) <= k x level / m (p-values at or below it are discoveries); -1 when there are none. The cutoff
    rises with the number of users who stand out, so a stream where nobody does quarantines nobody by chance
    and one with many flippers catches them at a looser per-user level."""
    ordered = sorted(p_values)
    m = len(ordered)
    found = [p for k, p in enumerate(ordered, start=1) if p <= k * level / m]
    return found[-1] if found else -1.0


def trusted(agree: float, disagree: float, config: AnnotatorsConfig) -> bool:
    """Enough judged labels, and a trust at or above ``trusted``: this user's label issues are accepted
    (down-weighted) rather than quarantined."""
    return agree + disagree >= config.min_evidence and trust(agree, disagree, config) >= config.trusted


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


def agreement(label: str, others: Iterable[tuple[str, float]]) -> bool | None:
    """Does ``label`` agree with the plurality of the other annotators of the same text (trust-weighted)?
    None when there is none or it is a tie: no peer evidence about the annotator either way."""
    reference = plurality(others)
    return None if reference is None else reference == label
