"""``flywheel demo``: the platform on the embedded stack plus a replayed drifting stream, a live view and a
report (see :mod:`flywheel.demo`)."""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel
from rich.table import Table

from core.settings import FlywheelSettings
from flywheel.demo.options import DEFAULT_SCENARIOS, SCENARIOS, DemoOptions
from flywheel.exceptions import StackError

if TYPE_CHECKING:  # the platform, the kinds and the report load when the demo runs, not for `flywheel --help`
    from flywheel.demo import Replay

out = Console()


def view(replay: Replay) -> Group:
    tl, o = replay.timeline, replay.options
    steps = tl.steps
    window = steps[-o.window:]
    if o.task == "text-generation":  # the weighted score of the answers, not accuracy
        live, static = _mean([s.score for s in window]), _mean([s.static_score for s in window])
    else:
        live = sum(s.live_correct for s in window) / len(window) if window else 0.0
        static = sum(s.static_correct for s in window) / len(window) if window else 0.0
    feedback = Counter(s.feedback for s in steps if s.feedback)
    versions = [s.semver for i, s in enumerate(steps) if i == 0 or s.semver != steps[i - 1].semver]
    table = Table(show_header=False, box=None)
    table.add_row("scenario", f"{o.scenario}: model {replay.model_name} ({o.kind}, promotion {o.promotion})")
    table.add_row("elapsed", f"{steps[-1].t:.0f} s" if steps else "-")
    drift = ""
    if tl.drift_at is not None:
        drift = f"  (drift at {tl.drift_at}: {'passed' if len(steps) > tl.drift_at else 'ahead'})"
    table.add_row("predictions", f"{len(steps)} / {len(replay.stream)}  (failed requests: {tl.failed_requests})"
                                 f"{drift}")
    if o.task == "text-classification":
        table.add_row("feedback", f"{replay.sent_feedback}  honest {feedback['honest']}, noisy {feedback['noisy']}, "
                                  f"poison {feedback['poison']}")
    elif o.task == "text-generation":
        table.add_row("feedback", f"{replay.sent_feedback} ratings, mean of the last {len(window)} "
                                  f"{_mean([s.rating for s in window]):.2f}")
    else:
        table.add_row("outcomes", f"{replay.sent_feedback} observed, each {o.feedback_delay} predictions late")
    measure = "weighted score" if o.task == "text-generation" else "accuracy"
    table.add_row(f"{measure}, last {len(window)}", f"[bold]{live:.3f}[/] live   vs   {static:.3f} static champion")
    table.add_row("serving", f"{steps[-1].semver} ({steps[-1].variant})" if steps else "-")
    table.add_row("versions served", " -> ".join(versions[-8:]) or "-")
    runs = Counter(str(r["status"]) for r in tl.runs)
    table.add_row("training runs", ", ".join(f"{k} {v}" for k, v in sorted(runs.items())) or "none yet")
    recent = Table("mode", "status", "samples", "why", box=None, header_style="bold")
    for r in tl.runs[-3:]:
        recent.add_row(str(r["mode"]), str(r["status"]), str(r["sample_count"]), str(r["reason"])[:110])
    return Group(Panel(table, title=f"Flywheel demo: {o.scenario}"), recent)


def _mean(values: list[float | None] | list[int | None]) -> float:
    seq = [v for v in values if v is not None]
    return sum(seq) / len(seq) if seq else 0.0


def scenario_options(scenarios: list[str], **overrides: Any) -> list[DemoOptions]:
    """Each scenario's options: its defaults, then the given overrides (``kind`` only where it can train the
    scenario's task)."""
    from kinds.catalog import KINDS

    unknown = [s for s in scenarios if s not in SCENARIOS]
    if unknown or len(set(scenarios)) != len(scenarios):
        raise typer.BadParameter(f"scenarios must be distinct, each one of {', '.join(SCENARIOS)}: got {scenarios}")
    kind = overrides.pop("kind", None)
    trains: frozenset[str] = getattr(KINDS.get(kind or ""), "tasks", frozenset())
    if kind is not None and not any(SCENARIOS[s].task in trains for s in scenarios):
        raise typer.BadParameter(f"kind {kind!r} trains none of the scenarios {scenarios}")
    return [DemoOptions.for_scenario(s, **overrides, kind=kind if kind is not None and SCENARIOS[s].task in trains
                                     else None) for s in scenarios]


