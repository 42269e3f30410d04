"""Which candidate recipe learns a drifted domain, offline: the efficacy bench's labels replayed through
the trainer's tfidf-logreg recipes (word and the demo's char_wb n-grams) without the platform, each fit
timed.

Per scenario (``movies->tweets``, ``movies->products``): the corpus is vader_movies split as the bootstrap
splits it (80/20 stratified, seed 0); the target is split as the efficacy bench splits it (30% held out,
seed 0); the first ``--labels`` target rows are judged with 5% label noise and every tenth is reserved for
evaluation, the rest are the samples a full run trains on (no curation). Each recipe (a kind's
parameters x a corpus weight; weight 0 = target-only) is scored on the held-out target rows and on the
corpus holdout, the movie slice the evaluation gate protects (``movies_delta``: against the static
champion of the same parameters, trained on the corpus alone; the gate refuses a loss over 0.02). The
oracle of each parameter set is the best of target-only and corpus + every target row outside the held-out
ones at 0.2 and 0.05.

    python bench/recipes_offline.py [--labels 400] [--scenario movies->tweets ...]

Last line: ``{"scenarios": {name: {recipe: {"target", "movies_delta", "fit_seconds"}, "oracle": {...}}}}``.

``--gate``: instead, the demo's full run replayed against the static champion after ``--at`` labels
(default 100, 150, 200, 400): each recipe of the demo's policy (its kind params; corpus 0.2 and the
target-only recipe) fitted on corpus + samples, cross-fitted in 5 folds, and judged by the real evaluation
gate with the demo's settings on the corpus holdout + reserved + cross-fitted rows, as the trainer judges
it. No curation, no earlier promotion (each point is the first full run against the static champion).
``--recipe NAME=WEIGHT[:JSON]`` (repeatable): those recipes instead (the demo's params updated with JSON, at
corpus WEIGHT), e.g. ``--recipe 'c16=0.2:{"c": 16}'``; ``--draw N``: the stream's rows in another order
(seed N; the held-out rows stay), another sample of the same labels. A recipe's JSON may hold
``"importance": CAP``: its corpus rows weighted by a domain classifier's odds (corpus vs the samples' texts,
no labels; mean 1, capped at CAP) times WEIGHT, e.g. ``--recipe 'iw=0.2:{"importance": 5}'``; or
``"average": PARAMS``: the candidate is the mean of the probabilities of the recipe's model and a second one
fitted on the same rows with the recipe's params updated with PARAMS (its folds too): the kind's ``blend``
(:func:`blended`), replacing the recipe's own.
The demo's recipe was the char_wb 2-5 + word 1-2 blend from 2026-12-06 (the kind's ``blend`` param, which the
average recipe, ``--recipe 'avg=0.2:{"average": {"analyzer": "word", "ngram_min": 1, "ngram_max": 2}}'`` on the
char_wb recipe, measured first), since later that day char_wb 2-5 + static WordPiece embeddings (``{"blend":
{"analyzer": "wordpiece", "c": 10.0}}``; ``--recipe 'word=0.2:{"blend": {"analyzer": "word", "ngram_min": 1,
"ngram_max": 2}}'`` is the earlier one); ``--recipe 'one=0.2:{"blend": null}'`` is the char_wb model alone.
``--folds N``: N cross-fit folds instead of 5; ``--fresh N``: the N labels after the first k (those that
arrive while the run fits) join the evaluation as held-out current rows, as the trainer's ``judge_arrivals``
adds them. ``--kind minilm-head`` (``--kind-param NAME=JSON``, e.g. ``precision='"fp32"'``): that kind's recipes
and static champion, at the demo policy's corpus weights for it (every text encoded once per precision, in
memory). ``--draws N``: draws 0..N-1, with a ``summary`` per scenario and label count (in how many draws a
recipe passed; the means of the recipes' largest cross-fitted gain and highest held-out accuracy).
Last line: ``{"gate": {scenario: {k: {recipe: {"passed", "reason", "target"}}}}}`` (with ``--draws``:
``{"kind", "params", "gate": {scenario: [one per draw]}, "summary": {scenario: {k: {...}}}}``).

``--served N``: instead, ideas that use the target's unlabelled texts (the first N the pods served, of which
the first ``--labels`` were judged; the efficacy bench judges every prediction, so there N = labels):
vocabulary and idf over them, importance weights of corpus rows, self-training (:func:`served_points`).
Last line: ``{"served": {scenario: {recipe: {"target", "movies_delta"}}}}``.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import random
import time
from contextlib import nullcontext
from typing import Any

from bench._host import HostProbe, emit
from bench.efficacy import parse_kind_params
from flywheel.demo import KIND_PARAMS, SCENARIOS, Row, read_rows, split_target
from kinds.base import Resources
from kinds.catalog import KINDS, create
from kinds.embeddings import Embedder, MemoryEmbeddingCache
from kinds.encoder import shared_encoder
from trainer.data import CorpusRow, split_holdout

log = logging.getLogger("bench.recipes_offline")
LABELS = ("negative", "neutral", "positive")
WEIGHTS = (0.2, 0.05, 0.0)


def accuracy(model: Any, rows: list[Row]) -> float:
    right = sum(p == r.label for p, r in zip(model.predict([r.text for r in rows]), rows, strict=True))
    return float(right / len(rows))


@functools.cache
def _resources() -> Resources:
    """One embedder for the whole run, as a trainer binds its kinds to one: a ``minilm-head`` encodes each text
    once per precision (else every fit would encode its texts); kinds that embed nothing ignore it."""
    return Resources(embedder=Embedder(shared_encoder(), MemoryEmbeddingCache(500_000)))


def model_of(kind: str, params: dict[str, Any]) -> Any:
    """An unfitted model of ``kind`` with ``params``, bound to the run's :func:`_resources`."""
    return create(kind, resources=_resources(), **params)


