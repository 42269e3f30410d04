"""One training run, start to announcement: decide, snapshot, train every candidate, gate, register,
announce. Single flight per model (a Postgres advisory lock); every run is recorded, refused or not.

Order of the irreversible steps, so that a crash leaves nothing half-done: the version is registered
(tagged with the run id), then the run row is finished, then the aliases move, then the event goes
out. A version whose run never finished is deleted by the next lock holder; an alias moved without
its event is re-announced by ``reconcile``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import random
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import pandas as pd
from prometheus_client import CollectorRegistry

from core import db
from core.exceptions import FlywheelError
from kinds.base import ModelKind
from kinds.catalog import create
from kinds.embeddings import Embedder, MemoryEmbeddingCache
from kinds.minilm import MiniLMHead
from registry import CHALLENGER, CHAMPION, PREVIOUS, Lineage, ModelRegistry, ModelVersionInfo, RunHandle
from registry.announce import ModelAnnouncer, ModelState, model_event
from schemas import ModelEvent
from trainer.config import PolicyConfig, TrainerConfig
from trainer.data import CorpusRow, Frame, SampleStore, Snapshot, split_holdout, store_corpus
from trainer.exceptions import TrainerError
from trainer.gates import CrossFitted, Gate, GateInput, Holdout, Verdict, build_gates
from trainer.metrics import TrainerMetrics
from trainer.policy import Decision, Mode, Trigger, decide
from trainer.runs import RunLog, single_flight

log = logging.getLogger(__name__)
LATE_JOIN_MARGIN = timedelta(minutes=10)  # > statement + idle-in-transaction time-outs of every writer
MAX_FAILURES = 3  # failed runs on one snapshot before the trainer waits for new data or an operator


@dataclass
class Candidate:
    kind: str
    model: ModelKind
    train_seconds: float
    cross_fit_seconds: float = 0.0
    verdicts: list[Verdict] = field(default_factory=list)
    corpus_weight: float | None = None  # the corpus rows' training weight when not the policy's
    name: str = ""  # kind, or kind_corpus<weight> for a corpus-weight choice (MLflow-safe)
    cross: CrossFit | None = None  # its recipe's out-of-fold predictions (the evaluation's cross-fitted rows)
    selection: Verdict | None = None  # a corpus-weight choice judged against the policy's weight (select_candidate)

    def __post_init__(self) -> None:
        self.name = self.name or (self.kind if self.corpus_weight is None
                                  else f"{self.kind}_corpus{self.corpus_weight:g}")

    @property
    def passed(self) -> bool:
        return bool(self.verdicts) and all(v.passed for v in self.verdicts)

    @property
    def score(self) -> float:
        return float(self.evaluation.get("score", 0.0))

    @property
    def evaluation(self) -> dict[str, Any]:
        """The candidate's part of the evaluation verdict: ``metrics`` and the weighted ``score``."""
        for v in self.verdicts:
            if v.gate == "evaluation":
                found: dict[str, Any] = v.details.get("candidate") or {}
                return found
        return {}

    def metrics(self) -> dict[str, float]:
        """Flat metrics for MLflow; ``current_accuracy`` (accuracy on current traffic: recent reserved and
        cross-fitted feedback) is what the champion watchdog compares online accuracy with."""
        evaluation = self.evaluation
        flat = {f"holdout_{k}": float(v) for k, v in (evaluation.get("metrics") or {}).items()
                if isinstance(v, int | float)}
        current = evaluation.get("current") or {}
        if isinstance(current.get("accuracy"), int | float):
            flat["current_accuracy"] = float(current["accuracy"])
            flat["current_rows"] = float(current["rows"])
        return {**flat, "holdout_score": self.score, "train_seconds": self.train_seconds,
                "cross_fit_seconds": self.cross_fit_seconds}

    def summary(self) -> dict[str, Any]:
        out = {"kind": self.kind, "name": self.name, "train_seconds": round(self.train_seconds, 3),
               "passed": self.passed, "score": self.score,
               "verdicts": [{"gate": v.gate, "passed": v.passed, "reason": v.reason} for v in self.verdicts]}
        if self.selection is not None:
            out["selection"] = {"chosen": self.selection.passed, "reason": self.selection.reason}
        return out


@dataclass(frozen=True)
class RunResult:
    status: str  # skipped | busy | promoted | canary | refused | failed
    reason: str
    run_id: uuid.UUID | None = None
    mode: Mode | None = None
    version: ModelVersionInfo | None = None
    event: ModelEvent | None = None
    candidates: tuple[dict[str, Any], ...] = ()


