"""The demo's report: ``report.png`` (rolling accuracy, live vs static, decisions marked; a generator: the
rolling weighted BLEU/ROUGE-L score and the players' rating), ``report.html``, ``report.json``."""

from __future__ import annotations

import base64
import html
import json
import logging
from collections.abc import Sequence
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from flywheel.demo.timeline import Timeline

log = logging.getLogger(__name__)


def write_report(timelines: Timeline | Sequence[Timeline], directory: Path) -> dict[str, Path]:
    """``report.png`` (per scenario: rolling accuracy, live vs static, decisions marked), ``report.html``,
    ``report.json`` (``{"scenarios": {name: {options, figures, markers, runs, rolling}}}``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    every = [timelines] if isinstance(timelines, Timeline) else list(timelines)
    directory.mkdir(parents=True, exist_ok=True)
    fig, axes = plt.subplots(len(every), 1, figsize=(11, 5.5 * len(every)), dpi=110, squeeze=False)
    scenarios: dict[str, Any] = {}
    for ax, timeline in zip(axes[:, 0], every, strict=True):
        generator = timeline.options.task == "text-generation"
        live, static = _plot_generation(ax, timeline) if generator else _plot(ax, timeline)
        scenarios[timeline.options.scenario] = {
            "options": timeline.options.model_dump(), "figures": timeline.figures, "drift_at": timeline.drift_at,
            "markers": [asdict(m) for m in timeline.markers],
            "runs": [{k: v for k, v in r.items() if k != "candidates"} | {"gates": _gates(r)} for r in timeline.runs],
            "rolling": {"live": live, "static": static}}
        if generator:
            scenarios[timeline.options.scenario]["rolling"]["rating"] = timeline.rolling_mean(
                "rating", timeline.options.window)
    fig.tight_layout()
    png = directory / "report.png"
    fig.savefig(png)
    plt.close(fig)
    json_path = directory / "report.json"
    json_path.write_text(json.dumps({"scenarios": scenarios}, indent=2, default=str))
    html_path = directory / "report.html"
    html_path.write_text(_html(every, base64.b64encode(png.read_bytes()).decode()))
    return {"png": png, "html": html_path, "json": json_path}


def _plot(ax: Any, timeline: Timeline) -> tuple[list[float], list[float]]:
    """One scenario's panel: rolling accuracy of what was served vs the static champion, decisions marked."""
    window = timeline.options.window
    live, static = timeline.rolling("live_correct", window), timeline.rolling("static_correct", window)
    xs = list(range(len(live)))
    settled = min(len(xs), window // 3)  # the first steps of a window are too few to mean anything
    ax.plot(xs, [float("nan")] * settled + live[settled:], label="Flywheel (live: served predictions)",
            color="#1f77b4", linewidth=2)
    ax.plot(xs, [float("nan")] * settled + static[settled:], label="static champion (never retrained)",
            color="#7f7f7f", linewidth=1.6, linestyle="--")
    if timeline.drift_at is not None:
        ax.axvline(timeline.drift_at, color="#8c564b", linewidth=2.2, alpha=0.6, label="drift begins")
    _markers(ax, timeline)
    o = timeline.options
    answers = (f"feedback {o.feedback_rate:g}, noise {o.noise:g}, poison {o.poison:g}"
               if o.task == "text-classification" else f"every outcome, {o.feedback_delay} predictions late")
    ax.set_title(f"{o.scenario}: rolling accuracy over {window} predictions ({o.kind}, {answers})")
    ax.set_xlabel("prediction # in the drifted stream" if o.task == "text-classification"
                  else f"prediction # (day {o.start} + #)")
    ax.set_ylabel("accuracy (true labels)")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    return live, static


def _plot_generation(ax: Any, timeline: Timeline) -> tuple[list[float | None], list[float | None]]:
    """A generator's panel: the rolling weighted BLEU/ROUGE-L-precision score of the served answers vs the
    static champion's answers to the same prompts, the players' rolling rating (right axis), decisions."""
    o, window = timeline.options, timeline.options.window
    live, static = timeline.rolling_mean("score", window), timeline.rolling_mean("static_score", window)
    rating = timeline.rolling_mean("rating", window)
    xs = list(range(len(live)))
    nan = float("nan")
    ax.plot(xs, [nan if v is None else v for v in live], label="Flywheel (live: served answers)", color="#1f77b4",
            linewidth=2)
    ax.plot(xs, [nan if v is None else v for v in static], label="static champion (never retrained)",
            color="#7f7f7f", linewidth=1.6, linestyle="--")
    twin = ax.twinx()
    twin.plot(xs, [nan if v is None else v for v in rating], label="players' rating (right axis)",
              color="#ff7f0e", linewidth=1.2, alpha=0.8)
    twin.set_ylim(1, 5)
    twin.set_ylabel("rating (1-5)")
    _markers(ax, timeline)
    ax.set_title(f"{o.scenario}: weighted BLEU/ROUGE-L score, rolling {window} answers\n({o.kind} on {o.base}, "
                 f"{o.max_tokens} tokens; {o.correction_rate:g} of the answers rated <= 3 corrected)", fontsize=10)
    ax.set_xlabel("player question # in the drifted domain")
    ax.set_ylabel("weighted score vs the reference")
    top = max([v for v in live + static if v is not None] + [0.05])
    ax.set_ylim(0, min(1.0, top * 1.3))
    ax.grid(alpha=0.3)
    lines, labels = ax.get_legend_handles_labels()
    more, names = twin.get_legend_handles_labels()
    ax.legend(lines + more, labels + names, loc="upper left", fontsize=8)
    return live, static


def _markers(ax: Any, timeline: Timeline) -> None:
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


def _gates(run: dict[str, Any]) -> list[str]:
    out = []
    for c in run.get("candidates") or []:
        for v in c.get("verdicts", []):
            out.append(f"{c.get('kind')}: {v.get('gate')} {'pass' if v.get('passed') else 'FAIL'}: {v.get('reason')}")
    return out


def _html(timelines: Sequence[Timeline], png_b64: str) -> str:
    esc = html.escape
    sections = []
    for timeline in timelines:
        figures = "".join(f"<tr><th>{esc(str(k))}</th><td>{esc(str(v))}</td></tr>"
                          for k, v in timeline.figures.items())
        runs = "".join(
            f"<tr><td>{esc(str(r['mode']))}</td><td>{esc(str(r['trigger']))}</td><td>{esc(str(r['status']))}</td>"
            f"<td>{esc(str(r.get('sample_count')))}</td><td>{esc(str(r.get('version') or ''))}</td>"
            f"<td>{'<br>'.join(esc(g) for g in _gates(r)) or esc(str(r['reason']))}</td></tr>"
            for r in timeline.runs)
        markers = "".join(f"<tr><td>{m.i}</td><td>{m.t:.1f}</td><td>{esc(m.action)}</td><td>{esc(m.semver)}</td>"
                          f"<td>{esc(m.reason)}</td></tr>" for m in timeline.markers)
        options = esc(json.dumps(timeline.options.model_dump()))
        sections.append(f"""<h2>{esc(timeline.options.scenario)}</h2><p>Options: <code>{options}</code></p>
<h3>Figures</h3><table>{figures}</table>
<h3>Promotions, rollbacks and refusals</h3><table><tr><th>step</th><th>s</th><th>action</th><th>version</th>
<th>reason</th></tr>{markers}</table>
<h3>Training runs and gate verdicts</h3><table><tr><th>mode</th><th>trigger</th><th>status</th><th>samples</th>
<th>version</th><th>gates</th></tr>{runs}</table>""")
    names = ", ".join(t.options.scenario for t in timelines)
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>Flywheel demo report</title>
<style>body{{font-family:sans-serif;max-width:1200px;margin:2em auto}}table{{border-collapse:collapse;margin:1em 0}}
td,th{{border:1px solid #ccc;padding:4px 8px;text-align:left;vertical-align:top;font-size:13px}}</style></head><body>
<h1>Flywheel demo: {esc(names)}</h1>
<p>Generated {datetime.now(UTC):%Y-%m-%d %H:%M:%S} UTC.</p>
<img src="data:image/png;base64,{png_b64}" alt="rolling accuracy" style="width:100%">
{"".join(sections)}</body></html>"""