def demo(
    ctx: typer.Context,
    scenario: Annotated[list[str] | None, typer.Option(
        help=f"Repeatable; one of {', '.join(SCENARIOS)}. Default: {' and '.join(DEFAULT_SCENARIOS)} side by "
             "side in one platform.")] = None,
    stream: Annotated[int | None, typer.Option(help="Rows replayed per scenario (default: the scenario's).")] = None,
    start: Annotated[int | None, typer.Option(help="rainfall: the first day replayed (the drift is at 12000).")] = None,
    history: Annotated[int | None, typer.Option(help="rainfall: days before the stream the first champion "
                                                     "learns (default: all); dialogue: the small-talk pairs the "
                                                     "first adapter learns (default 60).")] = None,
    feedback_rate: Annotated[float | None, typer.Option(help="Share of predictions the users judge.")] = None,
    feedback_delay: Annotated[int | None, typer.Option(help="Predictions served before an answer arrives.")] = None,
    noise: Annotated[float | None, typer.Option(help="An honest user's chance of a random label.")] = None,
    poison: Annotated[float | None, typer.Option(help="Share of users who flip every label.")] = None,
    kind: Annotated[str | None, typer.Option(help="Model kind, for the scenarios whose task it trains: "
                                                  "tfidf-logreg, minilm-head; lightgbm, xgboost.")] = None,
    promotion: Annotated[str | None, typer.Option(help="direct (the default), or canary (the "
                                                       "canary controller decides).")] = None,
    canary_traffic: Annotated[float | None, typer.Option(help="dialogue: the canary's share of requests "
                                                              "(default: the task's, 5%).")] = None,
    base_model: Annotated[str | None, typer.Option("--base", help="dialogue: the base model "
                                                  "(smollm2-135m-instruct; tiny-random for a fast smoke run).")
                          ] = None,
    max_tokens: Annotated[int | None, typer.Option(help="dialogue: new tokens per answer (default 32).")] = None,
    lora_steps: Annotated[int | None, typer.Option(
        help="dialogue: LoRA steps per run, batch 8 (default 0: one epoch over the run's pairs, the new ones and "
             "every earlier one).")
                          ] = None,
    rate: Annotated[float | None, typer.Option(help="Requests per second per scenario, at most.")] = None,
    threshold: Annotated[int | None, typer.Option(help="Accepted samples between retrains.")] = None,
    report: Annotated[Path | None, typer.Option(help="Report directory; default <data dir>/demo/report.")] = None,
    database: Annotated[str, typer.Option(help="Database the demo (re)creates on FLYWHEEL_DATABASE_URL's "
                                                "server.")] = "flywheel_demo",
) -> None:
    """Bootstrap the scenarios' champions (a sentiment model on movie reviews; a rain model on weather
    history; an NPC dialogue adapter on small talk), replay their drifting streams through the API with simulated
    users and observed outcomes, and
    watch the loop retrain, gate and swap models; writes a PNG + HTML report at the end. Uses its own
    database (flywheel_demo on FLYWHEEL_DATABASE_URL's server, else pgserver) and data dir."""
    from flywheel.demo import Replay, demo_bootstrap, demo_settings, fresh_database, reset_dir, write_report
    from flywheel.endpoints import endpoint_connection
    from flywheel.platform import Platform
    from flywheel.stack import free_port
    from streams.runtime import tune_interpreter

    tune_interpreter()
    stop = ctx.obj if isinstance(ctx.obj, threading.Event) else threading.Event()
    every = scenario_options(scenario or list(DEFAULT_SCENARIOS), stream=stream, start=start, history=history,
                             feedback_rate=feedback_rate, feedback_delay=feedback_delay, noise=noise, poison=poison,
                             kind=kind, promotion=promotion, canary_traffic=canary_traffic, rate=rate,
                             incremental_threshold=threshold,
                             base=base_model, max_tokens=max_tokens, lora_steps=lora_steps)
    base = FlywheelSettings()
    root = reset_dir(base.data_dir / "demo")
    report_dir = report or root / "report"
    report_dir.mkdir(parents=True, exist_ok=True)
    url = fresh_database(base.database_url.get_secret_value(), database) if base.database_url else None
    settings = demo_settings(base, every, root / "platform", url, free_port())
    log_file = report_dir / "platform.log"
    restore = _log_to(log_file)
    out.print(f"Starting the platform (logs: {log_file}); bootstrapping "
              f"{', '.join(f'{o.kind} on {SCENARIOS[o.scenario].source}' for o in every)} ...")
    started = time.monotonic()
    try:
        with Platform(settings, stop_event=stop, bootstrap=demo_bootstrap(every, root / "platform")) as platform:
            endpoints = platform.endpoints
            if endpoints is None or endpoints.serving_url is None:
                raise StackError("the platform did not start (see the log)")
            replays = [Replay(o, settings, endpoints.serving_url, endpoints.database_url,
                              endpoint_connection(settings, endpoints)) for o in every]
            try:
                figures = _replay_all(replays, stop, started)
                paths = write_report([r.timeline for r in replays], report_dir)
            finally:
                for replay in replays:
                    replay.close()
            if platform.failed:
                raise StackError(f"{', '.join(platform.failed)} failed during the demo (see {log_file})")
    finally:
        restore()
    for found in figures:
        summary = Table("figure", "value", title=f"Demo results: {found['scenario']}")
        for key, value in found.items():
            summary.add_row(key, str(value))
        out.print(summary)
    out.print(f"report: {paths['html']} (plot {paths['png']}), total {time.monotonic() - started:.0f} s")


def _replay_all(replays: list[Replay], stop: threading.Event, started: float) -> list[dict[str, Any]]:
    """Run every replay in its own thread under one live view; let the platform settle; their figures."""
    for replay in replays:
        replay.static_version = replay.wait_ready(stop=stop)
        out.print(f"{replay.model_name}: champion version {replay.static_version} is serving after "
                  f"{time.monotonic() - started:.0f} s; replaying {len(replay.stream)} rows of "
                  f"{SCENARIOS[replay.options.scenario].target}")
    errors: list[BaseException] = []

    def body(replay: Replay) -> None:
        try:
            replay.run(stop=stop)
        except BaseException as exc:
            errors.append(exc)
            stop.set()

    threads = [threading.Thread(target=body, args=(r,), name=f"demo-{r.model_name}", daemon=True) for r in replays]
    with Live(Group(*(view(r) for r in replays)), console=out, refresh_per_second=4) as live:
        for thread in threads:
            thread.start()
        while any(t.is_alive() for t in threads):
            live.update(Group(*(view(r) for r in replays)))
            time.sleep(0.25)
        if errors:
            raise errors[0]
        for replay in replays:
            replay.settle(timeout=90, quiet=8)
        live.update(Group(*(view(r) for r in replays)))
    return [replay.finish() for replay in replays]


def _log_to(path: Path) -> Callable[[], None]:
    """Send the platform's log records to ``path`` while the live view owns the terminal; returns the undo."""
    root = logging.getLogger()
    previous = root.handlers[:]
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root.handlers = [handler]

    def restore() -> None:
        root.handlers = previous
        handler.close()

    return restore
