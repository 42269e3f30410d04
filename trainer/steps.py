"""One run's steps once it has started: the training frame, the data-quality gate, every candidate fitted,
cross-fitted and judged, the choice, the registration, then the announcement (:mod:`trainer.announcing`).

Order of the irreversible steps, so that a crash leaves nothing half-done: the version is registered
(tagged with the run id), then the aliases move, then the event goes out, then the run row is finished.
A version whose run never finished is deleted by the next lock holder (or, past its alias move, recorded
as done); an alias moved without its event is re-announced by ``reconcile``.
"""

from __future__ import annotations

import contextlib
import functools
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kinds.base import ModelKind
from kinds.catalog import KINDS
from kinds.embeddings import Embedder, MemoryEmbeddingCache
from kinds.minilm import MiniLMHead
from kinds.ngrams import counted_once
from registry import Lineage, ModelRegistry, ModelVersionInfo, RunHandle, deploys
from tasks import FeatureSchema
from trainer.announcing import Announcing, Registered
from trainer.config import PolicyConfig
from trainer.crossfit import CrossFitPlan, CrossFitter, PendingCrossFit
from trainer.data import Frame, SampleStore, Snapshot
from trainer.exceptions import TrainerError
from trainer.frames import TrainingFrames, evaluation_set, id_range, training_table
from trainer.gates import EvaluationGate, Gate, GateInput
from trainer.policy import Decision, Mode
from trainer.recipes import Recipes
from trainer.runs import RunLog, RunResult
from trainer.search import search
from trainer.selection import Candidate, choose_candidate
from trainer.tracking import log_candidates, log_later, log_verdict

__all__ = ["RunSteps", "Started"]


@dataclass(frozen=True)
class Started:
    """A started run: its row, its decision and what it trains against."""

    runs: RunLog
    store: SampleStore
    run_id: uuid.UUID
    decision: Decision
    snapshot: Snapshot
    champion: ModelVersionInfo | None
    trigger: str

    @property
    def mode(self) -> Mode:
        assert self.decision.mode is not None  # a started run has one
        return self.decision.mode


