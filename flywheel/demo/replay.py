"""The :class:`Replay` drives one stream through the serving API and records it in a :class:`Timeline`."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from core import db
from core.exceptions import ConfigError
from core.kafka import KafkaConnection
from core.settings import FlywheelSettings
from flywheel import models
from flywheel.demo import rainfall
from flywheel.demo.options import SCENARIOS, DemoOptions
from flywheel.demo.stream import Crowd, Row, split_target
from flywheel.demo.timeline import Marker, Step, Timeline
from registry import deploys
from tasks import parse_spec

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Answer:
    step: int
    prediction_id: str
    label: str
    kind: str  # honest | noisy | poison
    user: str


class Replay:
    """Drives one stream through a running platform's API and watches its decisions in Postgres."""

    def __init__(self, options: DemoOptions, settings: FlywheelSettings, serving_url: str, database_url: str,
                 kafka: KafkaConnection) -> None:
        if options.scenario not in SCENARIOS:
            raise ConfigError(f"scenario {options.scenario!r} is not one of {sorted(SCENARIOS)}")
        self.options, self.scenario = options, SCENARIOS[options.scenario]
        self.serving_url, self.database_url, self.kafka = serving_url, database_url, kafka
        self.drift_at: int | None = None  # the stream step where a known drift begins
        if self.scenario.task == "tabular-classification":
            # the model the scenario declares (demo_settings put it in models.yaml); its settings view
            self.settings = models.settings_for(settings, parse_spec(rainfall.spec(options)))
            self.history, self.stream, self.holdout, self.target = rainfall.split(options)
            self.domain: str | None = None
            if options.start <= rainfall.DRIFT < options.start + options.stream:
                self.drift_at = rainfall.DRIFT - options.start
        else:
            self.settings = settings
            self.stream, self.holdout = split_target(self.scenario.target, options.eval_fraction, options.seed)
            self.history = []
            self.target = self.stream  # every target row outside the holdout (what an oracle may learn from)
            self.stream = self.stream[:options.stream]
            self.domain = self.scenario.target.removeprefix("vader_")  # the slice its predictions carry
        self.model_name = self.settings.model_name
        self.route = f"/v1/models/{self.model_name}"
        self.crowd = Crowd(options, self.settings.labels)
        self.timeline = Timeline(options, drift_at=self.drift_at)
        self.http = httpx.Client(base_url=serving_url, timeout=30.0)
        self._models: dict[str, Any] = {}
        self._registry: Any = None
        self._resources: Any = None
        self.static_version: str | None = None
        self.sent_feedback = 0
        self._due: deque[_Answer] = deque()  # judged predictions whose answer is not sent yet
        self._position: dict[int, int] = {}  # stream step -> its index in timeline.steps

    def close(self) -> None:
        self.http.close()

    # -- the platform's state ------------------------------------------------------------------------
    def wait_ready(self, timeout: float = 900.0, stop: threading.Event | None = None) -> str:
        """Block until the API serves a champion; its version."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not (stop and stop.is_set()):
            with contextlib.suppress(httpx.HTTPError):
                answer = self.http.get(self.route)
                champion = answer.json()["deployment"]["champion"] if answer.status_code == 200 else None
                if champion is not None:
                    return str(champion["version"])
            time.sleep(0.5)
        raise TimeoutError(f"no champion served at {self.serving_url} within {timeout:.0f}s")

    def model(self, version: str) -> Any:
        """A registered version, loaded (and verified) from the registry, for offline scoring."""
        if version not in self._models:
            if self._registry is None:
                from kinds import Embedder, MemoryEmbeddingCache, Resources, shared_encoder
                from registry import open_from_settings

                self._registry = open_from_settings(self.settings, self.database_url)
                # one embedding cache for every version scored: a holdout text is encoded once
                self._resources = (Resources() if self.scenario.task != "text-classification"
                                   else Resources(embedder=Embedder(shared_encoder(), MemoryEmbeddingCache())))
            self._models[version] = self._registry.load(version, self._resources)
        return self._models[version]

    def accuracy(self, version: str, rows: Sequence[Row] | None = None) -> float:
        return self.accuracy_of(self.model(version), rows)

    def accuracy_of(self, model: Any, rows: Sequence[Row] | None = None) -> float:
        """A model's accuracy on ``rows`` (default: the held-out rows)."""
        rows = self.holdout if rows is None else rows
        proba = model.predict_proba([r.text for r in rows])
        right = sum(1 for p, r in zip(proba, rows, strict=True) if model.labels[int(p.argmax())] == r.label)
        return right / len(rows)

    def champion(self) -> tuple[str, str]:
        deployment = self.http.get(self.route).json()["deployment"]["champion"]
        return str(deployment["version"]), str(deployment["semver"])

    def poll_runs(self) -> list[dict[str, Any]]:
        """Finished training runs not seen yet, oldest first (and their markers)."""
        seen = {r["run_id"] for r in self.timeline.runs}
        with db.connect(self.database_url, autocommit=True) as conn:
            rows = conn.execute(
                "SELECT run_id::text, trigger, mode, status, reason, version, kind, sample_count, duration_s, "
                "candidates, extract(epoch FROM finished_at) FROM training_runs WHERE model_name = %s "
                "AND status <> 'running' ORDER BY id", (self.model_name,)).fetchall()
        names = ["run_id", "trigger", "mode", "status", "reason", "version", "kind", "sample_count", "duration_s",
                 "candidates", "finished"]
        new = [dict(zip(names, r, strict=True)) for r in rows if r[0] not in seen]
        for run in new:
            run["finished"] = float(run["finished"] or time.time())
            self.timeline.runs.append(run)
            if run["status"] in ("refused", "failed"):
                i = self.timeline.step_at(run["finished"])
                self.timeline.markers.append(Marker(i, run["finished"] - self.timeline.started, run["status"],
                                                    "", str(run["reason"])[:300]))
        return new

    def running(self) -> bool:
        with db.connect(self.database_url, autocommit=True) as conn:
            row = conn.execute("SELECT count(*) FROM training_runs WHERE model_name = %s AND status = 'running'",
                               (self.model_name,)).fetchone()
        return bool(row and row[0])

    def collect_events(self) -> None:
        """Promotions, rollbacks and canaries from the models topic, placed on the timeline."""
        from registry.announce import read_model_events

        kept = [m for m in self.timeline.markers if m.action in ("refused", "failed")]
        for event in read_model_events(self.kafka, self.settings.topics.models):
            if event.model != self.model_name:
                continue
            when = event.ts.timestamp()
            if when < self.timeline.started:
                continue  # the bootstrap champion
            kept.append(Marker(self.timeline.step_at(when), when - self.timeline.started, event.action,
                               event.semver, event.reason[:300]))
        self.timeline.markers = sorted(kept, key=lambda m: m.t)

    def settle(self, timeout: float = 120.0, quiet: float = 8.0) -> None:
        """Wait until the trainer has had its say on everything sent so far: every feedback landed and
        curated, no run under way and none started for ``quiet`` seconds since, and the pod serves the
        registry's champion."""
        deadline = time.monotonic() + timeout
        calm_since = time.monotonic()
        seen = len(self.timeline.runs)
        while time.monotonic() < deadline:
            self.poll_runs()
            if (self.running() or len(self.timeline.runs) != seen or self.landed() < self.sent_feedback
                    or self.uncurated() > 0):
                calm_since, seen = time.monotonic(), len(self.timeline.runs)
            elif time.monotonic() - calm_since >= quiet and self.serves_champion():
                return
            time.sleep(0.5)
        log.warning("the platform did not settle within %.0fs", timeout)

    def uncurated(self) -> int:
        """Joined feedback that curation has not turned into a sample yet."""
        with db.connect(self.database_url, autocommit=True) as conn:
            row = conn.execute("SELECT count(*) FROM feedback f WHERE f.status = 'joined' AND f.model = %s "
                               "AND NOT EXISTS (SELECT 1 FROM samples s WHERE s.id = f.id)",
                               (self.model_name,)).fetchone()
        return int(row[0]) if row else 0

    def landed(self) -> int:
        with db.connect(self.database_url, autocommit=True) as conn:
            row = conn.execute("SELECT count(*) FROM feedback WHERE model = %s", (self.model_name,)).fetchone()
        return int(row[0]) if row else 0

    def serves_champion(self) -> bool:
        if self._registry is None:
            self.model(self.champion()[0])
        info = self._registry.champion()
        return info is None or self.champion()[0] == info.version

    # -- driving ---------------------------------------------------------------------------------------
    def run(self, *, stop: threading.Event | None = None, on_step: Callable[[Replay], None] | None = None,
            checkpoints: dict[int, Callable[[Replay], None]] | None = None) -> Timeline:
        """Replay the stream; ``checkpoints[k]`` runs once ``k`` feedback labels were sent."""
        self.static_version = self.static_version or self.wait_ready(stop=stop)
        static = self.model(self.static_version)
        static_proba = static.predict_proba([r.text for r in self.stream])
        static_labels = [static.labels[int(p.argmax())] for p in static_proba]
        pending = dict(sorted((checkpoints or {}).items()))
        self.timeline.started = time.time()
        interval = 1.0 / self.options.rate
        for i, row in enumerate(self.stream):
            if stop is not None and stop.is_set():
                break
            began = time.monotonic()
            step = self._step(i, row, static_labels[i])
            if step is not None:
                self._position[i] = len(self.timeline.steps)
                self.timeline.steps.append(step)
            self._answer(until=i - self.options.feedback_delay)
            if i % 25 == 0:
                self.poll_runs()
            if on_step is not None:
                on_step(self)
            for k in [k for k in pending if self.sent_feedback >= k]:
                pending.pop(k)(self)
            time.sleep(max(0.0, interval - (time.monotonic() - began)))
        self._answer(until=len(self.stream))  # the outcomes still due arrive after the stream
        for k in [k for k in pending if self.sent_feedback >= k]:
            pending.pop(k)(self)
        for k, check in pending.items():  # a stream too short for its checkpoints: they run at its end
            log.warning("stream ended at %d labels, before checkpoint %d", self.sent_feedback, k)
            check(self)
        return self.timeline

    def _step(self, i: int, row: Row, static_label: str) -> Step | None:
        user = self.crowd.user()
        body: dict[str, Any] = ({"text": row.text} if isinstance(row.text, str) else {"features": dict(row.text)})
        if self.domain is not None:
            body["domain"] = self.domain
        try:
            response = self.http.post(f"{self.route}/predict", json={**body, "user_id": user})
        except httpx.HTTPError as exc:
            log.warning("predict failed: %s", exc)
            self.timeline.failed_requests += 1
            return None
        if response.status_code != 200:
            log.warning("predict answered %s: %s", response.status_code, response.text[:200])
            self.timeline.failed_requests += 1
            return None
        served = response.json()
        judged = self.crowd.judge(user, row.label)
        if judged is not None:
            self._due.append(_Answer(i, str(served["prediction_id"]), judged[0], judged[1], user))
        return Step(i, time.time() - self.timeline.started, served["version"], served["semver"], served["variant"],
                    served["label"] == row.label, static_label == row.label, judged[1] if judged else None, None)

    def _answer(self, until: int) -> None:
        """Send the answers to the predictions of steps up to ``until`` (``feedback_delay`` steps late: an
        outcome is observed some time after the model decided)."""
        while self._due and self._due[0].step <= until:
            due = self._due.popleft()
            try:
                answer = self.http.post(f"{self.route}/feedback", json={
                    "prediction_id": due.prediction_id, "label": due.label, "user_id": due.user})
            except httpx.HTTPError as exc:
                log.warning("feedback failed: %s", exc)
                self.timeline.failed_requests += 1
                continue
            if answer.status_code != 202:
                log.warning("feedback answered %s: %s", answer.status_code, answer.text[:200])
                self.timeline.failed_requests += 1
                continue
            self.sent_feedback += 1
            position = self._position.get(due.step)
            if position is not None:
                steps = self.timeline.steps
                steps[position] = dataclasses.replace(steps[position], feedback_id=str(answer.json()["feedback_id"]))

    def data_to_deploy(self) -> dict[str, float | int | None]:
        """The platform's own data-to-deploy record of this model (:mod:`registry.deploys`, what the pods'
        ``flywheel_feedback_to_serving_seconds`` observed): feedback event -> first prediction of a version
        trained on it."""
        with db.connect(self.database_url, autocommit=True) as conn:
            found = deploys.summaries(conn, self.model_name).get(self.model_name)
        if found is None:
            return {"feedback_to_serving_events": 0, "feedback_to_serving_p50_s": None,
                    "feedback_to_serving_p95_s": None}
        return {"feedback_to_serving_events": found.events, "feedback_to_serving_p50_s": round(found.p50_s, 1),
                "feedback_to_serving_p95_s": round(found.p95_s, 1)}

    def flagged(self) -> tuple[int, int, int]:
        """(poisoned feedback sent, of them not accepted as training samples by curation, all flagged)."""
        poisoned = [s.feedback_id for s in self.timeline.steps if s.feedback == "poison" and s.feedback_id]
        with db.connect(self.database_url, autocommit=True) as conn:
            rows = conn.execute("SELECT feedback_id, status FROM samples WHERE feedback_id = ANY(%s)",
                                ([s.feedback_id for s in self.timeline.steps if s.feedback_id],)).fetchall()
        status: dict[str, str] = {str(f): str(s) for f, s in rows}
        caught = len([f for f in poisoned if status.get(f, "accepted") != "accepted"])
        flagged = len([s for s in status.values() if s != "accepted"])
        return len(poisoned), caught, flagged

    def finish(self) -> dict[str, Any]:
        """The closing figures (held-out accuracy of the deployed model vs the static champion, ...)."""
        self.poll_runs()
        self.collect_events()
        version, semver = self.champion()
        tl = self.timeline
        steps = tl.steps
        poisoned, caught, flagged = self.flagged()
        assert self.static_version is not None
        figures = {
            "scenario": self.options.scenario, "kind": self.options.kind, "steps": len(steps),
            "feedback": self.sent_feedback, "failed_requests": tl.failed_requests,
            "seconds": round(steps[-1].t, 1) if steps else 0.0,
            "live_accuracy": _mean(s.live_correct for s in steps),
            "static_accuracy": _mean(s.static_correct for s in steps),
            "live_accuracy_last_window": _mean(s.live_correct for s in steps[-self.options.window:]),
            "static_accuracy_last_window": _mean(s.static_correct for s in steps[-self.options.window:]),
            "holdout_rows": len(self.holdout),
            "deployed_version": version, "deployed_semver": semver,
            "deployed_holdout_accuracy": round(self.accuracy(version), 4),
            "static_holdout_accuracy": round(self.accuracy(self.static_version), 4),
            "runs": dict(Counter(str(r["status"]) for r in tl.runs)),
            "decisions": dict(Counter(m.action for m in tl.markers)),
            "poisoned_feedback": poisoned, "poisoned_flagged": caught, "flagged_samples": flagged,
            "flip_recall": round(caught / poisoned, 4) if poisoned else None,
        }
        promotions = [m.i for m in tl.markers if m.action == "promote"]
        figures |= {
            # the step of the first promotion during the stream, over the stream's length (None: none came)
            "first_promotion_step": promotions[0] if promotions else None,
            "first_promotion_fraction": round(promotions[0] / len(self.stream), 4) if promotions else None,
            **self.data_to_deploy()}
        if self.drift_at is not None:  # the rolling view's story: the drop at the drift and the recovery
            after = [s for s in steps if s.i >= self.drift_at]
            figures |= {"drift_at_step": self.drift_at,
                        "live_accuracy_after_drift": _mean(s.live_correct for s in after),
                        "static_accuracy_after_drift": _mean(s.static_correct for s in after)}
        figures = {"model": self.model_name, **figures}
        tl.figures = figures
        return figures


def _mean(values: Iterator[bool] | Sequence[bool]) -> float:
    seq = list(values)
    return round(sum(seq) / len(seq), 4) if seq else 0.0
