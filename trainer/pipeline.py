"""Run control: whether to train and who may. Single flight per model (a Postgres advisory lock); every
run is recorded, refused or not; a run left ``running`` by a crashed holder is settled by the next one.
A started run's steps are :mod:`trainer.steps`'."""

from __future__ import annotations

import functools
import hashlib
import logging
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

from core.db import Connector
from curation.pairs import ToxicityScorer
from kinds.base import Resources
from kinds.base_models import load_base
from kinds.generation import GeneratorResources, Pair
from registry import CHALLENGER, CHAMPION, PREVIOUS, ModelRegistry, ModelVersionInfo, deploys
from registry.announce import ModelAnnouncer, ModelState
from schemas import ModelEvent
from tasks import TASKS, FeatureSchema, Task
from trainer.announcing import Announcing
from trainer.config import TrainerConfig
from trainer.data import CorpusRow, SampleStore, Snapshot, split_holdout, store_corpus
from trainer.exceptions import TrainerError
from trainer.frames import TrainingFrames, evaluation_set
from trainer.gates import GateInput, Verdict, build_gates
from trainer.generation import GenerationSteps, GeneratorRun
from trainer.metrics import TrainerMetrics
from trainer.pairs import PairStore, store_pair_corpus
from trainer.policy import Decision, Mode, Trigger, decide
from trainer.recipes import Recipes
from trainer.runs import RunLog, RunResult, single_flight
from trainer.steps import RunSteps, Started

__all__ = ["MAX_FAILURES", "Trainer"]

log = logging.getLogger(__name__)
MAX_FAILURES = 3  # failed runs on one snapshot before the trainer waits for new data or an operator


