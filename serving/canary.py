"""The canary controller and the champion watchdog: one instance acts across the platform.

Every ``interval_s`` a :class:`CanaryController` takes its own Postgres advisory lock (held elsewhere:
``busy``, nothing done) and, as the lock holder:

1. **Canary.** The registry's ``challenger``, if the models topic announces it as the canary, is judged
   against the champion on joined feedback landed since that ``canary`` event (``variant`` canary /
   champion, ``model_version`` the version of each; correct = ``label = predicted_label`` or thumbs up)
   with :func:`serving.sequential.decide`. ``promote``: :meth:`registry.actions.ModelActions.promote`
   (alias move + ``promote`` event), over the champion measured only (``expected``: an operator's promotion
   or rollback meanwhile stands, :class:`~registry.ChampionChanged`, noted). ``rollback``: the challenger
   alias is cleared, the version tagged, a ``retire`` event sent.
   A canary still on the topic whose challenger alias is gone (a crash between the two) is retired too.
   **A text generator** (task ``text-generation``) has no labels: its canary is judged on ratings, a
   success being a rating of at least ``generation.good_rating`` (4 of 5) or, without a rating, thumbs up
   (the same sequential test: "the canary's ratings fall significantly below the champion's" is its
   ``worse``); and it is retired at once when its error rate since the ``canary`` event exceeds
   ``generation.max_error_rate`` (1%) over at least ``generation.min_requests`` landed predictions. An
   error is a prediction that ended at its deadline (``finish_reason`` ``timeout``: the pods publish a
   cut stream, and a non-streamed request answered 504, as such) or whose generation raised
   (``finish_reason`` ``error``, answered 500; also on the pod's
   ``flywheel_serving_generate_outcomes_total{finish="error"}``, alert rule FlywheelGenerationErrors).
2. **Watchdog.** The champion's online accuracy over the last ``window_s`` (since it became champion, at
   least ``min_samples``) more than ``margin`` below its offline accuracy (on current traffic when its run
   had any: recent reserved and cross-fitted feedback, else the holdout; see :func:`mlflow_run_metric`): a
   rollback to ``previous`` (ModelActions.rollback), or a full ``RetrainRequest`` (trigger ``drift``) when
   so configured or when there is no ``previous``; a retrain is requested once per ``cooldown_s``. Before a
   rollback the previous version is scored on the champion's labelled predictions of the same window: when
   it would have served them no better, the traffic got harder rather than the model worse (concept
   drift: the rainfall demo's refits serve 0.66-0.70 after the drift, below offline figures measured partly
   on the easier days before it, while the static model they replaced serves ~0.55), and a retrain is
   requested instead. The rollback is of the champion judged only (``expected``): a version promoted
   meanwhile stays (:class:`~registry.ChampionChanged`, noted).

Every action is a row of ``canary_decisions`` with its reason, a log line and a metric.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal, Protocol

import psycopg
from prometheus_client import CollectorRegistry, Counter, Gauge
from pydantic import BaseModel, ConfigDict, Field

from core import db
from core.exceptions import ConfigError, FlywheelError
from core.kafka import KafkaConnection
from core.settings import FlywheelSettings
from core.yamlconfig import load_yaml_model
from registry import (
    CHALLENGER,
    CHAMPION,
    PREVIOUS,
    UNCHECKED,
    ChampionChanged,
    Expected,
    ModelRegistry,
    ModelVersionInfo,
    VersionRef,
    registry_backend,
)
from registry.actions import ModelActions
from registry.announce import model_event, read_model_events
from schemas import ModelEvent, RetrainRequest
from serving.exceptions import ServingError
from serving.sequential import Counts, Decision, SequentialConfig, decide
from tasks import ModelStore

log = logging.getLogger(__name__)

OfflineAccuracy = Callable[[ModelVersionInfo], float | None]
Action = Literal["promote", "retire", "rollback", "retrain"]


class Promote(Protocol):
    """:meth:`registry.actions.ModelActions.promote`: ``ref`` becomes the champion, unless the champion is no
    longer ``expected`` (:class:`~registry.ChampionChanged`)."""

    def __call__(self, ref: VersionRef, reason: str, *, expected: Expected = UNCHECKED) -> ModelEvent: ...


class Rollback(Protocol):
    """:meth:`registry.actions.ModelActions.rollback`: ``to`` (None: ``previous``) becomes the champion, unless
    the champion is no longer ``expected`` (:class:`~registry.ChampionChanged`)."""

    def __call__(self, to: VersionRef | None, reason: str, *, expected: Expected = UNCHECKED) -> ModelEvent: ...


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class WatchdogConfig(_Frozen):
    enabled: bool = True
    margin: float = Field(default=0.1, gt=0.0, lt=1.0, description="Online below offline by more than this: act.")
    window_s: float = Field(default=3600.0, gt=0.0, description="Feedback received in this window is judged.")
    min_samples: int = Field(default=200, ge=1, description="Judged champion predictions before acting.")
    action: Literal["rollback", "retrain"] = "rollback"
    cooldown_s: float = Field(default=3600.0, ge=0.0, description="Seconds between retrain requests per champion.")
    offline_accuracy: float | None = Field(
        default=None, ge=0.0, le=1.0, description="Used when the champion's run has no holdout accuracy.")


class GenerationCanaryConfig(_Frozen):
    """How a text generator's canary is judged (ratings, not accuracy) and when its errors retire it."""

    good_rating: int = Field(default=4, ge=1, le=5, description="A rating of at least this is a success.")
    max_error_rate: float = Field(default=0.01, ge=0.0, lt=1.0,
                                  description="Canary predictions that timed out, above this share: retire it.")
    min_requests: int = Field(default=100, ge=1, description="Landed canary predictions before the error rule acts.")


