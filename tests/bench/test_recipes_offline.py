"""bench/recipes_offline.py: a recipe's ``average`` key (measured before the kind had ``blend``) is the kind's
``blend``, and its ``NAME=WEIGHT[:JSON]`` argument."""

from __future__ import annotations

from typing import Any

import numpy as np

from bench.recipes_offline import blended, recipe_arg
from flywheel.demo import KIND_PARAMS
from kinds.tfidf import TfidfLogReg

TEXTS = ["great film, loved it", "awful plot and bad acting", "it was fine I guess", "loved the music",
         "bad bad bad", "an ordinary evening", "wonderful and moving", "boring and awful", "nothing special"]
LABELS = ["positive", "negative", "neutral"] * 3
WORD: dict[str, Any] = {"analyzer": "word", "ngram_min": 1, "ngram_max": 2}


def test_an_average_recipe_is_the_kinds_blend_the_mean_of_the_two_models() -> None:
    char: dict[str, Any] = {"analyzer": "char_wb", "ngram_min": 2, "ngram_max": 4}
    params = blended({**char, "average": WORD})
    assert params == {**char, "blend": WORD} and blended(char) == char
    model = TfidfLogReg(**params).fit(TEXTS, LABELS)
    texts = ["loved it", "awful acting", "fine"]
    first = TfidfLogReg(**char).fit(TEXTS, LABELS).predict_proba(texts)
    mean = (first + TfidfLogReg(**{**char, **WORD}).fit(TEXTS, LABELS).predict_proba(texts)) / 2
    assert np.abs(model.predict_proba(texts) - mean).max() < 1e-12


def test_a_recipe_argument_updates_the_demo_params() -> None:
    name, (params, weight) = recipe_arg('avg=0.2:{"average": {"analyzer": "word", "ngram_min": 1, "ngram_max": 2}}')
    assert (name, weight) == ("avg", 0.2)
    assert params == {**KIND_PARAMS["tfidf-logreg"], "average": WORD}
    assert blended(params) == {**KIND_PARAMS["tfidf-logreg"], "blend": WORD}  # the demo's own blend replaced
