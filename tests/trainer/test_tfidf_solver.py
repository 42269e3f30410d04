"""tfidf-logreg's solver (issue 18): newton-cg, the default, and lbfgs, as fitted before, minimise the same
strictly convex regularised loss; the default reaches its optimum (a fit to a 1e-10 gradient) at least as
closely as lbfgs does, on the demo's char_wb features. The default is not written into the params (old
artifacts read as before); lbfgs is, and round-trips."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from kinds import KindError, create, load_model

from .lifecycle_helpers import rows

CHAR_WB = {"analyzer": "char_wb", "ngram_min": 2, "ngram_max": 5, "min_df": 2}


def _data() -> tuple[list[str], list[str], list[float], list[str]]:
    corpus, stream = rows("vader_movies")[:1500], rows("vader_tweets")[:400]
    texts = [r.text for r in corpus] + [r.text for r in stream[:200]]
    labels = [r.label for r in corpus] + [r.label for r in stream[:200]]
    return texts, labels, [0.2] * len(corpus) + [1.0] * 200, [r.text for r in stream[200:]]


def test_both_solvers_reach_the_regularised_optimum() -> None:
    texts, labels, weights, held = _data()
    newton = create("tfidf-logreg", **CHAR_WB).fit(texts, labels, weights)
    lbfgs = create("tfidf-logreg", **CHAR_WB, solver="lbfgs").fit(texts, labels, weights)
    exact = create("tfidf-logreg", **CHAR_WB).fit(texts, labels, weights)
    exact_clf = exact._sklearn()[1]  # the same features, refitted to a 1e-10 gradient
    vectorizer = exact._sklearn()[0]
    exact_clf.set_params(tol=1e-10, max_iter=1000).fit(vectorizer.transform(texts), labels,
                                                       sample_weight=np.asarray(weights))
    optimum = exact_clf.predict_proba(vectorizer.transform(held))
    off = {name: np.abs(model.predict_proba(held) - optimum).max() for name, model in
           (("newton-cg", newton), ("lbfgs", lbfgs))}
    assert off["newton-cg"] < 0.02 and off["lbfgs"] < 0.05, off
    assert off["newton-cg"] <= off["lbfgs"], off
    assert np.mean(newton.predict_proba(held).argmax(1) == optimum.argmax(1)) >= 0.99


def test_the_default_solver_is_not_in_the_params_and_lbfgs_round_trips(tmp_path: Path) -> None:
    assert "solver" not in create("tfidf-logreg", **CHAR_WB).params
    texts, labels, weights, held = _data()
    model = create("tfidf-logreg", solver="lbfgs").fit(texts[:600], labels[:600], weights[:600])
    model.save(tmp_path / "m")
    loaded = load_model(tmp_path / "m")
    assert loaded.params == model.params and loaded.params["solver"] == "lbfgs"
    assert np.array_equal(loaded.predict_proba(held), model.predict_proba(held))
    with pytest.raises(KindError, match="solver must be one of"):
        create("tfidf-logreg", solver="saga")


def test_a_fit_started_at_another_solution_reaches_the_same_optimum_sooner() -> None:
    texts, labels, weights, held = _data()
    champion = create("tfidf-logreg", **CHAR_WB).fit(texts[:1600], labels[:1600], weights[:1600])
    cold = create("tfidf-logreg", **CHAR_WB).fit(texts, labels, weights)
    started = create("tfidf-logreg", **CHAR_WB).starting_at(champion.solution()).fit(texts, labels, weights)
    exact = create("tfidf-logreg", **CHAR_WB).fit(texts, labels, weights)
    vectorizer, clf = exact._sklearn()
    clf.set_params(tol=1e-10, max_iter=1000).fit(vectorizer.transform(texts), labels, sample_weight=np.asarray(weights))
    optimum = clf.predict_proba(vectorizer.transform(held))
    assert np.abs(started.predict_proba(held) - optimum).max() < 0.02
    assert started._sklearn()[1].n_iter_[0] < cold._sklearn()[1].n_iter_[0]
    # the start is used once, and only for the same label set
    again = create("tfidf-logreg", **CHAR_WB).starting_at(champion.solution())
    assert again.fit(texts, labels, weights)._sklearn()[1].warm_start
    assert not again.fit(texts, labels, weights)._sklearn()[1].warm_start
    two = [lbl if lbl != "neutral" else "negative" for lbl in labels]
    assert not create("tfidf-logreg", **CHAR_WB).starting_at(champion.solution()).fit(
        texts, two, weights)._sklearn()[1].warm_start