class Trainer:
    """Trains one model name. Collaborators are injected: the registry, the announcer, the clock."""

    def __init__(self, *, db_url: str, model_name: str, labels: Sequence[str], config: TrainerConfig,
                 registry: ModelRegistry, announcer: ModelAnnouncer, work_dir: Path,
                 metrics: TrainerMetrics | None = None) -> None:
        self.db_url = db_url
        self.model_name = model_name
        self.labels = tuple(labels)
        self.config = config
        self.registry = registry
        self.announcer = announcer
        self.work_dir = work_dir
        self.quality, self.evaluation, self.behaviour = build_gates(config.gates)
        self.metrics = metrics or TrainerMetrics(CollectorRegistry())

    # -- entry -------------------------------------------------------------------------------------
    def maybe_train(self, trigger: Trigger, *, requested: Mode | None = None,
                    kinds: Sequence[str] | None = None, request_id: str | None = None) -> RunResult:
        """Train if the policy says so and nobody else is; safe to call on every signal. A
        ``request_id`` (of a RetrainRequest) starts at most one run, however often it is replayed."""
        started = time.perf_counter()
        result = self._maybe_train(trigger, requested, kinds, request_id)
        self._observe(result, trigger, time.perf_counter() - started)
        return result

    def _observe(self, result: RunResult, trigger: str, seconds: float) -> None:
        if result.mode is None:
            return
        m, name = self.metrics, self.model_name
        m.runs.labels(name, result.mode, trigger, result.status).inc()
        m.run_seconds.labels(name, result.mode).observe(seconds)
        for c in result.candidates:
            for v in c["verdicts"]:
                m.verdicts.labels(name, v["gate"], c["kind"], "pass" if v["passed"] else "fail").inc()
        if result.event is not None:
            m.announcements.labels(name, result.event.action).inc()
            if result.event.action == "promote":
                m.champion.labels(name).set(float(result.event.version))

    def _maybe_train(self, trigger: Trigger, requested: Mode | None, kinds: Sequence[str] | None,
                     request_id: str | None) -> RunResult:
        with db.connect(self.db_url, autocommit=True) as conn, single_flight(conn, self.model_name) as held:
            if not held:
                return RunResult("busy", "another trainer holds this model's lock")
            runs = RunLog(conn, self.model_name)
            self._clean_abandoned(runs)
            if request_id is not None and (done := runs.for_request(request_id)) is not None:
                return RunResult("skipped", f"request {request_id} already handled: {done}")
            store = SampleStore(conn, self.config.policy.holdout_percent)
            snapshot = store.snapshot()
            champion = self.champion()
            decision = self._decide(runs, snapshot, champion, trigger, requested)
            if decision.mode is None:
                return RunResult("skipped", decision.reason)
            earlier = runs.attempted(decision.mode, snapshot)
            if earlier is not None and trigger != "admin":
                return RunResult("skipped", f"already trained {decision.mode} at watermark {snapshot.watermark} "
                                            f"({snapshot.count} samples): {earlier}")
            failures = runs.failures(decision.mode, snapshot)
            if failures >= MAX_FAILURES and trigger != "admin":
                return RunResult("skipped", f"{failures} runs failed on this snapshot; waiting for new samples "
                                            "or `flywheel retrain`")
            assert champion is not None  # decide() refuses without one
            run_id = runs.start(trigger=trigger, mode=decision.mode, snapshot=snapshot, parent=champion.version,
                                request_id=request_id)
            log.info("run %s: %s (%s)", run_id, decision.reason, trigger)
            try:
                return self._run(runs, store, run_id, decision, snapshot, champion, kinds, trigger=trigger)
            except Exception as exc:
                # one failed run must not stop the trainer: recorded, logged, and the next signal retries
                reason = f"{type(exc).__name__}: {exc}"
                log.exception("run %s failed", run_id)
                runs.finish(run_id, status="failed", reason=reason)
                return RunResult("failed", reason, run_id, decision.mode)

    def bootstrap(self, rows: Sequence[CorpusRow], *, source: str, kind: str, holdout_fraction: float = 0.2,
                  force: bool = False, request_id: str | None = None) -> RunResult:
        """Train the first model from a labelled corpus and make it the champion (``promote`` event).

        The corpus replaces any stored one: its holdout split becomes the fixed base holdout, its train
        split joins every full retrain. With a champion in place it refuses unless ``force`` (a new
        champion from scratch, e.g. on a new label set)."""
        with db.connect(self.db_url, autocommit=True) as conn, single_flight(conn, self.model_name) as held:
            if not held:
                return RunResult("busy", "another trainer holds this model's lock")
            runs = RunLog(conn, self.model_name)
            self._clean_abandoned(runs)
            champion = self.champion()
            if champion is not None and not force:
                raise TrainerError(f"{self.model_name} already has a champion ({champion.semver}); "
                                   "retrain with `flywheel retrain`, or bootstrap with --force")
            store = SampleStore(conn, self.config.policy.holdout_percent)
            with conn.transaction():
                conn.execute("DELETE FROM corpus")
                train, holdout_rows = split_holdout(rows, holdout_fraction, self.config.policy.seed)
                store_corpus(conn, source, train, holdout_rows)
            frame, holdout = store.corpus("train"), store.holdout(self.config.policy.holdout_recent)
            snapshot = Snapshot(watermark=0, count=0)
            run_id = runs.start(trigger="bootstrap", mode="bootstrap", snapshot=snapshot,
                                parent=champion.version if champion else None, request_id=request_id)
            decision = Decision("bootstrap", f"bootstrap from {source} ({len(frame)} train / {len(holdout)} holdout)")
            try:
                started = time.perf_counter()
                result = self._run(runs, store, run_id, decision, snapshot, champion, [kind], trigger="bootstrap",
                                   frame=frame,
                                   holdout=holdout)
                self._observe(result, "bootstrap", time.perf_counter() - started)
                return result
            except Exception as exc:
                reason = f"{type(exc).__name__}: {exc}"
                log.exception("bootstrap run %s failed", run_id)
                runs.finish(run_id, status="failed", reason=reason)
                return RunResult("failed", reason, run_id, "bootstrap")

    def evaluate(self, ref: str | None = None) -> list[Verdict]:
        """The evaluation and behavioural verdicts of ``ref`` (default: the challenger, else the champion)
        against the champion (the champion against ``previous``), on the current holdout. Changes nothing."""
        champion = self.champion()
        if ref is None:
            ref = CHALLENGER if CHALLENGER in self.registry.aliases() else CHAMPION
        info = self.registry.get(ref)
        model = self.registry.load(info.version)
        against = champion if champion and champion.version != info.version else None
        if against is None and PREVIOUS in self.registry.aliases():  # the champion itself: against its predecessor
            against = self.registry.get(PREVIOUS)
        baseline = self.registry.load(against.version) if against is not None else None
        with db.connect(self.db_url, autocommit=True) as conn:
            frame = SampleStore(conn, self.config.policy.holdout_percent).holdout(self.config.policy.holdout_recent)
        holdout = evaluation_set(frame, self.config.policy)
        return [self.evaluation.check(GateInput(candidate=model, champion=baseline, holdout=holdout)),
                self.behaviour.check(GateInput(candidate=model))]

    def reconcile_announcements(self, announced: dict[str, ModelState]) -> list[ModelEvent]:
        """Re-announce what the registry says but the models topic (folded into ``announced``) does not:
        a crash between an alias move and its event, or a broker that lost its memory storage."""
        state = announced.get(self.model_name, ModelState())
        aliases = self.registry.aliases()
        sent: list[ModelEvent] = []
        if CHAMPION in aliases:
            champion = self.registry.get(CHAMPION)
            if state.champion is None or state.champion.version != champion.version:
                sent.append(model_event(champion, self.model_name, "promote", 1.0,
                                        "re-announced: the registry's champion was not on the models topic"))
        if CHALLENGER in aliases and self.config.promotion.mode == "canary":
            challenger = self.registry.get(CHALLENGER)
            announced_before = f"canary:{challenger.version}" in state.history
            if not announced_before and (state.canary is None or state.canary.version != challenger.version):
                sent.append(model_event(challenger, self.model_name, "canary", self.config.promotion.canary_traffic,
                                        "re-announced: the registry's challenger was not on the models topic"))
        for event in sent:
            log.warning("%s %s", event.reason, event.semver)
            self.announcer.publish(event)
        return sent

    def recent_runs(self, limit: int = 20) -> list[dict[str, Any]]:
        with db.connect(self.db_url, autocommit=True) as conn:
            return RunLog(conn, self.model_name).recent(limit)

    def find_run(self, ref: str) -> dict[str, Any] | None:
        """A training run of this model by run id or retrain-request id (``None``: no such run yet)."""
        with db.connect(self.db_url, autocommit=True) as conn:
            return RunLog(conn, self.model_name).find(ref)

    def champion(self) -> ModelVersionInfo | None:
        return self.registry.champion()

    def _decide(self, runs: RunLog, snapshot: Snapshot, champion: ModelVersionInfo | None, trigger: Trigger,
                requested: Mode | None) -> Decision:
        champion_count = (champion.sample_count or 0) if champion else 0
        last, last_full = runs.last_attempt(), runs.last_attempt(("full", "bootstrap"))
        baseline = max(champion_count, last.sample_count) if last else champion_count
        full_baseline = last_full.sample_count if last_full else 0
        return decide(self.config.policy, trigger=trigger, new_since_attempt=snapshot.count - baseline,
                      new_since_full=snapshot.count - full_baseline,
                      new_since_champion=snapshot.count - champion_count, has_champion=champion is not None,
                      requested=requested)

    def _clean_abandoned(self, runs: RunLog) -> None:
        """Runs left ``running`` by a crashed holder: mark them and delete any version they registered."""
        stale = runs.stale()
        if not stale:
            return
        for info in self.registry.versions():
            run_id = info.tags.get("training_run_id")
            if run_id not in stale:
                continue
            if info.aliases:  # the crash came after the alias move: the run did finish its job
                status = "promoted" if "champion" in info.aliases or "previous" in info.aliases else "canary"
                log.warning("run %s stopped after moving %s to version %s: recorded as %s", run_id,
                            info.aliases, info.version, status)
                runs.finish(uuid.UUID(run_id), status=status, version=info.version, kind=info.kind,
                            reason="recovered: the trainer stopped after the alias move (announcement re-sent "
                                   "by reconcile)")
                stale.discard(run_id)
            else:
                log.warning("deleting version %s registered by abandoned run %s", info.version, run_id)
                self.registry.delete_version(info.version)
        runs.abandon(stale)

    # -- one run -----------------------------------------------------------------------------------
    def _run(self, runs: RunLog, store: SampleStore, run_id: uuid.UUID, decision: Decision, snapshot: Snapshot,
             champion: ModelVersionInfo | None, kinds: Sequence[str] | None, *, trigger: str,
             frame: Frame | None = None,
             holdout: Frame | None = None) -> RunResult:
        assert decision.mode is not None
        mode = decision.mode
        champion_model = self.registry.load(champion.version) if champion and mode != "bootstrap" else None
        if frame is None:
            assert champion is not None
            frame = self._training_frame(store, mode, snapshot, champion)
        if holdout is None:
            holdout = store.holdout(self.config.policy.holdout_recent)
        data_hash = frame.digest()
        workdir = Path(tempfile.mkdtemp(prefix=f"run-{run_id}-", dir=self._scratch()))
        try:
            run_tags = {"flywheel_run_id": str(run_id), "mode": mode, "trigger": trigger}
            with self.registry.run(f"{mode}-{run_id}", tags=run_tags) as ml:
                started = time.perf_counter()
                ml.log_params({"mode": mode, "trigger": trigger, "watermark": snapshot.watermark,
                               "sample_count": snapshot.count,
                               "train_rows": len(frame), "holdout_rows": len(holdout), "data_hash": data_hash,
                               "sample_ids": _id_range(frame),
                               "parent_version": champion.version if champion else "", "reason": decision.reason})
                quality = self.quality.check(GateInput(training=_training_table(frame), label_set=self.labels,
                                                       out_dir=workdir))
                _log_verdict(ml, quality)
                if not quality.passed:
                    runs.finish(run_id, status="refused", reason=f"data quality: {quality.reason}",
                                data_hash=data_hash, trained_count=len(frame), mlflow_run_id=ml.run_id)
                    return RunResult("refused", f"data quality: {quality.reason}", run_id, mode)
                folds = self._cross_fit_plan(store, mode, frame, champion, champion_model)
                candidates = [self._candidate(kind, mode, _reweighed(frame, weight, self.config.policy), champion,
                                              champion_model, holdout, workdir, folds, weight,
                                              self._refresh(kind, mode, weight, champion, champion_model, snapshot))
                              for kind in self._kinds(mode, champion, kinds)
                              for weight in self._corpus_weights(mode)]
                for c in candidates:
                    for v in c.verdicts:
                        _log_verdict(ml, v, prefix=f"{c.name}.")
                passing = sorted((c for c in candidates if c.passed), key=lambda c: c.score, reverse=True)
                best = select_candidate(passing, holdout, self.evaluation, self.config.policy) if passing else None
                summaries = [c.summary() for c in candidates]
                ml.log_params({f"{c.name}.{k}": v for c in candidates for k, v in sorted(c.model.params.items())})
                ml.log_metrics({f"{c.name}.{k}": v for c in candidates for k, v in c.metrics().items()})
                ml.log_metrics({"duration_s": time.perf_counter() - started})
                if best is None:
                    reason = "; ".join(f"{c.name}: {next(v for v in c.verdicts if not v.passed).gate} — "
                                       f"{next(v for v in c.verdicts if not v.passed).reason}" for c in candidates)
                    runs.finish(run_id, status="refused", reason=reason, data_hash=data_hash,
                                trained_count=len(frame), candidates=summaries, mlflow_run_id=ml.run_id)
                    return RunResult("refused", reason, run_id, mode, candidates=tuple(summaries))
                artifact = workdir / "model"
                best.model.save(artifact)
                known = [i for i in frame.ids if i > 0]
                info = self.registry.register(
                    artifact, mode=mode, metrics=best.metrics(),
                    lineage=Lineage(data_hash=data_hash, watermark=snapshot.watermark, sample_count=snapshot.count,
                                    sample_range=(min(known), max(known)) if known else None,
                                    parent_version=champion.version if champion else None,
                                    training_run_id=str(run_id),
                                    corpus_weight=best.corpus_weight if best.corpus_weight is not None
                                    else self.config.policy.corpus_weight if mode != "bootstrap" else None),
                    run_id=ml.run_id)
                return self._announce(runs, run_id, mode, info, best, summaries, data_hash, len(frame), ml.run_id,
                                      decision.reason, champion.version if champion else None)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)

    def _announce(self, runs: RunLog, run_id: uuid.UUID, mode: Mode, info: ModelVersionInfo, best: Candidate,
                  summaries: list[dict[str, Any]], data_hash: str, trained: int, mlflow_run_id: str,
                  why: str, parent: str | None) -> RunResult:
        """Move the aliases, publish, then finish the run row. A champion that changed while this run
        trained (an operator's promote or rollback) was never compared with: the candidate is refused."""
        promotion = self.config.promotion
        status = "promoted" if promotion.mode == "direct" or mode == "bootstrap" else "canary"
        current = self.champion()
        if (current.version if current else None) != parent:
            reason = (f"the champion changed during the run ({parent} -> {current.version if current else None}); "
                      "the candidate was not evaluated against it")
            self.registry.delete_version(info.version)
            runs.finish(run_id, status="refused", reason=reason, data_hash=data_hash, trained_count=trained,
                        candidates=summaries, mlflow_run_id=mlflow_run_id)
            return RunResult("refused", reason, run_id, mode, candidates=tuple(summaries))
        reason = f"{why}; {best.name} passed every gate ({best.verdicts[0].reason})"
        if status == "promoted":
            transition = self.registry.promote(info.version, reason)
            event = model_event(transition.info, self.model_name, "promote", 1.0, reason, transition.from_version)
        else:
            self.registry.mark_challenger(info.version, reason)
            event = model_event(info, self.model_name, "canary", promotion.canary_traffic, reason)
        try:
            self.announcer.publish(event)
        except FlywheelError as exc:  # the alias moved: the run succeeded; reconcile re-announces
            log.warning("run %s: %s %s but the announcement failed (reconcile re-sends it): %s", run_id, status,
                        info.semver, exc)
            reason += f"; announcement pending: {exc}"
        runs.finish(run_id, status=status, reason=reason, data_hash=data_hash, trained_count=trained,
                    version=info.version, kind=best.kind, candidates=summaries, mlflow_run_id=mlflow_run_id)
        log.info("run %s: %s %s (%s)", run_id, status, info.semver, reason)
        return RunResult(status, reason, run_id, mode, info, event, tuple(summaries))

    def _kinds(self, mode: Mode, champion: ModelVersionInfo | None, kinds: Sequence[str] | None) -> list[str]:
        if kinds:
            return list(kinds)
        if mode == "incremental" and champion is not None:
            return [champion.kind]  # a warm start continues the champion; other kinds start from scratch
        return list(dict.fromkeys(self.config.policy.kinds))

    def _training_frame(self, store: SampleStore, mode: Mode, snapshot: Snapshot,
                        champion: ModelVersionInfo) -> Frame:
        if mode == "full":
            frame = self._corpus(store)
            new = store.samples(after=0, upto=snapshot.watermark)
            return frame.extend(_rows(new))
        since = champion.watermark or 0
        # samples whose id is at or below the champion's watermark but that became samples after its run
        # began (late joins) are new too; the margin covers transactions in flight at that moment
        started = store.run_started(champion.tags.get("training_run_id"))
        late = started - LATE_JOIN_MARGIN if started is not None else None
        new = store.samples(after=since, upto=snapshot.watermark, landed_after=late)
        fresh = set(new.ids)
        older = self._corpus(store)
        past = store.samples(after=0, upto=since)
        older.extend((i, t, lbl, w, sl) for i, t, lbl, w, sl in
                     zip(past.ids, past.texts, past.labels, past.weights, past.slices, strict=True) if i not in fresh)
        rng = random.Random(f"{self.config.policy.seed}:{snapshot.watermark}")
        replay = older.take(sorted(rng.sample(range(len(older)), min(len(older), self.config.policy.replay_size))))
        return new.extend(_rows(replay))

    def _corpus(self, store: SampleStore, weight: float | None = None) -> Frame:
        """The corpus's train split at ``weight`` (default ``policy.corpus_weight``)."""
        frame = store.corpus("train")
        factor = self.config.policy.corpus_weight if weight is None else weight
        frame.weights = [w * factor for w in frame.weights]
        return frame

    def _corpus_weights(self, mode: Mode) -> list[float | None]:
        """None (the policy's corpus weight), plus each of ``corpus_weight_choices`` in a full run."""
        choices = self.config.policy.corpus_weight_choices if mode == "full" else ()
        return [None, *(w for w in dict.fromkeys(choices) if w != self.config.policy.corpus_weight)]

    def _refresh(self, kind: str, mode: Mode, weight: float | None, champion: ModelVersionInfo | None,
                 champion_model: ModelKind | None, snapshot: Snapshot) -> bool:
        """Is the candidate of ``kind`` at corpus ``weight`` the champion's own recipe on more of the same
        stream: a full refit of the champion's kind, params and corpus weight (a full-mode champion) on a
        snapshot past its watermark? The evaluation gate holds such a refresh to non-inferiority."""
        if champion is None or champion_model is None or mode != "full" or champion.mode != "full":
            return False
        policy = self.config.policy
        recipe_weight = policy.corpus_weight if weight is None else weight
        return (kind == champion.kind and create(kind, **self._params(kind)).params == champion_model.params
                and math.isclose(recipe_weight, _float_tag(champion.tags, "corpus_weight", math.nan))
                and snapshot.watermark > (champion.watermark or 0))

    def _candidate(self, kind: str, mode: Mode, frame: Frame, champion: ModelVersionInfo | None,
                   champion_model: ModelKind | None, holdout: Frame, workdir: Path,
                   folds: CrossFitPlan | None = None, corpus_weight: float | None = None,
                   refresh: bool = False) -> Candidate:
        started = time.perf_counter()
        model = self._fit(kind, mode, champion, frame)
        candidate = Candidate(kind, model, time.perf_counter() - started, corpus_weight=corpus_weight)
        workdir = workdir / candidate.name
        started = time.perf_counter()
        cross = self._cross_fit(kind, mode, champion, frame, folds) if folds is not None else None
        candidate.cross = cross
        candidate.cross_fit_seconds = time.perf_counter() - started + (folds.champion_seconds if folds else 0.0)
        verdict = self.evaluation.check(GateInput(candidate=model, champion=champion_model,
                                                  holdout=evaluation_set(holdout, self.config.policy, cross),
                                                  out_dir=workdir, refresh=refresh))
        candidate.verdicts.append(verdict)
        if verdict.passed:
            with _throwaway_embeddings(model):
                candidate.verdicts.append(self.behaviour.check(GateInput(candidate=model, out_dir=workdir)))
        return candidate

    def _fit(self, kind: str, mode: Mode, champion: ModelVersionInfo | None, frame: Frame) -> ModelKind:
        """The candidate's recipe: a warm start of the champion (incremental, same kind), else from scratch."""
        if mode == "incremental" and champion is not None and kind == champion.kind:
            return self.registry.load(champion.version).partial_fit(frame.texts, frame.labels, frame.weights)
        return create(kind, **self._params(kind)).fit(frame.texts, frame.labels, frame.weights)

    def _params(self, kind: str) -> dict[str, Any]:
        """A from-scratch candidate's constructor parameters: the policy's seed and ``kind_params``."""
        return {"seed": self.config.policy.seed, **self.config.policy.kind_params.get(kind, {})}

    def _cross_fit_plan(self, store: SampleStore, mode: Mode, frame: Frame, champion: ModelVersionInfo | None,
                        champion_model: ModelKind | None) -> CrossFitPlan | None:
        """Which of the frame's feedback samples are cross-fitted, in which folds, and the champion recipe's
        out-of-fold predictions for those the champion trained on (None: no cross-fitting).

        Always the samples the champion never trained on (ids above its watermark). In a full run against
        a champion trained from scratch (``cross_fit_champion``), also the samples it did train on: its
        recipe (kind and params) is refit on the corpus and the samples up to its watermark, without each
        fold. An incremental candidate continues the champion, which saw those samples: never for it."""
        policy = self.config.policy
        if champion is None or champion_model is None or policy.cross_fit_folds < 2:
            return None
        watermark = champion.watermark or 0
        refit = (policy.cross_fit_champion and mode == "full" and champion.mode == "full" and watermark > 0)
        champion_frame = None
        if refit:
            weight = _float_tag(champion.tags, "corpus_weight", policy.corpus_weight)
            champion_frame = self._corpus(store, weight).extend(_rows(store.samples(after=0, upto=watermark)))
        trained = {sample_id for sample_id in champion_frame.ids if sample_id > 0} if champion_frame else set()
        rows = [i for i, sample_id in enumerate(frame.ids) if sample_id > watermark or sample_id in trained]
        if len(rows) < max(policy.cross_fit_min_rows, policy.cross_fit_folds):
            return None
        random.Random(f"{policy.seed}:cross-fit:{len(frame)}").shuffle(rows)
        plan = CrossFitPlan([rows[k::policy.cross_fit_folds] for k in range(policy.cross_fit_folds)])
        if champion_frame is None or not trained:
            return plan
        started = time.perf_counter()
        at = {sample_id: j for j, sample_id in enumerate(champion_frame.ids) if sample_id > 0}
        params = {"seed": policy.seed, **champion_model.params}
        for fold in plan.folds:
            seen = [i for i in fold if frame.ids[i] in trained]
            if not seen:
                continue
            held = {at[frame.ids[i]] for i in seen}
            model = create(champion.kind, **params).fit(*_columns(champion_frame.take(
                [j for j in range(len(champion_frame)) if j not in held])))
            for i, p in zip(seen, model.predict_proba([frame.texts[i] for i in seen]), strict=True):
                plan.champion[i] = (model.labels[int(p.argmax())], float(p.max()))
        plan.champion_seconds = time.perf_counter() - started
        return plan

    def _cross_fit(self, kind: str, mode: Mode, champion: ModelVersionInfo | None, frame: Frame,
                   plan: CrossFitPlan) -> CrossFit:
        """Out-of-fold predictions of the candidate's recipe for the plan's rows: each fold is predicted by
        the recipe trained on the rest of the frame."""
        predicted: dict[int, tuple[str, float]] = {}
        for fold in plan.folds:
            held = set(fold)
            model = self._fit(kind, mode, champion, frame.take([i for i in range(len(frame)) if i not in held]))
            for i, p in zip(fold, model.predict_proba([frame.texts[i] for i in fold]), strict=True):
                predicted[i] = (model.labels[int(p.argmax())], float(p.max()))
        rows = sorted(predicted)
        return CrossFit(frame.take(rows), [predicted[i] for i in rows], len(plan.folds),
                        {n: plan.champion[i] for n, i in enumerate(rows) if i in plan.champion})

    def _scratch(self) -> Path:
        self.work_dir.mkdir(parents=True, exist_ok=True)
        return self.work_dir


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