def fit(kind: str, params: dict[str, Any], corpus: list[Row], weight: float, samples: list[Row]) -> tuple[Any, float]:
    rows = (corpus if weight > 0 else []) + samples
    weights = [weight] * (len(rows) - len(samples)) + [1.0] * len(samples)
    started = time.perf_counter()
    model = model_of(kind, params).fit([r.text for r in rows], [r.label for r in rows], weights)
    return model, time.perf_counter() - started


def split(name: str, draw: int = 0) -> tuple[list[Row], list[Row], list[Row], list[Row]]:
    """(corpus, movies, stream, held) of scenario ``name``, as the demo splits them: the source corpus's train
    rows and its 20% holdout (the movie slice), the target's stream and its 30% held-out rows; ``draw`` > 0
    shuffles the stream into another order."""
    spec = SCENARIOS[name]
    source = [CorpusRow(r.text, r.label, "movies") for r in read_rows(spec.source)]
    train, holdout = split_holdout(source, 0.2, 0)
    stream, held = split_target(spec.target, 0.3, 0)
    if draw:
        random.Random(draw).shuffle(stream)
    return [Row(r.text, r.label) for r in train], [Row(r.text, r.label) for r in holdout], stream, held


def judged(stream: list[Row], labels: int) -> list[Row]:
    """The first ``labels`` stream rows as the users judge them: 5% of the labels replaced at random."""
    rng = random.Random(1)
    return [Row(r.text, rng.choice(LABELS) if rng.random() < 0.05 else r.label) for r in stream[:labels]]


def scenario(name: str, kind: str, labels: int, params_sets: dict[str, dict[str, Any]]) -> dict[str, Any]:
    corpus, movies, stream, held = split(name)
    samples = [r for i, r in enumerate(judged(stream, labels)) if i % 10]
    out: dict[str, Any] = {"samples": len(samples), "oracle": {}}
    for pname, params in params_sets.items():
        static, _ = fit(kind, params, corpus, 1.0, [])
        base = accuracy(static, movies)
        out[f"{pname}_static"] = {"target": round(accuracy(static, held), 4), "movies": round(base, 4)}
        for weight in WEIGHTS:
            model, seconds = fit(kind, params, corpus, weight, samples)
            found = {"target": round(accuracy(model, held), 4),
                     "movies_delta": round(accuracy(model, movies) - base, 4), "fit_seconds": round(seconds, 2)}
            out[f"{pname}_w{weight:g}"] = found
            log.info("%s %s w=%g: %s", name, pname, weight, found)
        out["oracle"][pname] = round(max(accuracy(fit(kind, params, corpus, w, stream)[0], held)
                                         for w in (0.2, 0.05, 0.0)), 4)
        log.info("%s %s oracle %s", name, pname, out["oracle"][pname])
    return out