class CanaryConfig(_Frozen):
    interval_s: float = Field(default=30.0, gt=0.0)
    test: SequentialConfig = SequentialConfig()
    watchdog: WatchdogConfig = WatchdogConfig()
    generation: GenerationCanaryConfig = GenerationCanaryConfig()


def load_canary_config(path: Path | None) -> CanaryConfig:
    """``FLYWHEEL_CANARY_CONFIG`` (YAML; unknown keys refused); none = the defaults."""
    return load_yaml_model(CanaryConfig, path, "canary config", ConfigError)


def lock_key(model_name: str) -> int:
    """The canary controller's advisory lock key, apart from the trainer's."""
    return db.advisory_key(f"flywheel.canary:{model_name}")


class CanaryMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        r = registry
        self.accuracy = Gauge("flywheel_online_accuracy", "Online accuracy from joined feedback, per variant",
                              ["model", "variant"], registry=r)
        self.samples = Gauge("flywheel_online_samples", "Judged predictions behind flywheel_online_accuracy",
                             ["model", "variant"], registry=r)
        self.offline = Gauge("flywheel_champion_offline_accuracy", "Holdout accuracy of the champion",
                             ["model"], registry=r)
        self.statistic = Gauge("flywheel_canary_llr", "Log-likelihood ratio of the canary's leading side",
                               ["model"], registry=r)
        self.decisions = Counter("flywheel_canary_decisions", "Sequential test results by verdict",
                                 ["model", "verdict"], registry=r)
        self.actions = Counter("flywheel_canary_actions", "Actions of the canary controller and watchdog",
                               ["model", "action"], registry=r)
        self.ticks = Counter("flywheel_canary_ticks", "Controller ticks by result", ["model", "result"],
                             registry=r)
        self.errors = Gauge("flywheel_canary_error_rate", "A generator canary's share of timed-out predictions",
                            ["model"], registry=r)


@dataclass(frozen=True)
class Acted:
    action: Action
    version: str
    reason: str


@dataclass(frozen=True)
class TickResult:
    status: Literal["busy", "done"]
    decision: Decision | None = None  # the canary's, when one was judged
    acted: tuple[Acted, ...] = field(default=())
    notes: tuple[str, ...] = field(default=())  # why nothing was judged


