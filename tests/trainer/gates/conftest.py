"""Real tfidf-logreg models, fitted once per session and shared by the gate tests (fitting dominates
their run time). Row ranges of the shuffled vader files never overlap a holdout they are scored on."""

from __future__ import annotations

import pytest

from kinds import ModelKind, create
from tests.trainer.gates._data import FLIP, texts_labels

HOLDOUT_MOVIES = (0, 1500)  # evaluation holdout rows of vader_movies
HOLDOUT_TWEETS = (0, 400)


def _fit(texts: list[str], labels: list[str]) -> ModelKind:
    return create("tfidf-logreg").fit(texts, labels)


@pytest.fixture(scope="session")
def weak_model() -> ModelKind:
    """300 movie rows: the champion a better candidate should beat."""
    return _fit(*texts_labels("vader_movies", 1500, 1800))


@pytest.fixture(scope="session")
def good_model() -> ModelKind:
    """All of vader_movies except the evaluation holdout (9105 rows): the decent model the behavioural
    defaults are tuned to pass, and the better candidate of the evaluation tests."""
    return _fit(*texts_labels("vader_movies", HOLDOUT_MOVIES[1], None))


@pytest.fixture(scope="session")
def flipped_model() -> ModelKind:
    """The same 3000 movie rows with positive and negative swapped."""
    texts, labels = texts_labels("vader_movies", 1500, 4500)
    return _fit(texts, [FLIP[y] for y in labels])


@pytest.fixture(scope="session")
def tweets_model() -> ModelKind:
    """Trained on tweets only: worse on movies, much better on tweets."""
    return _fit(*texts_labels("vader_tweets", HOLDOUT_TWEETS[1], HOLDOUT_TWEETS[1] + 1000))