def importance(corpus: list[str], target: list[str], cap: float) -> list[float]:
    """Importance weights of corpus rows for a target domain known by its texts alone (no labels): the
    odds p(target | text) / p(corpus | text) of a domain classifier (TF-IDF word 1-2 grams + logistic
    regression, classes balanced) trained corpus vs target texts, normalised to mean 1 and capped at ``cap``."""
    import numpy as np
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    features = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True).fit_transform(corpus + target)
    domain = np.r_[np.zeros(len(corpus)), np.ones(len(target))]
    clf = LogisticRegression(C=1.0, max_iter=300, class_weight="balanced").fit(features, domain)
    p = clf.predict_proba(features[:len(corpus)])[:, 1]
    odds = p / (1 - p)
    return [float(q) for q in np.clip(odds / odds.mean(), 0, cap)]


def served_points(name: str, labels: int, served: int, draw: int = 0) -> dict[str, Any]:
    """Ideas that use the target domain's unlabelled texts (what the pods served), at ``labels`` labels and
    ``served`` predictions (the first ``labels`` of them judged): the demo's tfidf-logreg at corpus 0.2
    alone (``base``); with the served texts in its vocabulary and idf (``idf``: rows at weight 0); with the
    corpus rows weighted by a domain classifier's odds, corpus vs labelled + served texts (``importance``,
    cap 5, mean weight 0.2); with the served texts the base model labels at >= 0.7 confidence as samples
    of weight 1 (``self``). Scored as :func:`scenario` scores (no gate)."""
    kind, params = "tfidf-logreg", KIND_PARAMS["tfidf-logreg"]
    corpus, movies, stream, held = split(name, draw)
    samples = [r for i, r in enumerate(judged(stream, labels)) if i % 10]
    unlabelled = [str(r.text) for r in stream[labels:served]]
    static, _ = fit(kind, params, corpus, 1.0, [])
    out: dict[str, Any] = {"samples": len(samples), "unlabelled": len(unlabelled), "draw": draw,
                           "static": round(accuracy(static, held), 4)}
    movies_static = accuracy(static, movies)

    def score(recipe: str, model: Any) -> None:
        out[recipe] = {"target": round(accuracy(model, held), 4),
                       "movies_delta": round(accuracy(model, movies) - movies_static, 4)}
        log.info("%s draw %d %s: %s", name, draw, recipe, out[recipe])

    def weighted(rows: list[Row], weights: list[float]) -> Any:
        return KINDS[kind](**params).fit([r.text for r in rows], [r.label for r in rows], weights)

    base, _ = fit(kind, params, corpus, 0.2, samples)
    score("base", base)
    if unlabelled:
        score("idf", weighted(corpus + samples + [Row(t, LABELS[0]) for t in unlabelled],
                              [0.2] * len(corpus) + [1.0] * len(samples) + [0.0] * len(unlabelled)))
    ratio = importance([str(r.text) for r in corpus], [str(r.text) for r in samples] + unlabelled, 5.0)
    score("importance", weighted(corpus + samples, [0.2 * q for q in ratio] + [1.0] * len(samples)))
    if unlabelled:
        proba = base.predict_proba(unlabelled)
        pseudo = [Row(t, base.labels[int(p.argmax())])
                  for t, p in zip(unlabelled, proba, strict=True) if p.max() >= 0.7]
        out["pseudo_labelled"] = len(pseudo)
        score("self", weighted(corpus + samples + pseudo, [0.2] * len(corpus) + [1.0] * (len(samples) + len(pseudo))))
    return out


