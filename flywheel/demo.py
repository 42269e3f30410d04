"""``flywheel demo``: the whole loop on a real drifting stream, on the embedded stack.

A champion is bootstrapped on one domain (vader_movies); then a stream from another domain (tweets or
products) is replayed through ``POST /predict`` and simulated users answer through ``POST /feedback``
from the true labels, at a feedback rate, with label noise and a share of poisoning users who flip
labels. Everything in between is the platform itself: ingest, curation, the trainer and its gates, the
registry, promotion events, the pods' hot swaps (and the canary controller with ``--canary``).

The :class:`Replay` drives one stream and records each step (served version, correct or not, the static
champion's answer) and the platform's decisions; :func:`write_report` turns that into a PNG, an HTML
page and a JSON file. ``bench/efficacy.py`` drives the same :class:`Replay` with checkpoints.
"""

from __future__ import annotations

import base64
import contextlib
import csv
import html
import json
import logging
import random
import shutil
import threading
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

import httpx
import psycopg
from psycopg import sql
from pydantic import BaseModel, ConfigDict, Field, SecretStr

from core import db
from core.exceptions import ConfigError
from core.settings import FlywheelSettings

log = logging.getLogger(__name__)
DATA = Path(__file__).resolve().parents[1] / "data"
SCENARIOS: dict[str, tuple[str, str]] = {
    "movies->tweets": ("vader_movies", "vader_tweets"),
    "movies->products": ("vader_movies", "vader_products"),
}
OPPOSITE = {"positive": "negative", "negative": "positive"}


