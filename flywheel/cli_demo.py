"""``flywheel demo``: the platform on the embedded stack plus a replayed drifting stream, a live view and a
report (see :mod:`flywheel.demo`)."""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel
from rich.table import Table

from core.settings import FlywheelSettings
from flywheel.demo import SCENARIOS, DemoOptions, Replay, demo_settings, fresh_database, reset_dir, write_report
from flywheel.exceptions import StackError
from flywheel.platform import Platform, endpoint_connection

out = Console()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def view(replay: Replay) -> Group:
    tl, o = replay.timeline, replay.options
    steps = tl.steps
    window = steps[-o.window:]
    live = sum(s.live_correct for s in window) / len(window) if window else 0.0
    static = sum(s.static_correct for s in window) / len(window) if window else 0.0
    feedback = Counter(s.feedback for s in steps if s.feedback)
    versions = [s.semver for i, s in enumerate(steps) if i == 0 or s.semver != steps[i - 1].semver]
    table = Table(show_header=False, box=None)
    table.add_row("scenario", f"{o.scenario} ({o.kind}, promotion {o.promotion})")
    table.add_row("elapsed", f"{steps[-1].t:.0f} s" if steps else "-")
    table.add_row("predictions", f"{len(steps)} / {len(replay.stream)}  (failed requests: {tl.failed_requests})")
    table.add_row("feedback", f"{replay.sent_feedback}  honest {feedback['honest']}, noisy {feedback['noisy']}, "
                              f"poison {feedback['poison']}")
    table.add_row(f"accuracy, last {len(window)}", f"[bold]{live:.3f}[/] live   vs   {static:.3f} static champion")
    table.add_row("serving", f"{steps[-1].semver} ({steps[-1].variant})" if steps else "-")
    table.add_row("versions served", " -> ".join(versions[-8:]) or "-")
    runs = Counter(str(r["status"]) for r in tl.runs)
    table.add_row("training runs", ", ".join(f"{k} {v}" for k, v in sorted(runs.items())) or "none yet")
    recent = Table("mode", "status", "samples", "why", box=None, header_style="bold")
    for r in tl.runs[-4:]:
        recent.add_row(str(r["mode"]), str(r["status"]), str(r["sample_count"]), str(r["reason"])[:110])
    return Group(Panel(table, title="Flywheel demo"), recent)


def demo(
    ctx: typer.Context,
    scenario: Annotated[str, typer.Option(help=f"One of {', '.join(SCENARIOS)}.")] = "movies->tweets",
    stream: Annotated[int, typer.Option(help="Drifted texts replayed through /predict.")] = 1500,
    feedback_rate: Annotated[float, typer.Option(help="Share of predictions the users judge.")] = 0.6,
    noise: Annotated[float, typer.Option(help="An honest user's chance of a random label.")] = 0.05,
    poison: Annotated[float, typer.Option(help="Share of users who flip every label.")] = 0.0,
    kind: Annotated[str, typer.Option(help="Model kind: tfidf-logreg or minilm-head.")] = "tfidf-logreg",
    promotion: Annotated[str, typer.Option(help="direct, or canary (the canary controller decides).")] = "direct",
    rate: Annotated[float, typer.Option(help="Requests per second, at most.")] = 40.0,
    report: Annotated[Path | None, typer.Option(help="Report directory; default <data dir>/demo/report.")] = None,
    database: Annotated[str, typer.Option(help="Database the demo (re)creates on FLYWHEEL_DATABASE_URL's "
                                                "server.")] = "flywheel_demo",
) -> None:
    """Bootstrap a champion on movie reviews, replay a drifting stream through the API with simulated
    users, and watch the loop retrain, gate and swap models; writes a PNG + HTML report at the end.
    Uses its own database (flywheel_demo on FLYWHEEL_DATABASE_URL's server, else pgserver) and data dir."""
    stop = ctx.obj if isinstance(ctx.obj, threading.Event) else threading.Event()
    options = DemoOptions.model_validate({
        "scenario": scenario, "stream": stream, "feedback_rate": feedback_rate, "noise": noise,
        "poison": poison, "kind": kind, "promotion": promotion, "rate": rate})
    base = FlywheelSettings()
    root = reset_dir(base.data_dir / "demo")
    report_dir = report or root / "report"
    report_dir.mkdir(parents=True, exist_ok=True)
    url = fresh_database(base.database_url.get_secret_value(), database) if base.database_url else None
    settings = demo_settings(base, options, root / "platform", url, free_port())
    log_file = report_dir / "platform.log"
    restore = _log_to(log_file)
    out.print(f"Starting the platform (logs: {log_file}); bootstrapping a {kind} champion on "
              f"{SCENARIOS[scenario][0]} ...")
    started = time.monotonic()
    try:
        with Platform(settings, stop_event=stop) as platform:
            endpoints = platform.endpoints
            if endpoints is None or endpoints.serving_url is None:
                raise StackError("the platform did not start (see the log)")
            replay = Replay(options, settings, endpoints.serving_url, endpoints.database_url,
                            endpoint_connection(settings, endpoints))
            try:
                champion = replay.wait_ready(stop=stop)
                out.print(f"champion version {champion} is serving after {time.monotonic() - started:.0f} s; "
                          f"replaying {len(replay.stream)} texts of {SCENARIOS[scenario][1]}")
                with Live(view(replay), console=out, refresh_per_second=4) as live:
                    replay.run(stop=stop, on_step=lambda r: live.update(view(r)))
                    replay.settle(timeout=90, quiet=8)
                    live.update(view(replay))
                figures = replay.finish()
                paths = write_report(replay.timeline, report_dir)
            finally:
                replay.close()
            if platform.failed:
                raise StackError(f"{', '.join(platform.failed)} failed during the demo (see {log_file})")
    finally:
        restore()
    summary = Table("figure", "value", title="Demo results")
    for key, value in figures.items():
        summary.add_row(key, str(value))
    out.print(summary)
    out.print(f"report: {paths['html']} (plot {paths['png']}), total {time.monotonic() - started:.0f} s")


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
