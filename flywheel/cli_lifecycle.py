"""``flywheel bootstrap | retrain | evaluate | models ... | process trainer``: the model lifecycle's
admin commands. Each resolves the broker and database like the other admin commands (settings first,
else the running local platform)."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

from core.settings import FlywheelSettings
from flywheel.endpoints import resolve

if TYPE_CHECKING:  # MLflow, torch and Great Expectations load only when a command needs them
    from prometheus_client import CollectorRegistry

    from flywheel.lifecycle import Lifecycle
    from trainer.runs import RunResult

models_app = typer.Typer(help="Declared models (create, list), their versions (versions, show, promote, "
                              "rollback) and the stored files no version uses (gc).", no_args_is_help=True)
out = Console()
ModelOption = Annotated[str | None, typer.Option("--model", help="Model name; default: FLYWHEEL_MODEL_NAME.")]


@contextlib.contextmanager
def _lifecycle(model: str | None = None) -> Iterator[Lifecycle]:
    from core.db import session_connector
    from flywheel.lifecycle import lifecycle
    from tasks import ModelStore, UnknownModel

    settings = FlywheelSettings()
    kafka, database = resolve(settings)
    spec = None
    if model is not None and model != settings.model_name:
        with session_connector(database)() as conn:
            spec = ModelStore(conn).get(model)
        if spec is None:
            raise UnknownModel(model)
    with lifecycle(settings, kafka, database, spec=spec) as lc:
        yield lc


def _report(result: RunResult) -> None:
    colour = {"promoted": "green", "canary": "green", "refused": "yellow", "failed": "red"}.get(result.status, "blue")
    out.print(f"[bold {colour}]{result.status}[/]: {result.reason}")
    for c in result.candidates:
        for v in c["verdicts"]:
            out.print(f"  {c['kind']:<14} {v['gate']:<11} {'pass' if v['passed'] else 'FAIL'}  {v['reason']}")
    if result.event is not None:
        e = result.event
        out.print(f"announced {e.action} {e.model} {e.semver} (version {e.version}, traffic {e.traffic:g})")
    if result.status == "failed":
        raise typer.Exit(1)


def bootstrap(
    data: Annotated[Path, typer.Option("--data", help="Labelled CSV: text + label (or label3) [+ domain].")],
    kind: Annotated[str, typer.Option(help="Model kind of the first champion.")] = "tfidf-logreg",
    holdout: Annotated[float, typer.Option(help="Share of the corpus kept as the fixed holdout.")] = 0.2,
    force: Annotated[bool, typer.Option(help="Replace an existing champion.")] = False,
    model: ModelOption = None,
) -> None:
    """Train the first model from a labelled CSV and deploy it as champion (a tabular model's CSV: one
    column per feature + label; a generator's: prompt, response [, context, persona])."""
    from trainer.data import read_labelled_csv, read_tabular_csv
    from trainer.pairs import read_pairs_csv

    with _lifecycle(model) as lc:
        if lc.trainer.generation is not None:
            _report(lc.trainer.bootstrap_pairs(read_pairs_csv(data), source=data.name,
                                               kind=None if kind == "tfidf-logreg" else kind,
                                               holdout_fraction=holdout, force=force))
            return
        features = lc.trainer.features
        rows = (read_labelled_csv(data, lc.settings.labels) if features is None
                else read_tabular_csv(data, features, lc.settings.labels))
        _report(lc.trainer.bootstrap(rows, source=data.name, kind=kind, holdout_fraction=holdout, force=force))


def retrain(
    full: Annotated[bool, typer.Option("--full", help="From scratch on everything (default: incremental).")] = False,
    kind: Annotated[list[str] | None, typer.Option("--kind", help="Candidate kind(s); default: the policy's.")] = None,
    force_deploy: Annotated[bool, typer.Option(
        "--force-deploy", help="A generator's candidate deploys even past a failed gate (every verdict is recorded "
                               "and the version tagged force_deployed).")] = False,
    model: ModelOption = None,
) -> None:
    """Retrain now (single flight with every trainer) and gate the candidate."""
    with _lifecycle(model) as lc:
        _report(lc.trainer.maybe_train("admin", requested="full" if full else "incremental", kinds=kind or None,
                                       force_deploy=force_deploy))


def evaluate(version: Annotated[str | None, typer.Argument(help="Version, semver or alias.")] = None,
             model: ModelOption = None) -> None:
    """The gate report of VERSION (default: the challenger, else the champion) on the current holdout."""
    with _lifecycle(model) as lc:
        verdicts = lc.trainer.evaluate(version)
        for v in verdicts:
            out.print(f"{v.gate:<11} {'[green]pass[/]' if v.passed else '[red]FAIL[/]'}  {v.reason}")


@models_app.command("versions")
def models_versions(model: ModelOption = None) -> None:
    """Every version of a model with its semver, kind, aliases and lineage."""
    with _lifecycle(model) as lc:
        table = Table("version", "semver", "kind", "mode", "aliases", "parent", "samples", "sha256", "created")
        for info in lc.registry.versions():
            table.add_row(info.version, info.semver, info.kind, info.mode, ",".join(info.aliases),
                          info.parent_version or "", str(info.sample_count or 0), info.sha256[:12],
                          info.created_at.strftime("%Y-%m-%d %H:%M:%S"))
        out.print(table)


@models_app.command("show")
def models_show(version: Annotated[str, typer.Argument(help="Version, semver or alias.")],
                model: ModelOption = None) -> None:
    """One version's tags, lineage and artifact."""
    with _lifecycle(model) as lc:
        info = lc.registry.get(version)
        table = Table(show_header=False, title=f"{info.model} {info.semver} (version {info.version})")
        for key in ("kind", "mode", "labels", "aliases", "artifact_uri", "sha256", "run_id", "created_at"):
            table.add_row(key, str(getattr(info, key)))
        for key, value in sorted(info.tags.items()):
            if key != "force_deployed" or len(value) < 200:
                table.add_row(f"tag {key}", value)
        out.print(table)
        card = info.tags.get("model_card")
        if card:  # a generator's model card, stored in the version's artifact
            from rich.markdown import Markdown

            path = lc.registry.fetch(info.version) / card
            out.print(Markdown(path.read_text(encoding="utf-8")) if path.is_file() else f"(model card {card} missing)")


@models_app.command("promote")
def models_promote(
    version: Annotated[str, typer.Argument(help="Version, semver or alias.")],
    reason: Annotated[str, typer.Option(help="Why (recorded and announced).")] = "admin promote",
    model: ModelOption = None,
) -> None:
    """Make VERSION the champion and announce it (`promote` event)."""
    with _lifecycle(model) as lc:
        event = lc.promote(version, reason)
        out.print(f"promoted {event.model} {event.semver} (version {event.version})")


@models_app.command("rollback")
def models_rollback(to: Annotated[str | None, typer.Option("--to", help="Version; default: `previous`.")] = None,
                    reason: Annotated[str, typer.Option(help="Why (recorded and announced).")] = "admin rollback",
                    model: ModelOption = None) -> None:
    """Restore the previous champion (or --to VERSION): one command, one `rollback` event."""
    with _lifecycle(model) as lc:
        event = lc.rollback(to, reason)
        out.print(f"rolled back {event.model} to {event.semver} (version {event.version}) from "
                  f"version {event.previous_version}")


@models_app.command("gc")
def models_gc(
    dry_run: Annotated[bool, typer.Option("--dry-run", help="List what would be removed; remove nothing.")] = False,
    grace_s: Annotated[float, typer.Option("--grace-s", help="Keep a blob changed this recently (seconds): a "
                                                             "registration may be about to link it.")] = 3600.0,
) -> None:
    """Remove the large files stored once by content (an encoder graph) that no registered version of any
    model links to any more: left by deleted versions and failed runs. Safe beside running registrations."""
    from registry import open_from_settings

    settings = FlywheelSettings()
    database = settings.database_url.get_secret_value() if settings.database_url else resolve(settings)[1]
    found = open_from_settings(settings, database).collect_blobs(grace_s=grace_s, dry_run=dry_run)
    verb = "would remove" if found.dry_run else "removed"
    out.print(f"{verb} {len(found.removed)} blobs and {found.stray_links} links to them in unregistered stored "
              f"copies: {found.freed_bytes / 1e6:.1f} MB; kept {found.kept} in use, {found.kept_young} changed "
              f"within {grace_s:g} s")
    for digest in found.removed:
        out.print(f"  sha256 {digest}")


def _metrics(s: FlywheelSettings) -> CollectorRegistry:
    """The process's Prometheus registry, served on ``metrics_port`` (0 = not served)."""
    from prometheus_client import CollectorRegistry, start_http_server

    metrics = CollectorRegistry()
    if s.metrics_port:
        start_http_server(s.metrics_port, addr=s.metrics_host, registry=metrics)
    return metrics


def process_trainer(stop: threading.Event) -> None:
    """A trainer consumer per declared model (and one for each model declared later)."""
    from flywheel import fleet
    from flywheel.lifecycle import lifecycle
    from streams.runtime import tune_interpreter
    from tasks import ModelSpec
    from trainer.metrics import TrainerMetrics
    from trainer.service import TrainerService

    tune_interpreter()
    s = FlywheelSettings()
    kafka, database = resolve(s)
    metrics = TrainerMetrics(_metrics(s))  # one set for every model (labelled by model): a registry takes each once

    def run(spec: ModelSpec | None) -> None:
        with lifecycle(s, kafka, database, metrics=metrics, spec=spec) as lc:
            TrainerService(lc.trainer, lc.config, kafka=kafka, group=fleet.trainer_group(s, spec),
                           signal_topics=[s.topics.landed, s.topics.curated], request_topic=s.topics.retrain,
                           session_timeout_ms=s.session_timeout_ms).run(stop)

    fleet.run_per_model(s, database, stop, fleet.declared(s, database), run, name="flywheel-trainer")


def process_canary(stop: threading.Event) -> None:
    """The online monitors of every declared model: its canary controller (and champion watchdog) and, in
    a thread beside it, its drift monitor (text or tabular, by its task; ``FLYWHEEL_DRIFT_CONFIG``;
    ``enabled: false`` turns it off)."""
    from curation.drift import DriftMetrics, load_drift_config
    from flywheel import fleet
    from flywheel.lifecycle import lifecycle
    from flywheel.models import settings_for
    from serving.canary import CanaryMetrics, controller_for, load_canary_config
    from streams.runtime import tune_interpreter
    from tasks import ModelSpec
    from trainer.drift import drift_monitor_for

    tune_interpreter()
    s = FlywheelSettings()
    kafka, database = resolve(s)
    metrics = _metrics(s)
    canary, drift = load_canary_config(s.canary_config), load_drift_config(s.drift_config)
    canary_metrics, drift_metrics = CanaryMetrics(metrics), DriftMetrics(metrics)

    def run(spec: ModelSpec | None) -> None:
        model_settings = s if spec is None else settings_for(s, spec)
        with lifecycle(s, kafka, database, spec=spec) as lc:
            if drift.enabled:  # by task: texts, or a tabular model's features
                monitor = drift_monitor_for(lc, database, drift, drift_metrics)
                threading.Thread(target=monitor.run, args=(stop,), name=f"flywheel-drift.{model_settings.model_name}",
                                 daemon=True).start()
            controller_for(model_settings, kafka, database, canary, actions=lc.actions,
                           metrics=canary_metrics).run(stop)

    fleet.run_per_model(s, database, stop, fleet.declared(s, database), run, name="flywheel-canary")