def _id_range(frame: Frame) -> str:
    """First..last feedback sample id trained on (corpus rows have negative ids and are not samples)."""
    known = [i for i in frame.ids if i > 0]
    return f"{min(known)}..{max(known)}" if known else "none"


def _training_table(frame: Frame) -> pd.DataFrame:
    return pd.DataFrame({"text": frame.texts, "label": frame.labels, "weight": frame.weights,
                         "domain": frame.slices})


def _log_verdict(ml: RunHandle, verdict: Verdict, prefix: str = "") -> None:
    """A gate's verdict in the MLflow run: a pass/fail metric, the verdict JSON and its files."""
    name = f"{prefix}{verdict.gate}"
    ml.log_metrics({f"gate.{name}.passed": 1.0 if verdict.passed else 0.0})
    ml.set_tags({f"gate.{name}": ("passed: " if verdict.passed else "failed: ") + verdict.reason[:4000]})
    ml.log_text(json.dumps(verdict.to_dict(), indent=2, sort_keys=True, default=str), f"gates/{name}.json")
    for key, path in verdict.artifacts.items():
        if key == "data_docs" and path.is_file():  # a static site: index.html and its assets beside it
            ml.log_artifacts(path.parent, f"gates/{name}/data_docs")
        elif path.is_file():
            ml.log_artifact(path, f"gates/{name}")


