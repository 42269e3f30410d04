"""bench/recipes_offline.py: a recipe's ``average`` key (the mean of two models' probabilities) and its
``NAME=WEIGHT[:JSON]`` argument."""

from __future__ import annotations

import numpy as np
import pytest

from bench.recipes_offline import Averaged, averaged, recipe_arg
from flywheel.demo import KIND_PARAMS
from kinds.tfidf import TfidfLogReg

TEXTS = ["great film, loved it", "awful plot and bad acting", "it was fine I guess", "loved the music",
         "bad bad bad", "an ordinary evening", "wonderful and moving", "boring and awful", "nothing special"]
LABELS = ["positive", "negative", "neutral"] * 3


def test_an_average_is_the_mean_of_its_models_probabilities_and_one_model_is_itself() -> None:
    char = TfidfLogReg(analyzer="char_wb", ngram_min=2, ngram_max=4).fit(TEXTS, LABELS)
    word = TfidfLogReg().fit(TEXTS, LABELS)
    both = averaged([char, word])
    assert isinstance(both, Averaged) and both.labels == char.labels and both.fitted
    texts = ["loved it", "awful acting", "fine"]
    mean = (char.predict_proba(texts) + word.predict_proba(texts)) / 2
    assert np.allclose(both.predict_proba(texts), mean) and np.allclose(mean.sum(axis=1), 1.0)
    assert both.predict(texts) == [both.labels[int(i)] for i in mean.argmax(axis=1)]
    assert averaged([char]) is char


def test_models_of_other_label_sets_are_not_averaged() -> None:
    two = TfidfLogReg().fit(TEXTS[:2], LABELS[:2])
    with pytest.raises(ValueError, match="labels differ"):
        Averaged([TfidfLogReg().fit(TEXTS, LABELS), two])


def test_a_recipe_argument_updates_the_demo_params() -> None:
    name, (params, weight) = recipe_arg('avg=0.2:{"average": {"analyzer": "word", "ngram_min": 1, "ngram_max": 2}}')
    assert (name, weight) == ("avg", 0.2)
    assert params == {**KIND_PARAMS["tfidf-logreg"], "average": {"analyzer": "word", "ngram_min": 1, "ngram_max": 2}}


def test_an_average_on_the_blended_demo_recipe_is_one_more_model() -> None:
    """The demo's recipe is a blend; an "average" recipe's second model is a single model (no blend of its own)."""
    from bench.recipes_offline import average_params

    params = average_params(dict(KIND_PARAMS["tfidf-logreg"]), {"analyzer": "char_wb", "ngram_min": 1, "ngram_max": 4})
    assert "blend" not in params and (params["ngram_min"], params["ngram_max"]) == (1, 4)
    model = TfidfLogReg(**params).fit(TEXTS, LABELS)
    assert model.params.get("blend") is None and model.predict(TEXTS[:1])

