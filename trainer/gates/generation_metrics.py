"""The text-generation quality score (issue 20): a weighted sum of BLEU-1..4 and ROUGE-L precision of
generated responses against references, every part on a 0..1 scale, averaged over the pairs.

BLEU-n is sacrebleu's sentence BLEU of order n (the brevity penalty times the geometric mean of the
1..n-gram precisions, ``exp`` smoothing, ``effective_order``, the ``13a`` tokeniser), so a one-word answer
that happens to be in the reference does not score 1; ROUGE-L precision is rouge-score's (no stemming).
Both run offline (no NLTK data). The weights come from the chatbot pipeline's rule (BLEU-1 10%, BLEU-2 15%,
BLEU-3 25%, BLEU-4 40%, ROUGE-L precision 10%) and are configurable; they must be non-negative with a
positive sum and are normalised to sum 1.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from functools import cache
from typing import Any

from trainer.gates.exceptions import GateConfigError, GateError

DEFAULT_WEIGHTS: Mapping[str, float] = {"bleu1": 0.10, "bleu2": 0.15, "bleu3": 0.25, "bleu4": 0.40,
                                        "rougeL_precision": 0.10}
PARTS = tuple(DEFAULT_WEIGHTS)


def score_parts(hypotheses: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """Each part (``bleu1`` .. ``bleu4``, ``rougeL_precision``), the mean over the pairs, on 0..1."""
    if len(hypotheses) != len(references):
        raise GateError(f"{len(hypotheses)} hypotheses for {len(references)} references")
    if not hypotheses:
        raise GateError("no pairs to score")
    totals = dict.fromkeys(PARTS, 0.0)
    for hypothesis, reference in zip(hypotheses, references, strict=True):
        for n in range(1, 5):
            totals[f"bleu{n}"] += _bleu(n).sentence_score(hypothesis, [reference]).score / 100.0
        totals["rougeL_precision"] += _rouge().score(reference, hypothesis)["rougeL"].precision
    return {part: total / len(hypotheses) for part, total in totals.items()}


def weighted_score(hypotheses: Sequence[str], references: Sequence[str],
                   weights: Mapping[str, float] = DEFAULT_WEIGHTS) -> float:
    """The weighted sum of :func:`score_parts` (0..1)."""
    normalised = check_weights(weights)
    parts = score_parts(hypotheses, references)
    return min(1.0, sum(normalised[part] * parts[part] for part in PARTS))  # float sums may pass 1


def check_weights(weights: Mapping[str, float]) -> dict[str, float]:
    """``weights`` normalised to sum 1, or :class:`GateConfigError` naming what is wrong."""
    unknown = set(weights) - set(PARTS)
    if unknown:
        raise GateConfigError("score weights", f"unknown score parts {sorted(unknown)}; known: {list(PARTS)}")
    values = {part: float(weights.get(part, 0.0)) for part in PARTS}
    if any(not math.isfinite(v) or v < 0 for v in values.values()) or sum(values.values()) <= 0:
        raise GateConfigError("score weights", f"must be finite, non-negative, with a positive sum: {dict(weights)}")
    total = sum(values.values())
    return {part: v / total for part, v in values.items()}


@cache
def _bleu(order: int) -> Any:
    from sacrebleu.metrics.bleu import BLEU

    return BLEU(max_ngram_order=order, effective_order=True)


@cache
def _rouge() -> Any:
    from rouge_score.rouge_scorer import RougeScorer

    return RougeScorer(["rougeL"], use_stemmer=False)
