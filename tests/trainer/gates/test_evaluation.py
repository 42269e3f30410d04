"""The evaluation gate: real tfidf-logreg candidates vs champions on real holdouts, and scripted models
for p-values that can be computed by hand."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pydantic
import pytest
from scipy import stats
from sklearn.metrics import accuracy_score, f1_score, recall_score

from kinds import ModelKind
from tests.trainer.gates._data import Scripted, confident, texts_labels
from trainer.gates import CrossFitted, EvaluationConfig, EvaluationGate, GateInput, Holdout


def _holdout(*parts: tuple[str, int, int]) -> Holdout:
    texts: list[str] = []
    labels: list[str] = []
    slices: list[str] = []
    for name, start, stop in parts:
        t, y = texts_labels(name, start, stop)
        texts += t
        labels += y
        slices += [name.removeprefix("vader_")] * len(t)
    return Holdout(texts, labels, slices)


# movies and products rows the session models never trained on; 30 tweets: a slice too small to judge
MIXED = _holdout(("vader_movies", 0, 1500), ("vader_products", 0, 400), ("vader_tweets", 0, 30))


def _check(candidate: ModelKind, champion: ModelKind | None, holdout: Holdout, **config: Any) -> Any:
    return EvaluationGate(EvaluationConfig.model_validate(config)).check(
        GateInput(candidate=candidate, champion=champion, holdout=holdout))


@pytest.mark.parametrize("test", ["bootstrap", "mcnemar"])
def test_a_genuinely_better_model_passes(good_model: ModelKind, weak_model: ModelKind, test: str) -> None:
    verdict = _check(good_model, weak_model, MIXED, test=test)
    assert verdict.passed, verdict.reason
    d = verdict.details
    assert d["test"]["name"] == test and d["p_value"] <= 0.05
    assert d["delta"] == pytest.approx(d["candidate"]["score"] - d["champion"]["score"])
    assert d["delta"] >= 0.005 and d["candidate"]["metrics"]["accuracy"] > d["champion"]["metrics"]["accuracy"]
    table = {row["slice"]: row for row in d["slices"]}
    assert set(table) == {"movies", "products", "tweets"}
    assert table["movies"]["checked"] and table["products"]["checked"] and not table["tweets"]["checked"]
    assert table["tweets"]["rows"] == 30 and not table["tweets"]["regressed"]
    assert "no regression on 2 slice(s)" in verdict.reason


def test_a_model_trained_on_flipped_labels_is_refused(flipped_model: ModelKind, good_model: ModelKind) -> None:
    verdict = _check(flipped_model, good_model, MIXED)
    assert not verdict.passed
    d = verdict.details
    assert d["delta"] < -0.1 and d["p_value"] > 0.5
    assert d["candidate"]["metrics"]["accuracy"] < d["champion"]["metrics"]["accuracy"] - 0.2
    assert f"improvement {d['delta']:+.4f} is below the required +0.0050" in verdict.reason
    assert f"weighted score {d['candidate']['score']:.4f} vs champion {d['champion']['score']:.4f}" in verdict.reason


def test_better_overall_but_regressing_on_one_slice_is_refused(good_model: ModelKind,
                                                               tweets_model: ModelKind) -> None:
    holdout = _holdout(("vader_movies", 0, 1500), ("vader_tweets", 0, 400))
    verdict = _check(good_model, tweets_model, holdout)
    d = verdict.details
    assert d["delta"] > 0.005 and d["p_value"] <= 0.05, "better overall, significantly"
    assert not verdict.passed
    tweets = next(row for row in d["slices"] if row["slice"] == "tweets")
    assert tweets["regressed"] and tweets["delta"] < -0.02
    assert (f"slice 'tweets' (400 rows) regressed: candidate accuracy {tweets['candidate_accuracy']:.4f} "
            f"vs champion {tweets['champion_accuracy']:.4f}") in verdict.reason
    tolerant = _check(good_model, tweets_model, holdout, slice_tolerance=1.0)
    assert tolerant.passed, tolerant.reason
    small_slices = _check(good_model, tweets_model, holdout, min_slice_size=401)
    assert small_slices.passed, "a slice below min_slice_size is reported but not judged"


def test_metrics_agree_with_scikit_learn_and_a_hand_computed_ece(good_model: ModelKind) -> None:
    verdict = _check(good_model, None, MIXED)
    m = verdict.details["candidate"]["metrics"]
    proba = good_model.predict_proba(list(MIXED.inputs))
    predicted = [good_model.labels[i] for i in proba.argmax(axis=1)]
    classes = sorted(set(MIXED.labels))
    assert m["accuracy"] == pytest.approx(accuracy_score(MIXED.labels, predicted))
    assert m["macro_f1"] == pytest.approx(f1_score(MIXED.labels, predicted, labels=classes, average="macro"))
    recalls = recall_score(MIXED.labels, predicted, labels=classes, average=None)
    assert m["recall"] == pytest.approx(dict(zip(classes, recalls, strict=True)))
    assert m["min_recall"] == pytest.approx(min(recalls))
    confidence = proba.max(axis=1)
    correct = np.array(predicted) == np.array(MIXED.labels)
    ece = 0.0
    for b in range(10):
        inside = (confidence >= b / 10) & ((confidence < (b + 1) / 10) if b < 9 else (confidence <= 1.0))
        if inside.any():
            ece += inside.sum() / len(confidence) * abs(correct[inside].mean() - confidence[inside].mean())
    assert m["ece"] == pytest.approx(ece) and m["calibration"] == pytest.approx(1 - ece)
    score = verdict.details["candidate"]["score"]
    assert score == pytest.approx(0.4 * m["accuracy"] + 0.4 * m["macro_f1"] + 0.2 * (1 - ece))


def _paired(b: int, c: int, both: int = 10, neither: int = 0) -> tuple[Scripted, Scripted, Holdout]:
    """Scripted candidate/champion: ``b`` rows only the candidate gets right, ``c`` only the champion."""
    kinds = ["b"] * b + ["c"] * c + ["both"] * both + ["neither"] * neither
    texts = [f"row {i} {k}" for i, k in enumerate(kinds)]
    right, wrong = confident("positive"), confident("negative")
    cand = Scripted(script={t: right if k in ("b", "both") else wrong for t, k in zip(texts, kinds, strict=True)})
    champ = Scripted(script={t: right if k in ("c", "both") else wrong for t, k in zip(texts, kinds, strict=True)})
    return cand, champ, Holdout(texts, ["positive"] * len(texts))


def test_mcnemar_exact_p_value_by_hand() -> None:
    cand, champ, holdout = _paired(b=8, c=2)
    verdict = _check(cand, champ, holdout, test="mcnemar", metric_weights={"accuracy": 1.0})
    d = verdict.details
    assert d["test"] == {"name": "mcnemar", "b": 8, "c": 2, "method": "exact binomial"}
    assert d["p_value"] == pytest.approx((45 + 10 + 1) / 1024)  # P(X >= 8), X ~ Bin(10, 1/2)
    assert not verdict.passed and "not significant: mcnemar one-sided p=0.0547 > alpha 0.05" in verdict.reason
    assert _check(cand, champ, holdout, test="mcnemar", metric_weights={"accuracy": 1.0}, alpha=0.06).passed


def test_mcnemar_chi_square_with_continuity_by_hand() -> None:
    cand, champ, holdout = _paired(b=30, c=10)
    verdict = _check(cand, champ, holdout, test="mcnemar", metric_weights={"accuracy": 1.0})
    d = verdict.details
    assert d["test"]["method"] == "chi-square with continuity correction"
    chi2 = (abs(30 - 10) - 1) ** 2 / (30 + 10)
    assert d["p_value"] == pytest.approx(stats.chi2.sf(chi2, df=1) / 2)
    assert d["p_value"] == pytest.approx(0.5 * math.erfc(19 / math.sqrt(40) / math.sqrt(2)))
    assert verdict.passed, verdict.reason
    worse = _check(champ, cand, holdout, test="mcnemar", metric_weights={"accuracy": 1.0}, min_improvement=-1)
    assert worse.details["p_value"] > 0.99 and not worse.passed


def test_paired_bootstrap_p_value_by_hand() -> None:
    # the candidate is right on one extra row of 20: a resample shows no gain iff it misses that row,
    # with probability (19/20)^20
    cand, champ, holdout = _paired(b=1, c=0, both=19)
    config: dict[str, Any] = {"metric_weights": {"accuracy": 1.0}, "n_resamples": 4000, "seed": 7}
    verdict = _check(cand, champ, holdout, **config)
    assert verdict.details["p_value"] == pytest.approx((19 / 20) ** 20, abs=0.025)
    assert verdict.details["test"]["name"] == "bootstrap"
    assert "not significant: bootstrap one-sided p=" in verdict.reason
    assert _check(cand, champ, holdout, **config).details == verdict.details, "seeded"
    assert _check(cand, champ, holdout, **{**config, "seed": 8}).details["p_value"] != verdict.details["p_value"]


def test_without_a_champion_an_optional_floor_decides(weak_model: ModelKind) -> None:
    verdict = _check(weak_model, None, MIXED)
    score = verdict.details["candidate"]["score"]
    assert verdict.passed and verdict.details["champion"] is None and "no floor set" in verdict.reason
    assert _check(weak_model, None, MIXED, absolute_floor=score - 0.01).passed
    refused = _check(weak_model, None, MIXED, absolute_floor=score + 0.01)
    assert not refused.passed and f"weighted score {score:.4f} < floor" in refused.reason


def test_the_weights_choose_what_the_score_means(good_model: ModelKind, weak_model: ModelKind) -> None:
    d = _check(good_model, weak_model, MIXED, metric_weights={"min_recall": 1.0}).details
    assert d["candidate"]["score"] == pytest.approx(d["candidate"]["metrics"]["min_recall"])
    with pytest.raises(pydantic.ValidationError):
        EvaluationConfig(metric_weights={"accuracy": -1.0, "macro_f1": 2.0})
    with pytest.raises(pydantic.ValidationError):
        EvaluationConfig(metric_weights={"accuracy": 0.0})
    with pytest.raises(pydantic.ValidationError):
        EvaluationConfig.model_validate({"metric_weights": {"f2": 1.0}})


def test_row_weights_scale_the_metrics_and_the_bootstrap() -> None:
    # 40 rows only the champion gets right (the old domain), 20 only the candidate (the new one), 50 both
    cand, champ, holdout = _paired(b=20, c=40, both=50)
    config: dict[str, Any] = {"metric_weights": {"accuracy": 1.0}, "n_resamples": 2000}
    assert not _check(cand, champ, holdout, **config).passed  # unweighted: 0.64 vs 0.82
    new_domain = [8.0 if "row" in t and t.endswith(" b") else 1.0 for t in holdout.inputs]
    weighted = Holdout(holdout.inputs, holdout.labels, None, new_domain)
    verdict = _check(cand, champ, weighted, **config)
    total = sum(new_domain)
    assert verdict.details["candidate"]["metrics"]["accuracy"] == pytest.approx((160 + 50) / total)
    assert verdict.details["champion"]["metrics"]["accuracy"] == pytest.approx((40 + 50) / total)
    assert verdict.details["effective_rows"] == pytest.approx(total ** 2 / (20 * 64 + 90))
    assert verdict.passed, verdict.reason
    doubled = Holdout(holdout.inputs, holdout.labels, None, [2 * w for w in new_domain])
    assert _check(cand, champ, doubled, **config).details["p_value"] == verdict.details["p_value"], "scale-free"
    for bad in ([0.0] * len(holdout), [1.0] * 3, [float("nan")] * len(holdout)):
        refused = _check(cand, champ, Holdout(holdout.inputs, holdout.labels, None, bad), **config)
        assert not refused.passed and "positive finite" in refused.reason


def test_cross_fitted_rows_are_judged_by_the_recipes_out_of_fold_predictions() -> None:
    # 40 rows: the candidate itself is right on all of them (it trained on the last 30: in-sample, worthless
    # as evidence); its recipe's out-of-fold predictions are right on only 10 of those 30
    from trainer.gates import CrossFitted

    texts = [f"row {i}" for i in range(40)]
    right, wrong = confident("positive"), confident("negative")
    cand = Scripted(script=dict.fromkeys(texts, right))
    champ = Scripted(script={t: right if i % 2 else wrong for i, t in enumerate(texts)})  # right on 20
    out_of_fold = ["positive" if i < 20 else "negative" for i in range(10, 40)]
    cross = CrossFitted(rows=range(10, 40), labels=out_of_fold, confidence=[0.8] * 30, folds=5)
    holdout = Holdout(texts, ["positive"] * 40, current=[i >= 5 for i in range(40)], cross_fitted=cross)
    verdict = _check(cand, champ, holdout, test="mcnemar", metric_weights={"accuracy": 1.0})
    d = verdict.details
    assert d["candidate"]["metrics"]["accuracy"] == pytest.approx(20 / 40)  # 10 reserved + 10 of 30 out of fold
    assert d["cross_fitted"] == {"rows": 30, "folds": 5} and "40 rows, 30 cross-fitted" in verdict.reason
    assert d["candidate"]["current"] == {"rows": 35, "accuracy": pytest.approx(15 / 35)}
    assert d["champion"]["current"]["rows"] == 35 and not verdict.passed
    in_sample = _check(cand, champ, Holdout(texts, ["positive"] * 40), test="mcnemar",
                       metric_weights={"accuracy": 1.0})
    assert in_sample.passed  # what judging the candidate on its own training rows would have concluded


@pytest.mark.parametrize("cross", [
    {"rows": [0, 0], "labels": ["positive"] * 2, "confidence": [0.5] * 2},
    {"rows": [0, 99], "labels": ["positive"] * 2, "confidence": [0.5] * 2},
    {"rows": [0, 1], "labels": ["positive"], "confidence": [0.5] * 2},
    {"rows": [0, 1], "labels": ["positive"] * 2, "confidence": [0.5, 1.5]},
])
def test_malformed_cross_fitted_predictions_fail_with_a_reason(cross: dict[str, Any]) -> None:
    from trainer.gates import CrossFitted

    model = Scripted()
    holdout = Holdout(["a", "b", "c"], ["positive"] * 3, cross_fitted=CrossFitted(folds=2, **cross))
    verdict = _check(model, model, holdout)
    assert not verdict.passed and "cross-fitted" in verdict.reason


def test_the_champions_training_rows_are_judged_by_its_recipes_out_of_fold_predictions() -> None:
    # 40 current rows, every one trained on by both sides; each model is right on all of them in sample.
    # Out of fold the candidate's recipe is right on 36, the champion's on 20: only the out-of-fold
    # predictions tell the two ways of training apart
    from trainer.gates import CrossFitted

    texts = [f"row {i}" for i in range(40)]
    perfect = Scripted(script=dict.fromkeys(texts, confident("positive")))
    cand = CrossFitted(rows=range(40), labels=["positive"] * 36 + ["negative"] * 4, confidence=[0.8] * 40,
                       folds=5)
    champ = CrossFitted(rows=range(40), labels=["positive", "negative"] * 20, confidence=[0.7] * 40, folds=5)
    holdout = Holdout(texts, ["positive"] * 40, current=[True] * 40, cross_fitted=cand, champion_cross_fitted=champ)
    verdict = _check(perfect, perfect, holdout, test="mcnemar", metric_weights={"accuracy": 1.0})
    d = verdict.details
    assert d["candidate"]["metrics"]["accuracy"] == pytest.approx(36 / 40)
    assert d["champion"]["metrics"]["accuracy"] == pytest.approx(20 / 40)
    assert d["cross_fitted"] == {"rows": 40, "folds": 5, "champion_rows": 40}
    assert "40 cross-fitted (40 for the champion too)" in verdict.reason and verdict.passed, verdict.reason
    in_sample = _check(perfect, perfect, Holdout(texts, ["positive"] * 40, cross_fitted=cand), test="mcnemar",
                       metric_weights={"accuracy": 1.0})
    assert not in_sample.passed  # the champion judged on its own training rows looks perfect
    bad = CrossFitted(rows=[0, 99], labels=["positive"] * 2, confidence=[0.5] * 2, folds=5)
    refused = _check(perfect, perfect, Holdout(texts, ["positive"] * 40, champion_cross_fitted=bad))
    assert not refused.passed and "champion's cross-fitted predictions name rows outside" in refused.reason


def _refresh(candidate: ModelKind, champion: ModelKind, holdout: Holdout, **config: Any) -> Any:
    return EvaluationGate(EvaluationConfig.model_validate(config)).check(
        GateInput(candidate=candidate, champion=champion, holdout=holdout, refresh=True))


@pytest.mark.parametrize("test", ["bootstrap", "mcnemar"])
def test_a_refresh_must_be_shown_no_worse_by_the_margin_not_better(test: str) -> None:
    # the champion's recipe on more labels, judged equal on 400 rows: 10 rows each way
    cand, champ, holdout = _paired(b=10, c=10, both=380)
    config: dict[str, Any] = {"test": test, "metric_weights": {"accuracy": 1.0}, "n_resamples": 4000}
    as_new = _check(cand, champ, holdout, **config)
    assert not as_new.passed and "improvement +0.0000 is below the required +0.0050" in as_new.reason
    verdict = _refresh(cand, champ, holdout, **config)
    assert verdict.passed, verdict.reason
    d = verdict.details
    assert d["refresh"] is True and d["test"]["margin"] == 0.02 and d["criteria"]["refresh_margin"] == 0.02
    assert verdict.reason.startswith("refresh of the champion's recipe: weighted score 0.9750 vs champion 0.9750")
    assert "(+0.0000, non-inferior within 0.02)" in verdict.reason
    if test == "mcnemar":  # by hand: d = 0 on N = 400 rows, 20 discordant; se = sqrt(20 / 400 / 400)
        assert d["p_value"] == pytest.approx(0.5 * math.erfc(0.02 / math.sqrt(20 / 400 / 400) / math.sqrt(2)))
    else:  # a resample draws ~Poisson(10) rows of each side: P(b* - c* <= -8), the margin times 400 rows
        assert d["p_value"] == pytest.approx(stats.skellam.cdf(-8, 10, 10), abs=0.01)
    assert d["p_value"] < 0.05
    # a refresh worse by more than the margin is refused: 4 rows its way, 18 the champion's (-0.035)
    cand, champ, holdout = _paired(b=4, c=18, both=378)
    worse = _refresh(cand, champ, holdout, **config)
    assert not worse.passed and "is not shown non-inferior within 0.02" in worse.reason
    assert worse.details["p_value"] > 0.5
    # off: a refresh is judged like any other candidate
    off = _refresh(*_paired(b=10, c=10, both=380), **{**config, "refresh_margin": None})
    assert not off.passed and "is below the required +0.0050" in off.reason and off.details["refresh"] is False


def test_a_refresh_still_may_not_regress_a_slice() -> None:
    # level overall, but the 10 rows it loses all fall in one 100-row slice (-0.10)
    cand, champ, holdout = _paired(b=10, c=10, both=380)
    slices = ["old" if t.endswith(" c") or int(t.split()[1]) >= 310 else "new" for t in holdout.inputs]
    verdict = _refresh(cand, champ, Holdout(holdout.inputs, holdout.labels, slices), metric_weights={"accuracy": 1.0})
    assert not verdict.passed and "slice 'old' (100 rows) regressed" in verdict.reason, verdict.reason


def test_the_refresh_margin_is_a_share_of_the_score() -> None:
    for bad in (0.0, -0.01, 1.0):
        with pytest.raises(pydantic.ValidationError):
            EvaluationConfig(refresh_margin=bad)
    assert EvaluationConfig(refresh_margin=None).refresh_margin is None


class _Counting(ModelKind):
    """A fitted model that counts the texts it is asked (and answers as ``model`` does)."""

    kind = "counting"
    tasks = frozenset({"text-classification"})

    def __init__(self, model: ModelKind) -> None:
        super().__init__()
        self.model, self.labels, self.asked = model, model.labels, 0

    def fit(self, inputs: Any, labels: Any, weights: Any = None) -> Any:
        raise NotImplementedError

    def predict_proba(self, inputs: Any) -> Any:
        self.asked += len(inputs)
        return self.model.predict_proba(inputs)

    def _save_files(self, directory: Any) -> list[str]:
        raise NotImplementedError

    def _load_files(self, directory: Any) -> None:
        raise NotImplementedError


def test_a_run_asks_the_champion_once_and_never_for_the_rows_cross_fitting_replaces(
        good_model: ModelKind, weak_model: ModelKind) -> None:
    """Inside ``remembering`` (a run judging its candidates) the champion answers the same rows from memory,
    and no model predicts the rows whose prediction its cross-fitted one replaces: the same verdicts."""
    cross = CrossFitted(rows=list(range(0, 300)), labels=["positive"] * 300, confidence=[0.8] * 300, folds=5)
    holdout = Holdout(MIXED.inputs, MIXED.labels, MIXED.slices, cross_fitted=cross)
    gate = EvaluationGate(EvaluationConfig())
    plain = [gate.check(GateInput(candidate=c, champion=weak_model, holdout=holdout))
             for c in (good_model, weak_model)]
    champion = _Counting(weak_model)
    with gate.remembering():
        remembered = [gate.check(GateInput(candidate=c, champion=champion, holdout=holdout))
                      for c in (good_model, weak_model)]
    assert champion.asked == len(holdout)  # once, all of its rows (no cross-fitted rows of its own)
    assert [(v.passed, v.reason, v.details) for v in remembered] == [(v.passed, v.reason, v.details) for v in plain]
    candidate = _Counting(good_model)
    gate.check(GateInput(candidate=candidate, champion=weak_model, holdout=holdout))
    assert candidate.asked == len(holdout) - 300
    gate.check(GateInput(candidate=candidate, champion=weak_model, holdout=holdout))
    assert candidate.asked == 2 * (len(holdout) - 300)  # outside remembering: asked again