def gate_points(name: str, at: list[int], recipes: dict[str, tuple[dict[str, Any], float]] | None = None,
                draw: int = 0, folds: int = 5, fresh: int = 0, kind: str = "tfidf-logreg",
                params: dict[str, Any] | None = None) -> dict[str, Any]:
    """The demo's full run at each of ``at`` labels, judged by the real gate against the static champion;
    ``recipes`` (name -> (kind params, corpus weight)) instead of the demo policy's. ``draw`` > 0: the
    stream's rows in another order (shuffled with that seed; the held-out rows stay), another sample of
    the same labels. ``folds``: cross-fit folds. ``fresh``: the next ``fresh`` labels after the ``k`` a run
    trains on (those that arrive while it runs) join the evaluation as held-out current rows. ``kind`` with
    ``params`` (default: the demo's params of the kind; the static champion is of the same params), at the
    demo policy's corpus weights of that kind."""
    from flywheel.demo import CORPUS_WEIGHT, corpus_weight_choices
    from kinds.base import as_texts
    from kinds.ngrams import counted_once
    from trainer.config import PolicyConfig
    from trainer.data import Frame
    from trainer.frames import CrossFit, evaluation_set
    from trainer.gates import EvaluationConfig, EvaluationGate, GateInput

    params = KIND_PARAMS[kind] if params is None else params
    policy = PolicyConfig(recent_min=20, corpus_weight_choices=corpus_weight_choices(kind),
                          **({"corpus_weight": CORPUS_WEIGHT[kind]} if kind in CORPUS_WEIGHT else {}))
    gate = EvaluationGate(EvaluationConfig(metric_weights={"accuracy": 1.0}))
    domain = SCENARIOS[name].target.removeprefix("vader_")
    corpus, movies, stream, held = split(name, draw)
    static, _ = fit(kind, params, corpus, 1.0, [])
    labelled = judged(stream, max(at) + fresh)
    out: dict[Any, Any] = {"static_target": round(accuracy(static, held), 4), "draw": draw}
    for k in at:
        samples = [(i + 1, r) for i, r in enumerate(labelled[:k]) if i % 10]
        reserved = [(i + 1, r) for i, r in enumerate(labelled[:k]) if not i % 10]
        base = Frame().extend((-(j + 1), r.text, r.label, 1.0, "movies") for j, r in enumerate(movies))
        base.extend((i, r.text, r.label, 1.0, domain) for i, r in reserved)
        base.extend((k + i + 1, r.text, r.label, 1.0, domain) for i, r in enumerate(labelled[k:k + fresh]))
        out[k] = {}
        tried = recipes or {f"corpus{w:g}": (params, w) for w in (policy.corpus_weight, *policy.corpus_weight_choices)}
        for recipe, (recipe_params, weight) in tried.items():
            recipe_params = dict(recipe_params)
            cap = recipe_params.pop("importance", None)
            recipe_params = blended(recipe_params)
            ratio = (importance([str(r.text) for r in corpus], [str(r.text) for _, r in samples], float(cap))
                     if cap and weight > 0 else [1.0] * len(corpus))
            frame = Frame().extend((-(j + 1), r.text, r.label, weight * q, "movies")
                                   for j, (r, q) in enumerate(zip(corpus, ratio, strict=True)) if weight > 0)
            frame.extend((i, r.text, r.label, 1.0, domain) for i, r in samples)
            rows = list(range(len(frame) - len(samples), len(frame)))
            random.Random(f"{policy.seed}:cross-fit:{len(frame)}").shuffle(rows)
            predicted: dict[int, tuple[str, float]] = {}
            started = time.perf_counter()
            # n-grams counted once per point, as a run counts them
            with counted_once(as_texts(frame.inputs)) if kind == "tfidf-logreg" else nullcontext():
                for fold in (rows[f::folds] for f in range(folds)):
                    rest = frame.take([i for i in range(len(frame)) if i not in set(fold)])
                    model = model_of(kind, recipe_params).fit(rest.inputs, rest.labels, rest.weights)
                    for i, p in zip(fold, model.predict_proba([frame.inputs[i] for i in fold]), strict=True):
                        predicted[i] = (model.labels[int(p.argmax())], float(p.max()))
                model = model_of(kind, recipe_params).fit(frame.inputs, frame.labels, frame.weights)
            order = sorted(predicted)
            cross = CrossFit(frame.take(order), [predicted[i] for i in order], folds)
            verdict = gate.check(GateInput(candidate=model, champion=static,
                                           holdout=evaluation_set(base, policy, cross)))
            found = {"passed": verdict.passed, "reason": verdict.reason, "target": round(accuracy(model, held), 4),
                     "delta": round(float(verdict.details.get("delta", 0.0)), 4),
                     "p": round(float(verdict.details.get("p_value", 1.0)), 4),
                     "seconds": round(time.perf_counter() - started, 1)}
            out[k][recipe] = found
            log.info("%s k=%d %s: %s", name, k, recipe, found)
    return out


def blended(recipe: dict[str, Any]) -> dict[str, Any]:
    """A recipe's params for the kind: an ``"average": PARAMS`` key (the mean of the probabilities of the recipe's
    model and a second one with its params updated with PARAMS, measured before the kind had ``blend``) becomes
    that ``blend``, replacing the recipe's own."""
    params = dict(recipe)
    average = params.pop("average", None)
    return params if average is None else {**params, "blend": average}