class CanaryController:
    """Collaborators are injected: ``promote``/``rollback`` are :class:`registry.actions.ModelActions`'s,
    ``publish`` sends a ModelEvent on the models topic, ``request_retrain`` a RetrainRequest on the
    retrain topic, ``events`` reads the models topic, ``offline_accuracy`` a version's holdout accuracy."""

    def __init__(self, *, db_url: str, model_name: str, registry: ModelRegistry, config: CanaryConfig,
                 promote: Promote,
                 rollback: Rollback,
                 publish: Callable[[ModelEvent], ModelEvent],
                 request_retrain: Callable[[RetrainRequest], None],
                 events: Callable[[], Sequence[ModelEvent]],
                 offline_accuracy: OfflineAccuracy,
                 metrics: CanaryMetrics | None = None,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC),
                 task: str = "text-classification") -> None:
        self.db_url, self.model_name, self.registry, self.config = db_url, model_name, registry, config
        self.task = task
        # a generator's feedback is judged by its ratings (success: rating >= good_rating, or thumbs up)
        self._good_rating = config.generation.good_rating if task == "text-generation" else None
        self.promote, self.rollback, self.publish = promote, rollback, publish
        self.request_retrain, self.events, self.offline_accuracy = request_retrain, events, offline_accuracy
        self.metrics = metrics or CanaryMetrics(CollectorRegistry())
        self.clock = clock
        self._paired_cache: dict[tuple[str, str], tuple[datetime, tuple[Counts, Counts] | None]] = {}

    def run(self, stop: threading.Event) -> None:
        """Tick every ``interval_s`` until ``stop`` is set; a failed tick is logged and retried."""
        while not stop.is_set():
            try:
                self.tick()
            except FlywheelError:
                self.metrics.ticks.labels(self.model_name, "error").inc()
                log.exception("canary controller tick failed; retrying in %.0fs", self.config.interval_s)
            stop.wait(self.config.interval_s)

    def tick(self) -> TickResult:
        """One look, as the lock holder (else ``busy``). Postgres errors surface as :class:`ServingError`."""
        try:
            return self._tick()
        except psycopg.Error as exc:
            raise ServingError(f"canary controller of {self.model_name!r}: {' '.join(str(exc).split())}") from exc

    def _tick(self) -> TickResult:
        with (db.connect(self.db_url, autocommit=True) as conn,
              db.try_advisory_lock(conn, lock_key(self.model_name)) as held):
            if not held:
                self.metrics.ticks.labels(self.model_name, "busy").inc()
                return TickResult("busy")
            events = [e for e in self.events() if e.model == self.model_name]
            decision, acted, notes = self._canary(conn, events)
            if self.config.watchdog.enabled:
                watched, note = self._watchdog(conn, events)
                acted += watched
                notes += note
            self.metrics.ticks.labels(self.model_name, "done").inc()
            return TickResult("done", decision, tuple(acted), tuple(notes))

    # -- the canary --------------------------------------------------------------------------------
    def _canary(self, conn: _Conn, events: list[ModelEvent]) -> tuple[Decision | None, list[Acted], list[str]]:
        aliases = self.registry.aliases()
        canary = _announced_canary(events)
        challenger, champion = aliases.get(CHALLENGER), aliases.get(CHAMPION)
        if canary is not None and canary.version not in (challenger, champion):
            reason = f"canary {canary.semver} is no longer the challenger"  # its alias went, its event did not
            return None, [self._retire(conn, canary.version, reason, None, None)], []
        if challenger is None or champion is None:
            return None, [], ["no challenger" if challenger is None else "no champion"]
        if canary is None or canary.version != challenger:
            return None, [], [f"challenger {challenger} is not announced as the canary"]
        since = canary.ts
        if self.task == "text-generation":
            failing = self._error_rate(conn, challenger, since)
            if failing is not None:
                return None, [self._retire(conn, challenger, failing, None, None)], []
        champion_counts = _counts(conn, self.model_name, "champion", champion, since, self._good_rating)
        canary_counts = _counts(conn, self.model_name, "canary", challenger, since, self._good_rating)
        m, name = self.metrics, self.model_name
        for variant, counts in (("champion", champion_counts), ("canary", canary_counts)):
            m.samples.labels(name, variant).set(counts.n)
            if counts.n:
                m.accuracy.labels(name, variant).set(counts.accuracy)
        decision = decide(champion_counts, canary_counts, self.config.test)
        m.statistic.labels(name).set(decision.statistic)
        m.decisions.labels(name, decision.verdict).inc()
        log.debug("canary %s: %s", challenger, decision.reason)
        if decision.verdict == "promote":
            try:  # over the champion it was measured against only: an operator's move meanwhile stands
                self.promote(challenger, f"canary: {decision.reason}", expected=champion)
            except ChampionChanged as exc:
                return decision, [], [f"canary: no promotion: {exc}"]
            return decision, [self._record(conn, "promote", challenger, champion, decision.reason, decision,
                                           champion_counts, canary_counts)], []
        if decision.verdict == "rollback":
            return decision, [self._retire(conn, challenger, decision.reason, decision, (champion_counts,
                                                                                           canary_counts))], []
        return decision, [], []

    def _error_rate(self, conn: _Conn, canary: str, since: datetime) -> str | None:
        """Why the generator canary must go (its share of timed-out or failed predictions since ``since`` is
        above the limit), or None."""
        cfg = self.config.generation
        row = conn.execute(
            "SELECT count(*), count(*) FILTER (WHERE output->>'finish_reason' IN ('timeout', 'error')) "
            "FROM predictions "
            "WHERE model = %s AND variant = 'canary' AND model_version = %s AND ts >= %s",
            (self.model_name, canary, since)).fetchone()
        n, errors = (0, 0) if row is None else (int(row[0]), int(row[1]))
        self.metrics.errors.labels(self.model_name).set(errors / n if n else 0.0)
        if n < cfg.min_requests or errors / n <= cfg.max_error_rate:
            return None
        return (f"canary error rate {errors / n:.2%} ({errors} of {n} predictions timed out or failed) is above "
                f"{cfg.max_error_rate:.2%}")

    def _retire(self, conn: _Conn, version: str, reason: str, decision: Decision | None,
                counts: tuple[Counts, Counts] | None) -> Acted:
        """Alias first (the commit point), then the event: a crash between is healed by the next tick."""
        if self.registry.aliases().get(CHALLENGER) == version:
            self.registry.delete_alias(CHALLENGER)
        self.registry.set_tag(version, "canary_retired", reason[:500])
        info = self.registry.get(version)
        self.publish(model_event(info, self.model_name, "retire", 0.0, f"canary: {reason}"))
        champion = self.registry.aliases().get(CHAMPION)
        return self._record(conn, "retire", version, champion, reason, decision, *(counts or (None, None)))

    # -- the watchdog ------------------------------------------------------------------------------
    def _watchdog(self, conn: _Conn, events: list[ModelEvent]) -> tuple[list[Acted], list[str]]:
        cfg = self.config.watchdog
        info = self.registry.champion()
        if info is None:
            return [], []
        now = self.clock()
        since = max(_became_champion(events, info.version) or info.created_at, now - timedelta(seconds=cfg.window_s))
        online = _counts(conn, self.model_name, "champion", info.version, since, self._good_rating)
        offline = self.offline_accuracy(info)
        offline = cfg.offline_accuracy if offline is None else offline
        name = self.model_name
        if offline is not None:
            self.metrics.offline.labels(name).set(offline)
        if online.n < cfg.min_samples:
            return [], [f"watchdog: {online.n} champion samples in the window (< {cfg.min_samples})"]
        if offline is None:
            return [], [f"watchdog: no offline accuracy for champion {info.semver}"]
        if online.accuracy >= offline - cfg.margin:
            return [], []
        reason = (f"champion {info.semver} online accuracy {online.accuracy:.4f} ({online.correct}/{online.n} "
                  f"since {since.astimezone(UTC):%Y-%m-%dT%H:%M:%SZ}) is more than "
                  f"{cfg.margin} below its offline {offline:.4f}")
        previous = self.registry.aliases().get(PREVIOUS)
        if cfg.action == "rollback" and previous is not None:
            paired = self._paired(conn, info.version, previous, since, now)
            if paired is None or paired[1].correct > paired[0].correct:
                try:  # only the champion judged: a version promoted meanwhile is not rolled back for it
                    self.rollback(previous, f"watchdog: {reason}", expected=info.version)
                except ChampionChanged as exc:
                    return [], [f"watchdog: no rollback: {exc}"]
                return [self._record(conn, "rollback", info.version, info.version, reason, None, online, None)], []
            champion, earlier = paired
            reason += (f"; the previous version {previous} would have served the same {champion.n} labelled "
                       f"predictions no better ({earlier.correct} right vs {champion.correct}): the traffic got "
                       f"harder, not the model worse, so no rollback")
        elif cfg.action == "rollback":
            reason += "; no previous champion to roll back to"
        if self._recent_retrain(conn, info.version, now - timedelta(seconds=cfg.cooldown_s)):
            return [], [f"watchdog: retrain already requested for {info.semver} within {cfg.cooldown_s:.0f}s"]
        self.request_retrain(RetrainRequest(ts=now, model=name, mode="full", trigger="drift",
                                            reason=f"watchdog: {reason}"[:2000]))
        return [self._record(conn, "retrain", info.version, info.version, reason, None, online, None)], []

    def _paired(self, conn: _Conn, champion: str, previous: str, since: datetime, now: datetime
                ) -> tuple[Counts, Counts] | None:
        """:meth:`_previous_on_window`, computed at most once a minute per (champion, previous): it loads a
        model and predicts the window."""
        key = (champion, previous)
        cached = self._paired_cache.get(key)
        if cached is None or now - cached[0] >= timedelta(seconds=60):
            self._paired_cache = {key: (now, self._previous_on_window(conn, champion, previous, since))}
        return self._paired_cache[key][1]

    def _previous_on_window(self, conn: _Conn, champion: str, previous: str, since: datetime
                            ) -> tuple[Counts, Counts] | None:
        """(champion, previous version) right answers on the champion's labelled predictions of the window:
        would rolling back serve the same traffic better? None when the previous version cannot be scored
        (the rollback then goes ahead, as before this check)."""
        rows = conn.execute(
            "SELECT p.text, p.input, f.label, f.predicted_label FROM feedback f JOIN predictions p "
            "ON p.prediction_id = f.prediction_id WHERE f.status = 'joined' AND f.model = %s AND f.variant = "
            "'champion' AND f.model_version = %s AND f.received_at >= %s AND f.label IS NOT NULL",
            (self.model_name, champion, since)).fetchall()
        inputs: list[Any] = [text if text is not None else (stored or {}).get("features", stored)
                             for text, stored, *_ in rows]
        if not rows or any(i is None for i in inputs):
            return None
        try:
            model = self.registry.load(previous)
            proba = model.predict_proba(inputs)
        except (FlywheelError, ValueError, TypeError, KeyError) as exc:
            log.warning("watchdog: cannot score the previous version %s on the window: %s", previous, exc)
            return None
        answers = [model.labels[int(i)] for i in proba.argmax(axis=1)]
        right = sum(1 for a, (*_, label, _p) in zip(answers, rows, strict=True) if a == label)
        return Counts(len(rows), sum(1 for *_, label, served in rows if label == served)), Counts(len(rows), right)

    def _recent_retrain(self, conn: _Conn, version: str, after: datetime) -> bool:
        row = conn.execute("SELECT 1 FROM canary_decisions WHERE model_name = %s AND action = 'retrain' "
                           "AND version = %s AND decided_at >= %s LIMIT 1", (self.model_name, version, after)
                           ).fetchone()
        return row is not None

    # -- the record --------------------------------------------------------------------------------
    def _record(self, conn: _Conn, action: Action, version: str, champion: str | None, reason: str,
                decision: Decision | None, champion_counts: Counts | None, canary_counts: Counts | None) -> Acted:
        lower, upper = decision.thresholds if decision else (None, None)
        conn.execute(
            "INSERT INTO canary_decisions (model_name, action, verdict, version, champion_version, statistic, "
            "lower_threshold, upper_threshold, champion_n, champion_correct, canary_n, canary_correct, reason) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
            (self.model_name, action, decision.verdict if decision else None, version, champion,
             decision.statistic if decision else None, lower, upper,
             *((champion_counts.n, champion_counts.correct) if champion_counts else (None, None)),
             *((canary_counts.n, canary_counts.correct) if canary_counts else (None, None)), reason[:4000]))
        self.metrics.actions.labels(self.model_name, action).inc()
        log.info("%s %s of %s: %s", action, version, self.model_name, reason)
        return Acted(action, version, reason)