@dataclass
class CrossFitPlan:
    """The frame rows cross-fitted, fold by fold, and the champion recipe's out-of-fold (label, confidence)
    for the rows the champion trained on (by frame row)."""

    folds: list[list[int]]
    champion: dict[int, tuple[str, float]] = field(default_factory=dict)
    champion_seconds: float = 0.0


@dataclass(frozen=True)
class CrossFit:
    """Cross-fitted training samples with the candidate recipe's out-of-fold (label, confidence), and the
    champion recipe's for those the champion trained on (by position in ``rows``)."""

    rows: Frame
    predicted: list[tuple[str, float]]
    folds: int
    champion: dict[int, tuple[str, float]] = field(default_factory=dict)

    def against(self, other: CrossFit) -> CrossFit:
        """These predictions, with ``other``'s (another recipe on the same rows and folds) as the side it
        is compared with: every row out of sample for both."""
        if other.rows.ids != self.rows.ids or other.folds != self.folds:
            raise TrainerError("cross-fits of different rows or folds cannot be compared")
        return CrossFit(self.rows, self.predicted, self.folds, dict(enumerate(other.predicted)))


def select_candidate(passing: Sequence[Candidate], holdout: Frame, evaluation: Gate[Any],
                     policy: PolicyConfig) -> Candidate:
    """Of the passing candidates (best score first), the one to register: the best, except that a
    corpus-weight choice replaces the same kind at the policy's corpus weight (when that one passed too)
    only if the evaluation gate, judging the two against each other on the same rows (both cross-fitted),
    finds it better; its verdict is kept as the choice's ``selection``. Two recipes of one kind score
    within noise of each other on a few hundred rows, and the higher of two noisy scores favours the
    noisier recipe: in the efficacy bench (movies->products, 2026-12-04) corpus weight 0.05 outscored 0.2
    (0.657 vs 0.645 on 2,521 rows, 323 cross-fitted) and served 0.600 on the held-out rows; the same
    samples trained at 0.2 serve 0.614-0.628 (docs/training.md)."""
    best = passing[0]
    default = next((c for c in passing if c.kind == best.kind and c.corpus_weight is None), None)
    if best.corpus_weight is None or default is None:
        return best
    cross = best.cross.against(default.cross) if best.cross is not None and default.cross is not None else None
    best.selection = evaluation.check(GateInput(candidate=best.model, champion=default.model,
                                                holdout=evaluation_set(holdout, policy, cross)))
    log.info("%s vs %s (the policy's corpus weight): %s", best.name, default.name, best.selection.reason)
    return best if best.selection.passed else default


