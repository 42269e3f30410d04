"""bench/recipes_offline.py: a recipe's ``average`` key (measured before the kind had ``blend``) is the kind's
``blend``, its ``NAME=WEIGHT[:JSON]`` argument, ``--draws``' summary and the minilm-head recipes' one embedder."""

from __future__ import annotations

from typing import Any

import numpy as np

from bench.recipes_offline import blended, gate_summary, model_of, recipe_arg
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
    name, (params, weight) = recipe_arg('avg=0.2:{"average": {"analyzer": "word", "ngram_min": 1, "ngram_max": 2}}',
                                        KIND_PARAMS["tfidf-logreg"])
    assert (name, weight) == ("avg", 0.2)
    assert params == {**KIND_PARAMS["tfidf-logreg"], "average": WORD}
    assert blended(params) == {**KIND_PARAMS["tfidf-logreg"], "blend": WORD}  # the demo's own blend replaced


def test_the_summary_counts_draws_where_a_recipe_passed_and_averages_the_best() -> None:
    def point(a: tuple[bool, float, float], b: tuple[bool, float, float]) -> dict[str, Any]:
        return {name: {"passed": p, "delta": d, "target": t} for name, (p, d, t) in zip("ab", (a, b), strict=True)}

    draws = [{100: point((False, 0.01, 0.6), (True, 0.05, 0.7)),
              150: point((True, 0.04, 0.7), (True, 0.06, 0.72))},
             {100: point((False, 0.02, 0.61), (False, -0.01, 0.58)),
              150: point((False, 0.03, 0.65), (True, 0.02, 0.6))}]
    assert gate_summary(draws, [100, 150]) == {
        100: {"passed": 1, "draws": 2, "best_delta_mean": 0.035, "best_target_mean": 0.655},
        150: {"passed": 2, "draws": 2, "best_delta_mean": 0.045, "best_target_mean": 0.685}}


def test_minilm_recipes_share_one_embedder_and_its_cache() -> None:
    one, two = model_of("minilm-head", {"precision": "fp32"}), model_of("minilm-head", {"precision": "fp32", "c": 0.1})
    assert one.embedder.cache is two.embedder.cache and two.params["c"] == 0.1 != one.params["c"]
    assert isinstance(model_of("tfidf-logreg", KIND_PARAMS["tfidf-logreg"]), TfidfLogReg)