_Conn = psycopg.Connection[tuple[Any, ...]]


def controller_for(settings: FlywheelSettings, kafka: KafkaConnection, database_url: str, config: CanaryConfig, *,
                   actions: ModelActions, offline_accuracy: OfflineAccuracy | None = None,
                   metrics: CanaryMetrics | None = None, task: str | None = None) -> CanaryController:
    """A controller acting through ``actions`` (its registry, alias moves announced by its announcer,
    retrain requests on its topic), reading the models topic through ``kafka``. The champion's offline
    accuracy defaults to :func:`mlflow_run_metric` of the MLflow run holding its version; ``task`` to the
    model's declared task (a model not declared is the default text classifier)."""
    topic = settings.topics.models
    return CanaryController(
        task=task or _declared_task(database_url, settings.model_name),
        db_url=database_url, model_name=settings.model_name, registry=actions.registry, config=config,
        promote=actions.promote, rollback=actions.rollback, publish=actions.announcer.publish,
        request_retrain=actions.request_retrain, events=lambda: read_model_events(kafka, topic),
        offline_accuracy=offline_accuracy or mlflow_run_metric(registry_backend(settings, database_url)),
        metrics=metrics)


def _declared_task(database_url: str, model_name: str) -> str:
    try:
        with db.connect(database_url, autocommit=True) as conn:
            spec = ModelStore(conn).get(model_name)
    except psycopg.Error as exc:
        raise ServingError(f"canary controller of {model_name!r}: cannot read its declaration: "
                           f"{' '.join(str(exc).split())}") from exc
    return spec.task if spec is not None else "text-classification"


