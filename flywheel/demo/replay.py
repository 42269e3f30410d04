"""The :class:`Replay` drives one stream through the serving API and records it in a :class:`Timeline`."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import random
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, cast

import httpx

from core import db
from core.exceptions import ConfigError
from core.kafka import KafkaConnection
from core.settings import FlywheelSettings
from flywheel import models
from flywheel.demo import dialogue, rainfall
from flywheel.demo.options import SCENARIOS, DemoOptions
from flywheel.demo.stream import Crowd, Row, split_target
from flywheel.demo.timeline import Marker, Step, Timeline
from kinds.generation import Pair
from registry import deploys
from tasks import parse_spec

QUIET_SLACK_S = 5.0
"""How long past the trainer's ``quiet_after_s`` a settle waits for the quiet run to start: the trainer notices
the quiet spell at its next poll for signals (every 0.5 s) and the run shows as running once it has been
recorded; the rest is room for a loaded machine."""
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Answer:
    step: int
    prediction_id: str
    body: dict[str, Any]  # the judgement: a label, or a generator's rating (and correction)
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
        # a generator's pairs: asked in the stream, held out (scored on), every target pair outside the holdout
        self.pairs: list[Pair] = []
        self.pairs_holdout: list[Pair] = []
        self.pairs_target: list[Pair] = []
        spec = models.default_spec(settings)
        if self.scenario.task == "tabular-classification":
            # the model the scenario declares (demo_settings put it in models.yaml); its settings view
            spec = parse_spec(rainfall.spec(options))
            self.settings = models.settings_for(settings, spec)
            self.history, self.stream, self.holdout, self.target = rainfall.split(options)
            self.domain: str | None = None
            if options.start <= rainfall.DRIFT < options.start + options.stream:
                self.drift_at = rainfall.DRIFT - options.start
        elif self.scenario.task == "text-generation":
            spec = parse_spec(dialogue.spec(options))
            self.settings = models.settings_for(settings, spec)
            pairs = dialogue.split(options)
            self.history, self.holdout, self.target = [], [], []
            _, self.pairs, self.pairs_holdout, self.pairs_target = pairs
            self.stream = [Row(p.prompt.prompt, p.response) for p in self.pairs]
            self.domain = None
        else:
            self.settings = settings
            self.stream, self.holdout = split_target(self.scenario.target, options.eval_fraction, options.seed)
            if options.order:  # the same rows in another order (bench/recipes_offline.py --draw shuffles the same way)
                random.Random(options.order).shuffle(self.stream)
            self.history = []
            self.target = self.stream  # every target row outside the holdout (what an oracle may learn from)
            self.stream = self.stream[:options.stream]
            self.domain = self.scenario.target.removeprefix("vader_")  # the slice its predictions carry
        self.model_name = self.settings.model_name
        self.route = f"/v1/models/{self.model_name}"
        # the trainer's quiet trigger: after this long without a signal it trains the samples below its
        # threshold (None: off); a settle lasts longer, or it would end before those labels are trained on
        self.quiet_after_s = models.trainer_config(spec, settings).policy.quiet_after_s
        self.crowd = Crowd(options, self.settings.labels)
        self.players = dialogue.Players(options)
        self.timeline = Timeline(options, drift_at=self.drift_at)
        self.http = httpx.Client(base_url=serving_url, timeout=30.0)
        self._models: dict[str, Any] = {}
        self._registry: Any = None
        self._resources: Any = None
        self.static_version: str | None = None
        self.corrections = 0  # a generator's answers corrected by the players
        self.with_static = True  # a generator's static champion answers every prompt too (the bench skips it)
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
        """A registered version, loaded (and verified) from the registry, for offline scoring (a generator's
        adapter on the process's one base model)."""
        if version not in self._models and self.scenario.task == "text-generation":
            from kinds.base_models import load_base
            from kinds.catalog import load_model
            from kinds.generation import GeneratorResources
            from registry import open_from_settings

            if self._registry is None:
                self._registry = open_from_settings(self.settings, self.database_url)
            base = load_base(self.options.base, self.settings.data_dir)
            self._models[version] = load_model(self._registry.fetch(self._registry.get(version).version),
                                               resources=GeneratorResources(base=base))
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
        """A classifier's accuracy, or a generator's weighted score on the held-out pairs."""
        if self.scenario.task == "text-generation":
            return self.score_of(self.model(version))
        return self.accuracy_of(self.model(version), rows)

    def answers(self, model: Any, prompts: Sequence[str]) -> list[str]:
        """A generator's greedy answers (``max_tokens`` each), in batches of 8."""
        from kinds.generation import Prompt

        out: list[str] = []
        for start in range(0, len(prompts), 8):
            out += [g.text.strip() for g in model.generate([Prompt(p) for p in prompts[start:start + 8]],
                                                           max_new_tokens=self.options.max_tokens)]
        return out

    def score_of(self, model: Any) -> float:
        """A generator's weighted BLEU/ROUGE-L-precision score on the held-out target pairs."""
        from trainer.gates.generation_metrics import weighted_score

        held = self.pairs_holdout
        return weighted_score(self.answers(model, [p.prompt.prompt for p in held]), [p.response for p in held])

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
                               event.semver, event.reason[:300], event.traffic if event.action == "canary" else None))
        self.timeline.markers = sorted(kept, key=lambda m: m.t)

    def settle(self, timeout: float = 120.0, quiet: float = 8.0) -> None:
        """Wait until the trainer has had its say on everything sent so far: every feedback landed and
        curated, no run under way and none started for ``quiet`` seconds since, and the pod serves the
        registry's champion. ``quiet`` is raised past the trainer's ``quiet_after_s`` (+ :data:`QUIET_SLACK_S`):
        the samples that came after its last threshold are trained on only once it has seen no signal for
        that long, and a shorter settle would score the model before that run started."""
        if self.quiet_after_s is not None:
            quiet = max(quiet, self.quiet_after_s + QUIET_SLACK_S)
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
        if self.scenario.task == "text-generation":  # the static champion's answers, scored like the served
            static_labels = self.answers(static, [str(r.text) for r in self.stream]) if self.with_static else []
        else:
            static_proba = static.predict_proba([r.text for r in self.stream])
            static_labels = [static.labels[int(p.argmax())] for p in static_proba]
        pending = dict(sorted((checkpoints or {}).items()))
        self.timeline.started = time.time()
        interval = 1.0 / self.options.rate
        for i, row in enumerate(self.stream):
            if stop is not None and stop.is_set():
                break
            began = time.monotonic()
            step = (self._generate(i, row, static_labels[i] if static_labels else None)
                    if self.scenario.task == "text-generation" else self._step(i, row, static_labels[i]))
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
        served = self._ask("predict", {**body, "user_id": user})
        if served is None:
            return None
        judged = self.crowd.judge(user, row.label)
        if judged is not None:
            self._due.append(_Answer(i, str(served["prediction_id"]), {"label": judged[0]}, judged[1], user))
        return Step(i, time.time() - self.timeline.started, served["version"], served["semver"], served["variant"],
                    served["label"] == row.label, static_label == row.label, judged[1] if judged else None, None)

    def _ask(self, route: str, body: dict[str, Any]) -> dict[str, Any] | None:
        """POST ``body`` to the model's ``route``; its answer, or ``None`` (logged, counted as failed)."""
        try:
            response = self.http.post(f"{self.route}/{route}", json=body)
        except httpx.HTTPError as exc:
            log.warning("%s failed: %s", route, exc)
            self.timeline.failed_requests += 1
            return None
        if response.status_code != 200:
            log.warning("%s answered %s: %s", route, response.status_code, response.text[:200])
            self.timeline.failed_requests += 1
            return None
        return cast(dict[str, Any], response.json())

    def _generate(self, i: int, row: Row, static_answer: str | None) -> Step | None:
        """One player's question to the generator, its answer scored against the reference and judged."""
        from trainer.gates.generation_metrics import weighted_score

        user = self.players.user()
        served = self._ask("generate", {"prompt": row.text, "max_tokens": self.options.max_tokens, "user_id": user})
        if served is None:
            return None
        score = weighted_score([str(served["text"]).strip()], [row.label])
        static = weighted_score([static_answer], [row.label]) if static_answer is not None else None
        judged = self.players.judge(score, row.label)
        if judged is not None:
            self._due.append(_Answer(i, str(served["prediction_id"]), judged, "honest", user))
            self.corrections += "correction" in judged
        return Step(i, time.time() - self.timeline.started, served["model_version"], served["semver"],
                    served["variant"], False, False, "honest" if judged else None, None, score=score,
                    static_score=static, rating=judged["rating"] if judged else None)

    def _answer(self, until: int) -> None:
        """Send the answers to the predictions of steps up to ``until`` (``feedback_delay`` steps late: an
        outcome is observed some time after the model decided)."""
        while self._due and self._due[0].step <= until:
            due = self._due.popleft()
            try:
                answer = self.http.post(f"{self.route}/feedback", json={
                    "prediction_id": due.prediction_id, **due.body, "user_id": due.user})
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
        if self.scenario.task == "text-generation":
            return self._finish_generation()
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


    def _finish_generation(self) -> dict[str, Any]:
        """A generator's closing figures: the served answers' weighted score and the ratings, first and last
        window, vs the static champion's answers to the same prompts; the deployed and the static version
        scored on the held-out pairs; the platform's decisions and its data-to-deploy record."""
        version, semver = self.champion()
        tl, w = self.timeline, self.options.window
        steps = tl.steps
        assert self.static_version is not None

        def mean(values: Iterator[float | None]) -> float | None:
            seq = [v for v in values if v is not None]
            return round(sum(seq) / len(seq), 4) if seq else None

        first, last = steps[:w], steps[-w:]
        promotions = [m.i for m in tl.markers if m.action == "promote"]
        deployed = round(self.accuracy(version), 4)
        figures: dict[str, Any] = {
            "model": self.model_name, "scenario": self.options.scenario, "kind": self.options.kind,
            "base": self.options.base, "steps": len(steps), "feedback": self.sent_feedback,
            "low_ratings": len([s for s in steps if s.rating is not None and s.rating <= 3]),
            "corrections": self.corrections,
            "failed_requests": tl.failed_requests, "seconds": round(steps[-1].t, 1) if steps else 0.0,
            "served_score": mean(s.score for s in steps), "static_score": mean(s.static_score for s in steps),
            "served_score_first_window": mean(s.score for s in first),
            "static_score_first_window": mean(s.static_score for s in first),
            "served_score_last_window": mean(s.score for s in last),
            "static_score_last_window": mean(s.static_score for s in last),
            "rating_first_window": mean(float(s.rating) if s.rating else None for s in first),
            "rating_last_window": mean(float(s.rating) if s.rating else None for s in last),
            "holdout_pairs": len(self.pairs_holdout), "deployed_version": version, "deployed_semver": semver,
            "deployed_holdout_score": deployed,
            "static_holdout_score": (deployed if version == self.static_version
                                     else round(self.accuracy(self.static_version), 4)),
            "runs": dict(Counter(str(r["status"]) for r in tl.runs)),
            "decisions": dict(Counter(m.action for m in tl.markers)),
            "first_promotion_step": promotions[0] if promotions else None,
            "first_promotion_fraction": round(promotions[0] / len(self.stream), 4) if promotions else None,
            "canaries": canary_outcomes(tl), **self.data_to_deploy()}
        tl.figures = figures
        return figures