class DemoOptions(BaseModel):
    """What one replay does; the defaults finish in a few minutes on a 2-core machine."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    scenario: str = "movies->tweets"
    stream: int = Field(default=1500, ge=10, description="Target-domain texts replayed through /predict.")
    feedback_rate: float = Field(default=0.6, ge=0.0, le=1.0, description="Share of predictions judged.")
    noise: float = Field(default=0.05, ge=0.0, le=1.0, description="An honest user's chance of a random label.")
    poison: float = Field(default=0.0, ge=0.0, lt=1.0, description="Share of users who flip every label.")
    users: int = Field(default=60, ge=1)
    rate: float = Field(default=40.0, gt=0.0, description="Requests per second, at most.")
    kind: str = "tfidf-logreg"
    promotion: Literal["direct", "canary"] = "direct"
    incremental_threshold: int = Field(default=100, ge=1)
    eval_fraction: float = Field(default=0.3, gt=0.0, lt=1.0, description="Target rows held out, never streamed.")
    window: int = Field(default=150, ge=10, description="Rolling-accuracy window (steps).")
    seed: int = 0


# -- data -------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Row:
    text: str
    label: str


def read_rows(name: str) -> list[Row]:
    with (DATA / f"{name}.csv").open(newline="", encoding="utf-8") as fh:
        return [Row(r["text"].strip(), r["label3"]) for r in csv.DictReader(fh) if r["text"].strip()]


def split_target(name: str, eval_fraction: float, seed: int) -> tuple[list[Row], list[Row]]:
    """(stream, held-out evaluation rows) of a target domain, shuffled with ``seed``."""
    rows = read_rows(name)
    random.Random(seed).shuffle(rows)
    cut = int(len(rows) * eval_fraction)
    return rows[cut:], rows[:cut]


class Crowd:
    """Simulated users. Each prediction is judged with probability ``feedback_rate`` by the user who asked;
    honest users give the true label (a random one with probability ``noise``); poisoners (``poison`` of
    the users, so about that share of the feedback) give the opposite sentiment (neutral becomes positive
    or negative at random)."""

    def __init__(self, options: DemoOptions, labels: Sequence[str]) -> None:
        self.options, self.labels = options, tuple(labels)
        self.rng = random.Random(options.seed + 1)
        self.users = [f"user-{i:03d}" for i in range(options.users)]
        bad = round(options.poison * options.users)
        self.poisoners = set(self.rng.sample(self.users, bad))

    def user(self) -> str:
        return self.rng.choice(self.users)

    def judge(self, user: str, truth: str) -> tuple[str, str] | None:
        """(label, kind) with kind honest | noisy | poison, or None when the user gives no feedback."""
        if self.rng.random() >= self.options.feedback_rate:
            return None
        if user in self.poisoners:
            return OPPOSITE.get(truth) or self.rng.choice([x for x in self.labels if x != truth]), "poison"
        if self.rng.random() < self.options.noise:
            return self.rng.choice(self.labels), "noisy"
        return truth, "honest"


# -- the replay ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Step:
    i: int
    t: float
    version: str
    semver: str
    variant: str
    live_correct: bool
    static_correct: bool
    feedback: str | None  # honest | noisy | poison
    feedback_id: str | None


@dataclass(frozen=True)
class Marker:
    """A decision of the platform on the timeline (``i`` = the step it happened at)."""

    i: int
    t: float
    action: str  # promote | rollback | canary | retire | refused | failed
    semver: str
    reason: str


@dataclass
class Timeline:
    options: DemoOptions
    started: float = field(default_factory=time.time)
    steps: list[Step] = field(default_factory=list)
    markers: list[Marker] = field(default_factory=list)
    runs: list[dict[str, Any]] = field(default_factory=list)
    figures: dict[str, Any] = field(default_factory=dict)
    failed_requests: int = 0

    def rolling(self, attr: str, window: int) -> list[float]:
        values: deque[bool] = deque(maxlen=window)
        out = []
        for step in self.steps:
            values.append(bool(getattr(step, attr)))
            out.append(sum(values) / len(values))
        return out

    def step_at(self, when: float) -> int:
        """The index of the last step taken at or before ``when`` (a unix time)."""
        found = 0
        for step in self.steps:
            if self.started + step.t > when:
                break
            found = step.i
        return found


class Replay:
    """Drives one stream through a running platform's API and watches its decisions in Postgres."""

    def __init__(self, options: DemoOptions, settings: FlywheelSettings, serving_url: str, database_url: str,
                 bootstrap: str) -> None:
        if options.scenario not in SCENARIOS:
            raise ConfigError(f"scenario {options.scenario!r} is not one of {sorted(SCENARIOS)}")
        self.options, self.settings = options, settings
        self.serving_url, self.database_url, self.bootstrap = serving_url, database_url, bootstrap
        self.stream, self.holdout = split_target(SCENARIOS[options.scenario][1], options.eval_fraction, options.seed)
        self.target = self.stream  # every target row outside the holdout (what an oracle may learn from)
        self.stream = self.stream[:options.stream]
        self.domain = SCENARIOS[options.scenario][1].removeprefix("vader_")  # the slice its predictions carry
        self.crowd = Crowd(options, settings.labels)
        self.timeline = Timeline(options)
        self.http = httpx.Client(base_url=serving_url, timeout=30.0)
        self._models: dict[str, Any] = {}
        self._registry: Any = None
        self._resources: Any = None
        self.static_version: str | None = None
        self.sent_feedback = 0

    def close(self) -> None:
        self.http.close()

    # -- the platform's state ------------------------------------------------------------------------
    def wait_ready(self, timeout: float = 900.0, stop: threading.Event | None = None) -> str:
        """Block until the API serves a champion; its version."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not (stop and stop.is_set()):
            with contextlib.suppress(httpx.HTTPError):
                if self.http.get("/ready").status_code == 200:
                    champion = self.http.get("/models").json()["deployment"]["champion"]
                    return str(champion["version"])
            time.sleep(0.5)
        raise TimeoutError(f"no champion served at {self.serving_url} within {timeout:.0f}s")

    def model(self, version: str) -> Any:
        """A registered version, loaded (and verified) from the registry, for offline scoring."""
        if version not in self._models:
            if self._registry is None:
                from flywheel.lifecycle import open_model_registry
                from kinds import Embedder, MemoryEmbeddingCache, Resources, shared_encoder

                self._registry = open_model_registry(self.settings, self.database_url)
                # one embedding cache for every version scored: a holdout text is encoded once
                self._resources = Resources(embedder=Embedder(shared_encoder(), MemoryEmbeddingCache()))
            self._models[version] = self._registry.load(version, self._resources)
        return self._models[version]

    def accuracy(self, version: str, rows: Sequence[Row] | None = None) -> float:
        rows = self.holdout if rows is None else rows
        model = self.model(version)
        proba = model.predict_proba([r.text for r in rows])
        right = sum(1 for p, r in zip(proba, rows, strict=True) if model.labels[int(p.argmax())] == r.label)
        return right / len(rows)

    def champion(self) -> tuple[str, str]:
        deployment = self.http.get("/models").json()["deployment"]["champion"]
        return str(deployment["version"]), str(deployment["semver"])

    def poll_runs(self) -> list[dict[str, Any]]:
        """Finished training runs not seen yet, oldest first (and their markers)."""
        seen = {r["run_id"] for r in self.timeline.runs}
        with db.connect(self.database_url, autocommit=True) as conn:
            rows = conn.execute(
                "SELECT run_id::text, trigger, mode, status, reason, version, kind, sample_count, duration_s, "
                "candidates, extract(epoch FROM finished_at) FROM training_runs WHERE model_name = %s "
                "AND status <> 'running' ORDER BY id", (self.settings.model_name,)).fetchall()
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
                               (self.settings.model_name,)).fetchone()
        return bool(row and row[0])

    def collect_events(self) -> None:
        """Promotions, rollbacks and canaries from the models topic, placed on the timeline."""
        from registry.announce import read_model_events

        kept = [m for m in self.timeline.markers if m.action in ("refused", "failed")]
        for event in read_model_events(self.bootstrap, self.settings.topics.models):
            if event.model != self.settings.model_name:
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
            row = conn.execute("SELECT count(*) FROM feedback f WHERE f.status = 'joined' AND NOT EXISTS "
                               "(SELECT 1 FROM samples s WHERE s.id = f.id)").fetchone()
        return int(row[0]) if row else 0

    def landed(self) -> int:
        with db.connect(self.database_url, autocommit=True) as conn:
            row = conn.execute("SELECT count(*) FROM feedback").fetchone()
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
                self.timeline.steps.append(step)
            if i % 25 == 0:
                self.poll_runs()
            if on_step is not None:
                on_step(self)
            for k in [k for k in pending if self.sent_feedback >= k]:
                pending.pop(k)(self)
            time.sleep(max(0.0, interval - (time.monotonic() - began)))
        for k, check in pending.items():  # a stream too short for its checkpoints: they run at its end
            log.warning("stream ended at %d labels, before checkpoint %d", self.sent_feedback, k)
            check(self)
        return self.timeline

    def _step(self, i: int, row: Row, static_label: str) -> Step | None:
        user = self.crowd.user()
        try:
            response = self.http.post("/predict", json={"text": row.text, "user_id": user, "domain": self.domain})
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
        feedback_id = None
        if judged is not None:
            answer = self.http.post("/feedback", json={"prediction_id": served["prediction_id"],
                                                       "label": judged[0], "user_id": user})
            if answer.status_code == 202:
                feedback_id = str(answer.json()["feedback_id"])
                self.sent_feedback += 1
            else:
                log.warning("feedback answered %s: %s", answer.status_code, answer.text[:200])
                self.timeline.failed_requests += 1
        return Step(i, time.time() - self.timeline.started, served["version"], served["semver"], served["variant"],
                    served["label"] == row.label, static_label == row.label,
                    judged[1] if judged and feedback_id else None, feedback_id)

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
        tl.figures = figures
        return figures


def _mean(values: Iterator[bool] | Sequence[bool]) -> float:
    seq = list(values)
    return round(sum(seq) / len(seq), 4) if seq else 0.0


# -- the report ------------------------------------------------------------------------------------------
def write_report(timeline: Timeline, directory: Path) -> dict[str, Path]:
    """``report.png`` (rolling accuracy, live vs static, decisions marked), ``report.html``, ``report.json``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    directory.mkdir(parents=True, exist_ok=True)
    window = timeline.options.window
    live, static = timeline.rolling("live_correct", window), timeline.rolling("static_correct", window)
    xs = list(range(len(live)))
    settled = min(len(xs), window // 3)  # the first steps of a window are too few to mean anything
    live_plot = [float("nan")] * settled + live[settled:]
    static_plot = [float("nan")] * settled + static[settled:]
    fig, ax = plt.subplots(figsize=(11, 5.5), dpi=110)
    ax.plot(xs, live_plot, label="Flywheel (live: served predictions)", color="#1f77b4", linewidth=2)
    ax.plot(xs, static_plot, label="static champion (never retrained)", color="#7f7f7f", linewidth=1.6, linestyle="--")
    colours = {"promote": "#2ca02c", "rollback": "#d62728", "canary": "#ff7f0e", "retire": "#9467bd",
               "refused": "#bcbd22", "failed": "#000000"}
    drawn: set[str] = set()
    for m in timeline.markers:
        if m.action not in colours:
            continue
        ax.axvline(m.i, color=colours[m.action], alpha=0.8 if m.action in ("promote", "rollback") else 0.35,
                   linewidth=1.4, linestyle="-" if m.action in ("promote", "rollback") else ":",
                   label=m.action if m.action not in drawn else None)
        drawn.add(m.action)
        if m.action in ("promote", "rollback") and m.semver:
            ax.annotate(m.semver, (m.i, 0.02), xycoords=("data", "axes fraction"), rotation=90, fontsize=7,
                        color=colours[m.action])
    o = timeline.options
    ax.set_title(f"{o.scenario}: rolling accuracy over {window} predictions ({o.kind}, feedback {o.feedback_rate:g}, "
                 f"noise {o.noise:g}, poison {o.poison:g})")
    ax.set_xlabel("prediction # in the drifted stream")
    ax.set_ylabel("accuracy (true labels)")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    png = directory / "report.png"
    fig.savefig(png)
    plt.close(fig)

    data = {"options": o.model_dump(), "figures": timeline.figures,
            "markers": [asdict(m) for m in timeline.markers],
            "runs": [{k: v for k, v in r.items() if k != "candidates"} | {"gates": _gates(r)} for r in timeline.runs],
            "rolling": {"live": live, "static": static}}
    json_path = directory / "report.json"
    json_path.write_text(json.dumps(data, indent=2, default=str))
    html_path = directory / "report.html"
    html_path.write_text(_html(timeline, base64.b64encode(png.read_bytes()).decode()))
    return {"png": png, "html": html_path, "json": json_path}


def _gates(run: dict[str, Any]) -> list[str]:
    out = []
    for c in run.get("candidates") or []:
        for v in c.get("verdicts", []):
            out.append(f"{c.get('kind')}: {v.get('gate')} {'pass' if v.get('passed') else 'FAIL'}: {v.get('reason')}")
    return out


def _html(timeline: Timeline, png_b64: str) -> str:
    esc = html.escape
    figures = "".join(f"<tr><th>{esc(str(k))}</th><td>{esc(str(v))}</td></tr>" for k, v in timeline.figures.items())
    runs = "".join(
        f"<tr><td>{esc(str(r['mode']))}</td><td>{esc(str(r['trigger']))}</td><td>{esc(str(r['status']))}</td>"
        f"<td>{esc(str(r.get('sample_count')))}</td><td>{esc(str(r.get('version') or ''))}</td>"
        f"<td>{'<br>'.join(esc(g) for g in _gates(r)) or esc(str(r['reason']))}</td></tr>"
        for r in timeline.runs)
    markers = "".join(f"<tr><td>{m.i}</td><td>{m.t:.1f}</td><td>{esc(m.action)}</td><td>{esc(m.semver)}</td>"
                      f"<td>{esc(m.reason)}</td></tr>" for m in timeline.markers)
    options = esc(json.dumps(timeline.options.model_dump()))
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>Flywheel demo report</title>
<style>body{{font-family:sans-serif;max-width:1200px;margin:2em auto}}table{{border-collapse:collapse;margin:1em 0}}
td,th{{border:1px solid #ccc;padding:4px 8px;text-align:left;vertical-align:top;font-size:13px}}</style></head><body>
<h1>Flywheel demo: {esc(timeline.options.scenario)}</h1>
<p>Generated {datetime.now(UTC):%Y-%m-%d %H:%M:%S} UTC. Options: <code>{options}</code></p>
<img src="data:image/png;base64,{png_b64}" alt="rolling accuracy" style="width:100%">
<h2>Figures</h2><table>{figures}</table>
<h2>Promotions, rollbacks and refusals</h2><table><tr><th>step</th><th>s</th><th>action</th><th>version</th>
<th>reason</th></tr>{markers}</table>
<h2>Training runs and gate verdicts</h2><table><tr><th>mode</th><th>trigger</th><th>status</th><th>samples</th>
<th>version</th><th>gates</th></tr>{runs}</table></body></html>"""


# -- the demo platform ------------------------------------------------------------------------------------
CORPUS_WEIGHT: dict[str, float] = {"minilm-head": 0.1}
"""The demo policy's corpus weight per kind (others: the policy's default; see :func:`demo_settings`).
A tfidf-logreg at 0.1 regressed the movies slice by 0.037 and every run was refused (demo, 2026-12-04)."""
CORPUS_WEIGHT_CHOICES = (0.05,)
"""Corpus weights a demo's full runs try beside :data:`CORPUS_WEIGHT`."""
KIND_PARAMS: dict[str, dict[str, Any]] = {"minilm-head": {"solver": "lbfgs", "c": 0.1}}
"""The demo policy's model parameters, per kind (see :func:`demo_settings`)."""


def demo_settings(base: FlywheelSettings, options: DemoOptions, data_dir: Path, database_url: str | None,
                  serving_port: int) -> FlywheelSettings:
    """The platform's settings for a demo: its own data dir, database and topic prefix, a trainer config
    that retrains every ``incremental_threshold`` labels, and the demo corpus as the first champion."""
    data_dir.mkdir(parents=True, exist_ok=True)
    trainer_yaml = data_dir / "trainer.yaml"
    trainer_yaml.write_text(json.dumps({
        # every retrain is a full one: on a few hundred drifted labels a full refit (seconds for either
        # kind) learns the new domain, while a warm-started tfidf-logreg re-optimises on the replay
        # window alone and comes out worse than its parent (measured: refused at -0.03..-0.05)
        # 10% reserved (the default): the samples a run trains on that the champion never saw are evidence
        # too (cross-fitted), so reserving more would only take labels away from training
        # a MiniLM head solved to its L2-regularised optimum (lbfgs, c 0.1) with the corpus at weight 0.1, and
        # 0.05 tried beside it: offline (vader_movies corpus + 400 target labels at 5% noise, 4 draws) it
        # reaches products 0.641 / tweets 0.729 held-out accuracy (0.651 / 0.733 at 0.05), where the AdamW
        # head at the default 0.2 reaches 0.636 / 0.717, and it is the same model whatever the seed. A 0.05
        # candidate replaces the 0.1 one only when the gate finds it better on the same cross-fitted rows
        # (docs/training.md)
        "policy": {"kinds": [options.kind], "incremental_threshold": options.incremental_threshold,
                   "full_threshold": options.incremental_threshold,
                   **({"corpus_weight": CORPUS_WEIGHT[options.kind]} if options.kind in CORPUS_WEIGHT else {}),
                   "corpus_weight_choices": list(CORPUS_WEIGHT_CHOICES), "reconcile_interval_s": 5.0,
                   "holdout_percent": 10, "recent_min": 20, "kind_params": KIND_PARAMS},
        # the demo reports accuracy, so its gate judges accuracy: the default score (accuracy, macro-F1,
        # calibration) promoted a drifted-domain candidate on F1 and calibration that served products with
        # lower accuracy than the champion (measured: +0.08 score at p 0.001, held-out accuracy -0.04)
        "gates": {"evaluation": {"metric_weights": {"accuracy": 1.0}}},
        "promotion": {"mode": options.promotion, "canary_traffic": 0.5},
    }, indent=2))
    drift_yaml = data_dir / "drift.yaml"
    drift_yaml.write_text(json.dumps({"interval_s": 10.0, "window": 300, "min_window": 150,
                                      "reference_size": 600, "cooldown_s": 120.0}, indent=2))
    # a trusted user's label issue at full weight: the demo's champion serves a domain it never trained on,
    # where its disagreement says little about the label. Measured on the bench's drifted streams (samples
    # curated by 400 labels, MiniLM head, 3 training seeds): half weight costs products 0.0075..0.0084
    # held-out accuracy and tweets 0.0053..0.0077; with 30% of the users flipping labels, the label issues
    # curation accepts are 85-96% right (the rest 90-94%). In-domain, where label issues are mostly real
    # errors, keep the default (docs/curation.md)
    curation_yaml = data_dir / "curation.yaml"
    curation_yaml.write_text(json.dumps({"weights": {"label_issue": 1.0}}, indent=2))
    canary_yaml = data_dir / "canary.yaml"
    canary_yaml.write_text(json.dumps({"interval_s": 5.0, "test": {"min_samples": 60},
                                       "watchdog": {"min_samples": 100, "window_s": 600.0}}, indent=2))
    return base.model_copy(update={
        "data_dir": data_dir, "database_url": SecretStr(database_url) if database_url else None,
        "topic_prefix": f"demo{uuid.uuid4().hex[:6]}",
        "serving_port": serving_port, "metrics_port": 0, "schema_registry_port": 0, "run_trainer": True,
        "bootstrap_data": DATA / f"{SCENARIOS[options.scenario][0]}.csv",
        "trainer_config": trainer_yaml, "canary_config": canary_yaml, "drift_config": drift_yaml,
        "curation_config": curation_yaml})


def fresh_database(server_url: str, name: str = "flywheel_demo") -> str:
    """A new, empty database ``name`` on the server of ``server_url`` (a ``postgresql://`` URL; dropped
    first if it exists); its URL."""
    parts = urlsplit(server_url)
    if not parts.scheme.startswith("postgres"):
        raise ConfigError(f"the demo needs FLYWHEEL_DATABASE_URL as a postgresql:// URL, got {parts.scheme!r}")
    with psycopg.connect(urlunsplit(parts._replace(path="/postgres")), autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return urlunsplit(parts._replace(path=f"/{name}"))


def reset_dir(path: Path) -> Path:
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    return path