def mlflow_run_metric(backend: str, metrics: Sequence[str] = ("current_accuracy", "holdout_accuracy")
                      ) -> OfflineAccuracy:
    """Reads the first of ``metrics`` that the MLflow run that registered a version has (the trainer logs the
    evaluation gate's metrics there). ``current_accuracy`` is the accuracy on current traffic (recent
    reserved and cross-fitted feedback): what online accuracy measures too. Under drift the whole holdout
    (mostly the bootstrap corpus) says how the model does on yesterday's traffic, so comparing online accuracy
    with it would roll back a model that is better where it serves; it is the fallback for runs with no
    current traffic (a bootstrap). ``ModelVersionInfo`` does not carry metrics and ``ModelRegistry`` has no hook
    for them, so this opens its own client on the registry's backend; an unreadable run gives ``None``."""
    found: dict[str, float | None] = {}  # a registered version's metrics never change

    def read(info: ModelVersionInfo) -> float | None:
        if info.run_id is None:
            return None
        if info.run_id not in found:
            found[info.run_id] = _read_run_metric(backend, info.run_id, metrics)
        return found[info.run_id]

    return read


def _read_run_metric(backend: str, run_id: str, metrics: Sequence[str]) -> float | None:
    from registry._offline import IMPORT_LOCK, go_offline  # before MLflow is imported: no telemetry

    with IMPORT_LOCK:
        go_offline()
        from mlflow import MlflowClient
        from mlflow.exceptions import MlflowException

    try:
        logged = MlflowClient(tracking_uri=backend).get_run(run_id).data.metrics
    except MlflowException as exc:
        log.warning("cannot read the metrics of MLflow run %s: %s", run_id, exc.message)
        return None
    value = next((logged[m] for m in metrics if logged.get(m) is not None), None)
    return None if value is None else float(value)