def evaluation_set(frame: Frame, policy: PolicyConfig, cross: CrossFit | None = None) -> Holdout:
    """The gate's holdout from :meth:`SampleStore.holdout`: corpus rows (negative ids) and recent reserved
    feedback (positive ids), plus the cross-fitted training samples of ``cross`` (current traffic too).
    With at least ``recent_min`` current rows, they carry :func:`recent_share` of the total weight: the
    evaluation judges a candidate on what it will serve, while the corpus holdout keeps its own per-slice
    no-regression check. Otherwise every row weighs the same."""
    cross_fitted = champion_cross_fitted = None
    if cross is not None:
        offset = len(frame)
        frame = Frame().extend(_rows(frame)).extend(_rows(cross.rows))
        cross_fitted = CrossFitted(rows=range(offset, len(frame)), labels=[label for label, _ in cross.predicted],
                                   confidence=[conf for _, conf in cross.predicted], folds=cross.folds)
        if cross.champion:
            positions = sorted(cross.champion)
            champion_cross_fitted = CrossFitted(
                rows=[offset + n for n in positions], labels=[cross.champion[n][0] for n in positions],
                confidence=[cross.champion[n][1] for n in positions], folds=cross.folds)
    current = [i > 0 for i in frame.ids]
    recent = sum(current)
    base = len(frame) - recent
    weights: list[float] | None = None
    if policy.recent_share > 0 and recent >= policy.recent_min and base > 0:
        share = recent_share(frame, policy)
        per_recent = share * base / ((1 - share) * recent)
        weights = [per_recent if i > 0 else 1.0 for i in frame.ids]
    return Holdout(frame.texts, frame.labels, [s or "" for s in frame.slices], weights, current, cross_fitted,
                   champion_cross_fitted)