class Trainer:
    """Trains one model name. Collaborators are injected: the connection factory, the registry, the
    announcer, the resources every model it creates or loads is bound to (the MiniLM embedder), and the
    clock that stamps its announcements."""

    def __init__(self, *, connector: Connector, model_name: str, labels: Sequence[str], config: TrainerConfig,
                 registry: ModelRegistry, announcer: ModelAnnouncer, resources: Resources, work_dir: Path,
                 task: Task | None = None, features: FeatureSchema | None = None,
                 metrics: TrainerMetrics | None = None,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC),
                 generator_resources: Callable[[str], GeneratorResources] | None = None,
                 toxicity: Callable[[], ToxicityScorer] | None = None, description: str = "") -> None:
        self.connector = connector
        self.model_name = model_name
        self.labels = tuple(labels)
        self.task = task or TASKS["text-classification"]
        self.features = features
        self.config = config
        self.registry = registry
        self.announcer = announcer
        self.resources = resources
        self.work_dir = work_dir
        self.clock = clock
        self.metrics = metrics or TrainerMetrics(CollectorRegistry())
        self.quality, self.evaluation, self.behaviour = build_gates(config.gates)
        self.frames = TrainingFrames(config.policy)
        self.recipes = Recipes(registry, resources, config.policy, features)
        self.announcing = Announcing(model_name, registry, announcer, config.promotion, clock)
        self.steps = RunSteps(labels=self.labels, features=features, policy=config.policy, registry=registry,
                              quality=self.quality, evaluation=self.evaluation, behaviour=self.behaviour,
                              frames=self.frames, recipes=self.recipes, announcing=self.announcing, scratch=work_dir)
        # a generator's runs (task text-generation): its own steps, on the base models of the data dir
        self.generation = GenerationSteps(
            model_name=model_name, config=config, registry=registry, announcer=announcer,
            resources=generator_resources or functools.partial(_generator_resources, work_dir.parent),
            toxicity=toxicity or _toxicity_check, scratch=work_dir, clock=clock, description=description,
        ) if self.task.name == "text-generation" else None

    # -- entry -------------------------------------------------------------------------------------
    def maybe_train(self, trigger: Trigger, *, requested: Mode | None = None,
                    kinds: Sequence[str] | None = None, request_id: str | None = None,
                    force_deploy: bool = False) -> RunResult:
        """Train if the policy says so and nobody else is; safe to call on every signal. A
        ``request_id`` (of a RetrainRequest) starts at most one run, however often it is replayed.
        ``force_deploy`` (an operator's, generators only) deploys a candidate that failed a gate; every
        verdict is still recorded, and the version is tagged ``force_deployed``."""
        started = time.perf_counter()
        result = self._maybe_train(trigger, requested, kinds, request_id, force_deploy)
        self._observe(result, trigger, time.perf_counter() - started)
        return result

    def bootstrap(self, rows: Sequence[CorpusRow], *, source: str, kind: str, holdout_fraction: float = 0.2,
                  force: bool = False, request_id: str | None = None) -> RunResult:
        """Train the first model from a labelled corpus and make it the champion (``promote`` event).

        The corpus replaces any stored one: its holdout split becomes the fixed base holdout, its train
        split joins every full retrain. With a champion in place it refuses unless ``force`` (a new
        champion from scratch, e.g. on a new label set)."""
        with self._bootstrap_slot(force) as slot:
            if slot is None:
                return RunResult("busy", "another trainer holds this model's lock")
            conn, runs, champion = slot
            store = self._store(conn)
            with conn.transaction():
                train, holdout_rows = split_holdout(rows, holdout_fraction, self.config.policy.seed)
                store_corpus(conn, source, train, holdout_rows, model=self.model_name)
            frame, holdout = store.corpus("train"), store.holdout(self.config.policy.holdout_recent)
            decision = Decision("bootstrap", f"bootstrap from {source} ({len(frame)} train / {len(holdout)} holdout)")
            snapshot = Snapshot(watermark=0, count=0)
            return self._bootstrap_run(runs, champion, request_id, lambda run_id: self.steps.run(
                Started(runs, store, run_id, decision, snapshot, champion, "bootstrap"),
                [kind], frame=frame, holdout=holdout))

    def evaluate(self, ref: str | None = None) -> list[Verdict]:
        """The evaluation and behavioural verdicts of ``ref`` (default: the challenger, else the champion)
        against the champion (the champion against ``previous``), on the current holdout. Changes nothing."""
        champion = self.champion()
        if ref is None:
            ref = CHALLENGER if CHALLENGER in self.registry.aliases() else CHAMPION
        info = self.registry.get(ref)
        if self.generation is not None:
            with self.connector() as conn:
                references = self._pairs(conn).holdout(self.config.policy.holdout_recent)
            return self.generation.evaluate(info.version, references)
        model = self.recipes.load(info.version)
        against = champion if champion and champion.version != info.version else None
        if against is None and PREVIOUS in self.registry.aliases():  # the champion itself: against its predecessor
            against = self.registry.get(PREVIOUS)
        baseline = self.recipes.load(against.version) if against is not None else None
        with self.connector() as conn:
            frame = self._store(conn).holdout(self.config.policy.holdout_recent)
        holdout = evaluation_set(frame, self.config.policy)
        return [self.evaluation.check(GateInput(candidate=model, champion=baseline, holdout=holdout)),
                self.behaviour.check(GateInput(candidate=model, features=self.features))]

    def reconcile_announcements(self, announced: dict[str, ModelState]) -> list[ModelEvent]:
        """Re-announce what the registry says but the models topic (folded into ``announced``) does not."""
        return self.announcing.reconcile(announced)

    def recent_runs(self, limit: int = 20) -> list[dict[str, Any]]:
        with self.connector() as conn:
            return RunLog(conn, self.model_name).recent(limit)

    def find_run(self, ref: str) -> dict[str, Any] | None:
        """A training run of this model by run id or retrain-request id (``None``: no such run yet)."""
        with self.connector() as conn:
            return RunLog(conn, self.model_name).find(ref)

    def champion(self) -> ModelVersionInfo | None:
        return self.registry.champion()

    def bootstrap_pairs(self, pairs: Sequence[Pair], *, source: str, kind: str | None = None,
                        holdout_fraction: float = 0.2, force: bool = False, force_deploy: bool = False,
                        request_id: str | None = None) -> RunResult:
        """A generator's first model from a corpus of pairs (the corpus replaces any stored one: its
        holdout split becomes the fixed held-out references). The first model deploys (promoted) when its
        absolute gates (toxicity, latency) pass; with a champion in place it refuses unless ``force``."""
        generation = self.generation
        if generation is None:
            raise TrainerError(f"{self.model_name} is a {self.task.name} model: bootstrap it from a labelled corpus")
        with self._bootstrap_slot(force) as slot:
            if slot is None:
                return RunResult("busy", "another trainer holds this model's lock")
            conn, runs, champion = slot
            ordered = sorted(pairs, key=lambda p: hashlib.sha256(
                f"{self.config.policy.seed}\x1f{p.prompt.prompt}\x1f{p.response}".encode()).digest())
            n_holdout = max(1, round(len(ordered) * holdout_fraction)) if len(ordered) > 1 else 0
            train, holdout = ordered[n_holdout:], ordered[:n_holdout]
            with conn.transaction():
                store_pair_corpus(conn, source, train, holdout, model=self.model_name)
            store = self._pairs(conn)
            reason = f"bootstrap from {source} ({len(train)} train / {len(holdout)} held-out pairs)"
            return self._bootstrap_run(runs, champion, request_id, lambda run_id: generation.run(GeneratorRun(
                runs, store, run_id, "bootstrap", "bootstrap", reason, 0, 0, champion, train,
                store.holdout(self.config.policy.holdout_recent), source=source),
                [kind] if kind else None, force=force_deploy))

    @contextmanager
    def _bootstrap_slot(self, force: bool) -> Iterator[tuple[Any, RunLog, ModelVersionInfo | None] | None]:
        """This model's lock for a bootstrap: ``None`` when another trainer holds it, else the connection,
        the run log (abandoned runs cleaned) and the champion, refused unless ``force`` when there is one."""
        with self.connector() as conn, single_flight(conn, self.model_name) as held:
            if not held:
                yield None
                return
            runs = RunLog(conn, self.model_name)
            self._clean_abandoned(runs)
            champion = self.champion()
            if champion is not None and not force:
                raise TrainerError(f"{self.model_name} already has a champion ({champion.semver}); "
                                   "retrain with `flywheel retrain`, or bootstrap with --force")
            yield conn, runs, champion

    def _bootstrap_run(self, runs: RunLog, champion: ModelVersionInfo | None, request_id: str | None,
                       train: Callable[[uuid.UUID], RunResult]) -> RunResult:
        """Record a bootstrap run and train it; a failure is recorded on the run, not raised."""
        run_id = runs.start(trigger="bootstrap", mode="bootstrap", snapshot=Snapshot(watermark=0, count=0),
                            parent=champion.version if champion else None, request_id=request_id)
        try:
            started = time.perf_counter()
            result = train(run_id)
            self._observe(result, "bootstrap", time.perf_counter() - started)
            return result
        except Exception as exc:
            reason = f"{type(exc).__name__}: {exc}"
            log.exception("bootstrap run %s failed", run_id)
            runs.finish(run_id, status="failed", reason=reason)
            return RunResult("failed", reason, run_id, "bootstrap")

    def _pairs(self, conn: Any) -> PairStore:
        return PairStore(conn, self.config.policy.holdout_percent, model=self.model_name)

    def _store(self, conn: Any) -> SampleStore:
        return SampleStore(conn, self.config.policy.holdout_percent, model=self.model_name, task=self.task)

    # -- control -----------------------------------------------------------------------------------
    def _maybe_train(self, trigger: Trigger, requested: Mode | None, kinds: Sequence[str] | None,
                     request_id: str | None, force_deploy: bool = False) -> RunResult:
        if force_deploy and self.generation is None:
            raise TrainerError("force_deploy is for generators: a classifier deploys only past its gates")
        with self.connector() as conn, single_flight(conn, self.model_name) as held:
            if not held:
                return RunResult("busy", "another trainer holds this model's lock")
            runs = RunLog(conn, self.model_name)
            self._clean_abandoned(runs)
            if request_id is not None and (done := runs.for_request(request_id)) is not None:
                return RunResult("skipped", f"request {request_id} already handled: {done}")
            store = self._store(conn)
            pairs = self._pairs(conn) if self.generation is not None else None
            snapshot = pairs.snapshot() if pairs is not None else store.snapshot()
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
                if self.generation is not None and pairs is not None:
                    train, replayed = self.generation.pairs(pairs, decision.mode, snapshot.watermark, champion)
                    return self.generation.run(GeneratorRun(
                        runs, pairs, run_id, decision.mode, trigger, decision.reason, snapshot.watermark,
                        snapshot.count, champion, train, pairs.holdout(self.config.policy.holdout_recent), replayed),
                        kinds, force=force_deploy)
                return self.steps.run(Started(runs, store, run_id, decision, snapshot, champion, trigger), kinds)
            except Exception as exc:
                # one failed run must not stop the trainer: recorded, logged, and the next signal retries
                reason = f"{type(exc).__name__}: {exc}"
                log.exception("run %s failed", run_id)
                runs.finish(run_id, status="failed", reason=reason)
                return RunResult("failed", reason, run_id, decision.mode)

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
                deploys.forget_version(runs.conn, self.model_name, info.version)
        runs.abandon(stale)

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


def _generator_resources(data_dir: Path, base: str) -> GeneratorResources:
    """The shared base model ``base``, prepared in (and loaded from) ``data_dir`` once per process."""
    return GeneratorResources(base=load_base(base, data_dir))


def _toxicity_check() -> ToxicityScorer:
    """The platform's toxicity check (curation.toxicity), imported when a generator is first measured."""
    from curation.toxicity import ToxicityCheck  # loads its classifier: only when a generator is measured

    return ToxicityCheck()