def recipe_arg(text: str, params: dict[str, Any]) -> tuple[str, tuple[dict[str, Any], float]]:
    """``NAME=WEIGHT[:JSON]``: ``params`` (the demo's, of the kind) updated with JSON, at corpus weight WEIGHT."""
    name, _, rest = text.partition("=")
    weight, _, extra = rest.partition(":")
    return name, ({**params, **(json.loads(extra) if extra else {})}, float(weight))


def gate_summary(points: list[dict[Any, Any]], at: list[int]) -> dict[int, dict[str, Any]]:
    """Per label count over the draws: in how many a recipe passed the gate (a first full run would promote),
    and the means over the draws of the recipes' largest cross-fitted gain and of their highest held-out accuracy."""
    out: dict[int, dict[str, Any]] = {}
    for k in at:
        found = [point[k] for point in points]
        out[k] = {"passed": sum(any(r["passed"] for r in f.values()) for f in found), "draws": len(found),
                  "best_delta_mean": round(sum(max(r["delta"] for r in f.values()) for f in found) / len(found), 4),
                  "best_target_mean": round(sum(max(r["target"] for r in f.values()) for f in found) / len(found), 4)}
    return out


def main() -> None:
    probe = HostProbe()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--labels", type=int, default=400)
    parser.add_argument("--gate", action="store_true", help="the demo's full run judged by the real gate")
    parser.add_argument("--at", type=int, action="append", help="--gate: label counts (default 100 150 200 400)")
    parser.add_argument("--recipe", action="append", dest="recipes", metavar="NAME=WEIGHT[:JSON]",
                        help="--gate: a recipe instead of the demo policy's (repeatable): the demo's kind params "
                             "updated with JSON at corpus WEIGHT, e.g. 'c16=0.2:{\"c\": 16}'")
    parser.add_argument("--draw", type=int, default=0,
                        help="--gate, --served: the stream in the order of this seed (0: as is)")
    parser.add_argument("--draws", type=int, default=0,
                        help="--gate: draws 0..N-1 instead of --draw, with a summary per label count")
    parser.add_argument("--kind", choices=["tfidf-logreg", "minilm-head"], default="tfidf-logreg",
                        help="--gate: the kind of the recipes and the static champion")
    parser.add_argument("--kind-param", action="append", default=[], metavar="NAME=JSON",
                        help="--gate: a parameter of the kind over the demo's (repeatable), e.g. "
                             "precision='\"fp32\"'")
    parser.add_argument("--folds", type=int, default=5, help="--gate: cross-fit folds (the policy's default: 5)")
    parser.add_argument("--fresh", type=int, default=0,
                        help="--gate: the next N labels (arrived during the run) join the evaluation, held out")
    parser.add_argument("--served", type=int, default=0,
                        help="instead, the ideas that use the served (unlabelled) target texts, at --labels labels "
                             "of this many predictions (--draw: the stream's order)")
    parser.add_argument("--scenario", action="append", dest="scenarios",
                        choices=["movies->tweets", "movies->products"])
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    from threadpoolctl import threadpool_limits

    threadpool_limits(1)  # one BLAS thread per fit, as the trainer fits
    names = args.scenarios or ["movies->tweets", "movies->products"]
    if args.served:
        emit({"served": {name: served_points(name, args.labels, args.served, args.draw) for name in names}}, probe)
        return
    if args.gate:
        params = {**KIND_PARAMS[args.kind], **parse_kind_params(args.kind_param)}
        recipes = dict(recipe_arg(r, params) for r in args.recipes) if args.recipes else None
        at = args.at or [100, 150, 200, 400]
        if not args.draws:
            emit({"gate": {name: gate_points(name, at, recipes, args.draw, args.folds, args.fresh, args.kind, params)
                           for name in names}}, probe)
            return
        points = {name: [gate_points(name, at, recipes, draw, args.folds, args.fresh, args.kind, params)
                         for draw in range(args.draws)] for name in names}
        emit({"kind": args.kind, "params": params, "gate": points,
              "summary": {name: gate_summary(found, at) for name, found in points.items()}}, probe)
        return
    params_sets = {"word": {}, "char_wb": KIND_PARAMS["tfidf-logreg"]}
    out = {"kind": "tfidf-logreg", "labels": args.labels, "scenarios": {
        name: scenario(name, "tfidf-logreg", args.labels, params_sets)
        for name in names}}
    emit(out, probe)


if __name__ == "__main__":
    main()