class RunSteps:
    """The steps of a started run for one model: its gates, recipes, frames and announcements."""

    def __init__(self, *, labels: Sequence[str], features: FeatureSchema | None = None, policy: PolicyConfig,
                 registry: ModelRegistry,
                 quality: Gate[Any], evaluation: Gate[Any], behaviour: Gate[Any], frames: TrainingFrames,
                 recipes: Recipes, announcing: Announcing, scratch: Path) -> None:
        self.labels = tuple(labels)
        self.features = features
        self.policy = policy
        self.registry = registry
        self.quality, self.evaluation, self.behaviour = quality, evaluation, behaviour
        self.frames = frames
        self.recipes = recipes
        self.cross_fitter = CrossFitter(policy, frames, recipes)
        self.announcing = announcing
        self.scratch = scratch

    def run(self, s: Started, kinds: Sequence[str] | None, *, frame: Frame | None = None,
            holdout: Frame | None = None) -> RunResult:
        """Train, judge and register ``s``'s candidates; ``frame`` and ``holdout`` default to the store's."""
        mode, champion = s.mode, s.champion
        champion_model = self.recipes.load(champion.version) if champion and mode != "bootstrap" else None
        if frame is None:
            assert champion is not None
            frame = self.frames.training(s.store, mode, s.snapshot, champion)
        # judged on the store's holdout, re-read once the candidates are fitted with the rows labelled meanwhile
        arrivals = holdout is None and mode != "bootstrap" and self.policy.judge_arrivals
        if holdout is None:
            holdout = s.store.holdout(self.policy.holdout_recent)
        data_hash = frame.digest()
        self.scratch.mkdir(parents=True, exist_ok=True)
        workdir = Path(tempfile.mkdtemp(prefix=f"run-{s.run_id}-", dir=self.scratch))
        try:
            run_tags = {"flywheel_run_id": str(s.run_id), "mode": mode, "trigger": s.trigger}
            with self.registry.run(f"{mode}-{s.run_id}", tags=run_tags) as ml, contextlib.ExitStack() as later:
                started = time.perf_counter()
                ml.log_params({"mode": mode, "trigger": s.trigger, "watermark": s.snapshot.watermark,
                               "sample_count": s.snapshot.count,
                               "train_rows": len(frame), "holdout_rows": len(holdout), "data_hash": data_hash,
                               "sample_ids": id_range(frame),
                               "parent_version": champion.version if champion else "", "reason": s.decision.reason})
                quality = self.quality.check(GateInput(training=training_table(frame, self.features),
                                                       label_set=self.labels, features=self.features,
                                                       out_dir=workdir))
                log_verdict(ml, quality)
                later.callback(log_later, ml, self.quality, quality)  # its data docs, rendered meanwhile
                if not quality.passed:
                    s.runs.finish(s.run_id, status="refused", reason=f"data quality: {quality.reason}",
                                  data_hash=data_hash, trained_count=len(frame), mlflow_run_id=ml.run_id)
                    return RunResult("refused", f"data quality: {quality.reason}", s.run_id, mode)
                if champion is not None and champion_model is not None and mode == "full" \
                        and self.policy.start_at_champion:
                    # every from-scratch fit of the champion's kind starts its solver at the champion's solution
                    self.recipes.starts = {champion.kind: champion_model.solution()}
                with _counted_once(frame):
                    folds = self.cross_fitter.plan(s.store, mode, frame, champion, champion_model)
                    kinds_to_train = self.recipes.kinds(mode, champion, kinds)
                    if mode == "full":
                        self.recipes.tuned = self._search(frame, folds, kinds_to_train, ml)
                    recipes = [(kind, weight, self.frames.reweighed(frame, weight)) for kind in kinds_to_train
                               for weight in self.recipes.corpus_weights(mode)]
                    # every recipe's fold fits go to the fit workers first; the full fits and the judging here
                    crosses = [self.cross_fitter.predict(kind, mode, champion, weighed, folds)
                               if folds is not None else None for kind, _, weighed in recipes]
                    fitted = [self._fit(kind, mode, weighed, champion, cross, weight)
                              for (kind, weight, weighed), cross in zip(recipes, crosses, strict=True)]
                    if arrivals:
                        holdout = self._with_arrivals(s, ml)
                    # the champion is asked the same rows by each candidate's evaluation, each candidate again
                    # by the choice between corpus weights: answered from memory (the models do not change)
                    with _remembering(self.evaluation):
                        candidates = [
                            self._judge(candidate, champion_model, holdout, workdir,
                                        self.recipes.is_refresh(candidate.kind, mode, weight, champion,
                                                                champion_model, s.snapshot))
                            for candidate, (_, weight, _) in zip(fitted, recipes, strict=True)]
                        best = self._choose(candidates, holdout, workdir)
                summaries = [c.summary() for c in candidates]
                log_candidates(ml, candidates, time.perf_counter() - started)
                if best is None:
                    reason = "; ".join(f"{c.name}: {next(v for v in c.verdicts if not v.passed).gate} — "
                                       f"{next(v for v in c.verdicts if not v.passed).reason}" for c in candidates)
                    s.runs.finish(s.run_id, status="refused", reason=reason, data_hash=data_hash,
                                  trained_count=len(frame), candidates=summaries, mlflow_run_id=ml.run_id)
                    return RunResult("refused", reason, s.run_id, mode, candidates=tuple(summaries))
                info = self._register(s, best, frame, data_hash, workdir / "model", ml.run_id)
                # before the aliases move: a pod that serves the version finds what it deploys
                deploys.record_trained(s.store.conn, s.store.model, info.version, frame.ids)
                return self.announcing.announce(s.runs, Registered(
                    s.run_id, mode, info, best, summaries, data_hash, len(frame), ml.run_id, s.decision.reason,
                    champion.version if champion else None))
        finally:
            self.recipes.tuned, self.recipes.starts = {}, {}
            self.recipes.forget()  # the fits a failed run left queued are dropped
            shutil.rmtree(workdir, ignore_errors=True)

    def _search(self, frame: Frame, plan: CrossFitPlan | None, kinds: Sequence[str], ml: RunHandle
                ) -> dict[str, dict[str, Any]]:
        """The policy's hyperparameter search for each kind with a search space, on the training rows the
        evaluation never scores: the frame without the rows the plan cross-fits (those join the gate's
        holdout, so parameters chosen on them would be judged on the rows that chose them). A search
        that cannot run (too few rows, no trial completes) leaves the kind at the policy's params and
        says so in MLflow."""
        cfg = self.policy.search
        if cfg is None:
            return {}
        held = {i for fold in plan.folds for i in fold} if plan is not None else set()
        rows = frame.take([i for i in range(len(frame)) if i not in held])
        tuned: dict[str, dict[str, Any]] = {}
        for kind in kinds:
            space = KINDS[kind].search_space if kind in KINDS else {}
            if not space or (cfg.kinds is not None and kind not in cfg.kinds):
                continue
            if len(rows) < cfg.min_rows:
                ml.set_tags({f"search.{kind}": f"skipped: {len(rows)} searchable rows < min_rows {cfg.min_rows}"})
                continue
            make = functools.partial(self._make, kind, self.recipes.params(kind))
            try:
                result = search(make, rows.inputs, rows.labels, rows.weights, space, folds=cfg.folds,
                                budget_s=cfg.budget_s, max_trials=cfg.max_trials, seed=self.policy.seed,
                                metric=cfg.metric)
            except TrainerError as exc:
                ml.set_tags({f"search.{kind}": f"failed: {exc}"[:500]})
                continue
            tuned[kind] = result.best_params
            ml.log_params({f"search.{kind}.{name}": value for name, value in result.best_params.items()})
            ml.log_metrics({f"search.{kind}.cv_{cfg.metric}": result.best_score,
                            f"search.{kind}.trials": float(result.trials),
                            f"search.{kind}.seconds": result.elapsed_s})
        return tuned

    def _make(self, kind: str, base: dict[str, Any], params: dict[str, Any]) -> ModelKind:
        return self.recipes.create(kind, **{**base, **params})

    def _register(self, s: Started, best: Candidate, frame: Frame, data_hash: str, artifact: Path,
                  mlflow_run_id: str) -> ModelVersionInfo:
        """The chosen candidate as a new version, tagged with its lineage and the run id."""
        best.model.save(artifact)
        known = [i for i in frame.ids if i > 0]
        corpus_weight = (best.corpus_weight if best.corpus_weight is not None
                         else self.policy.corpus_weight if s.mode != "bootstrap" else None)
        return self.registry.register(
            artifact, mode=s.mode, metrics=best.metrics(),
            lineage=Lineage(data_hash=data_hash, watermark=s.snapshot.watermark, sample_count=s.snapshot.count,
                            sample_range=(min(known), max(known)) if known else None,
                            parent_version=s.champion.version if s.champion else None,
                            training_run_id=str(s.run_id), corpus_weight=corpus_weight,
                            searched_params=self.recipes.tuned.get(best.kind)),
            run_id=mlflow_run_id)

    def _fit(self, kind: str, mode: Mode, frame: Frame, champion: ModelVersionInfo | None,
             cross: PendingCrossFit | None = None, corpus_weight: float | None = None) -> Candidate:
        """Fit ``kind``'s recipe and collect its cross-fit folds (``cross``, fitting in the fit workers)."""
        started = time.perf_counter()
        model = self.recipes.fit(kind, mode, champion, frame)
        candidate = Candidate(kind, model, time.perf_counter() - started, corpus_weight=corpus_weight)
        if cross is not None:
            candidate.cross = cross.result(self.recipes.pool.result)
            # the seconds its fold fits and the champion's took, wherever they ran
            candidate.cross_fit_seconds = cross.seconds + cross.plan.champion_seconds
        return candidate

    def _judge(self, candidate: Candidate, champion_model: ModelKind | None, holdout: Frame, workdir: Path,
               refresh: bool = False) -> Candidate:
        """The evaluation of a fitted candidate (the behaviour suite comes in :meth:`_choose`)."""
        verdict = self.evaluation.check(GateInput(candidate=candidate.model, champion=champion_model,
                                                  holdout=evaluation_set(holdout, self.policy, candidate.cross),
                                                  out_dir=workdir / candidate.name, refresh=refresh))
        candidate.verdicts.append(verdict)
        return candidate

    def _with_arrivals(self, s: Started, ml: RunHandle) -> Frame:
        """The store's holdout read again once the candidates are fitted, plus the training samples labelled
        since the run's snapshot (:meth:`SampleStore.arrived`): no candidate and no champion trained on
        them, so each is evidence the gate would otherwise leave to the next run. Under a fast stream a
        run's first candidate can be judged on twice the rows it was trained on (docs/training.md)."""
        holdout = s.store.holdout(self.policy.holdout_recent)
        arrived = s.store.arrived(s.snapshot.watermark)
        ml.log_params({"judged_holdout_rows": len(holdout), "arrived_rows": len(arrived)})
        return holdout.extend(arrived.rows())

    def _choose(self, candidates: Sequence[Candidate], holdout: Frame, workdir: Path) -> Candidate | None:
        """The candidate to register: of those the evaluation passed, the choice of :func:`choose_candidate`,
        with the behaviour suite run only on the candidates that choice reads (the one it would register,
        the next on a failure, the policy's corpus weight of its kind). Measured on a minilm-head run, the
        suite on every candidate cost ~5 s (issue 18); the registered model is checked as before. Those it
        never read are marked ``skipped``."""
        ranked = sorted((c for c in candidates if c.passed), key=lambda c: c.score, reverse=True)

        def behaves(candidate: Candidate) -> bool:
            if not any(v.gate == "behaviour" for v in candidate.verdicts):
                with _throwaway_embeddings(candidate.model):
                    candidate.verdicts.append(self.behaviour.check(GateInput(
                        candidate=candidate.model, features=self.features, out_dir=workdir / candidate.name)))
            return candidate.passed

        best = choose_candidate(ranked, behaves, holdout, self.evaluation, self.policy)
        for c in ranked:
            if not any(v.gate == "behaviour" for v in c.verdicts):
                c.skipped = f"behaviour not run: {best.name if best else 'another candidate'} was chosen first"
        return best


def _counted_once(frame: Frame) -> contextlib.AbstractContextManager[None]:
    """A text frame's word n-grams counted once for every tfidf-logreg fit of the run on its rows (each
    cross-fit fold, each corpus weight, the champion's recipe per fold): :mod:`kinds.ngrams`."""
    if all(isinstance(value, str) for value in frame.inputs):
        return counted_once([str(value) for value in frame.inputs])
    return contextlib.nullcontext()


def _remembering(gate: Gate[Any]) -> contextlib.AbstractContextManager[None]:
    """The evaluation gate's memory of predictions for the block (:meth:`EvaluationGate.remembering`)."""
    return gate.remembering() if isinstance(gate, EvaluationGate) else contextlib.nullcontext()


@contextlib.contextmanager
def _throwaway_embeddings(model: ModelKind) -> Iterator[None]:
    """The behaviour gate times uncached inference on one-off texts: keep their embeddings out of the
    shared (Postgres-backed) cache of a MiniLM head while it runs."""
    if not isinstance(model, MiniLMHead):
        yield
        return
    shared = model.embedder
    model.use(Embedder(shared.encoder, MemoryEmbeddingCache(max_entries=10_000)))
    try:
        yield
    finally:
        model.use(shared)