def _reweighed(frame: Frame, weight: float | None, policy: PolicyConfig) -> Frame:
    """``frame`` with its corpus rows (negative ids, at ``policy.corpus_weight``) at ``weight`` instead."""
    if weight is None:
        return frame
    factor = weight / policy.corpus_weight
    return Frame().extend((i, t, lbl, w * factor if i < 0 else w, sl) for i, t, lbl, w, sl in _rows(frame))


def _float_tag(tags: Mapping[str, str], name: str, default: float) -> float:
    try:
        return float(tags[name])
    except (KeyError, ValueError):
        return default


def _rows(frame: Frame) -> Iterator[tuple[int, str, str, float, str | None]]:
    return zip(frame.ids, frame.texts, frame.labels, frame.weights, frame.slices, strict=True)


def _columns(frame: Frame) -> tuple[list[str], list[str], list[float]]:
    return frame.texts, frame.labels, frame.weights


def recent_share(frame: Frame, policy: PolicyConfig) -> float:
    """The weight share of current traffic: ``recent_share`` while it falls in slices the corpus holdout
    covers, moving towards ``uncovered_recent_share`` with the fraction that does not (a corpus of movie
    reviews says little about a stream that turned to tweets). Rows without a slice count as covered."""
    covered = {s for i, s in zip(frame.ids, frame.slices, strict=True) if i < 0 and s}
    recent = [s for i, s in zip(frame.ids, frame.slices, strict=True) if i > 0]
    if not covered or not recent:
        return policy.recent_share
    uncovered = sum(1 for s in recent if s and s not in covered) / len(recent)
    return policy.recent_share + max(0.0, policy.uncovered_recent_share - policy.recent_share) * uncovered