def canary_outcomes(tl: Timeline) -> list[dict[str, Any]]:
    """Each canary of the replay: its version and traffic, what became of it (``promote``, ``retire`` (rolled
    back, or replaced by a newer canary), or ``canary``: still undecided at the end) and the controller's reason,
    and the answers of its window (its announcement to its outcome): how many it served, their mean rating,
    and the champion's mean rating over the same window."""
    found = []
    for n, marker in enumerate(tl.markers):
        if marker.action != "canary":
            continue
        ended = next((m for m in tl.markers[n + 1:] if m.semver == marker.semver
                      and m.action in ("promote", "rollback", "retire")), None)
        window = [s for s in tl.steps if marker.t <= s.t and (ended is None or s.t <= ended.t)]
        canary = [s for s in window if s.variant == "canary" and s.semver == marker.semver]
        champion = [s for s in window if s.variant != "canary"]

        def rating(steps: list[Step]) -> float | None:
            rated = [s.rating for s in steps if s.rating is not None]
            return round(sum(rated) / len(rated), 2) if rated else None

        found.append({"semver": marker.semver, "traffic": marker.traffic, "at_step": marker.i,
                      "outcome": ended.action if ended else "canary", "reason": ended.reason if ended else None,
                      "answers": len(canary), "rating": rating(canary), "champion_answers": len(champion),
                      "champion_rating": rating(champion)})
    return found


def _mean(values: Iterator[bool] | Sequence[bool]) -> float:
    seq = list(values)
    return round(sum(seq) / len(seq), 4) if seq else 0.0