def _counts(conn: _Conn, model: str, variant: str, version: str, since: datetime,
            good_rating: int | None = None) -> Counts:
    """Joined feedback of one arm: right = the label predicted or thumbs up; with ``good_rating`` (a
    generator) only rated or thumbed feedback is judged, right = a rating >= it or, unrated, thumbs up."""
    if good_rating is None:
        row = conn.execute(
            "SELECT count(*), count(*) FILTER (WHERE label = predicted_label OR thumbs = 'up') FROM feedback "
            "WHERE status = 'joined' AND model = %s AND variant = %s AND model_version = %s AND received_at >= %s",
            (model, variant, version, since)).fetchone()
    else:
        row = conn.execute(
            "SELECT count(*), count(*) FILTER (WHERE rating >= %s OR (rating IS NULL AND thumbs = 'up')) "
            "FROM feedback WHERE status = 'joined' AND model = %s AND variant = %s AND model_version = %s "
            "AND received_at >= %s AND (rating IS NOT NULL OR thumbs IS NOT NULL)",
            (good_rating, model, variant, version, since)).fetchone()
    return Counts(0, 0) if row is None else Counts(int(row[0]), int(row[1]))


def _announced_canary(events: list[ModelEvent]) -> ModelEvent | None:
    """The ``canary`` event of the canary the topic currently announces, if any (as registry.announce.fold)."""
    canary: ModelEvent | None = None
    for event in events:
        if event.action == "canary":
            canary = event
        elif event.action in ("promote", "rollback") or (canary is not None and event.version == canary.version):
            canary = None
    return canary


def _became_champion(events: list[ModelEvent], version: str) -> datetime | None:
    found = [e.ts for e in events if e.version == version and e.action in ("promote", "rollback")]
    return found[-1] if found else None

