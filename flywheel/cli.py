"""The ``flywheel`` command: run the local platform, processors and the admin work.

Expected failures (broker or database unreachable, bad arguments) print one clear line and exit 1;
tracebacks are for bugs.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.table import Table

from core.exceptions import FlywheelError
from core.settings import FlywheelSettings
from flywheel import cli_curation, cli_demo, cli_lifecycle, cli_models, cli_review
from flywheel.endpoints import Endpoints, resolve
from flywheel.exceptions import StackError
from flywheel.signals import stop_on_signals

app = typer.Typer(help="Flywheel: feedback on predictions becomes a better model in production.",
                  no_args_is_help=True, pretty_exceptions_enable=False)
topics_app = typer.Typer(help="Kafka topics: create, list, describe, delete, lag.", no_args_is_help=True)
db_app = typer.Typer(help="Database schema migrations.", no_args_is_help=True)
process_app = typer.Typer(help="Run one stream processor in the foreground.", no_args_is_help=True)
schemas_app = typer.Typer(help="Event schemas.", no_args_is_help=True)
app.add_typer(topics_app, name="topics")
app.add_typer(db_app, name="db")
app.add_typer(process_app, name="process")
app.add_typer(schemas_app, name="schemas")
app.add_typer(cli_lifecycle.models_app, name="models")
app.add_typer(cli_review.review_app, name="review")
app.add_typer(cli_models.feedback_app, name="feedback")
cli_lifecycle.models_app.command("create")(cli_models.models_create)
cli_lifecycle.models_app.command("list")(cli_models.models_list)
app.command()(cli_lifecycle.bootstrap)
app.command()(cli_lifecycle.retrain)
app.command()(cli_lifecycle.evaluate)
process_app.command("curation")(cli_curation.process_curation)
app.command()(cli_demo.demo)

out = Console()
err = Console(stderr=True)
F = TypeVar("F", bound=Callable[..., Any])


def _settings() -> FlywheelSettings:
    return FlywheelSettings()


def _stop_event(ctx: typer.Context) -> threading.Event:
    """The stop event that ``main`` wired to SIGINT/SIGTERM before anything started."""
    return ctx.obj if isinstance(ctx.obj, threading.Event) else threading.Event()


@app.command()
def up(ctx: typer.Context) -> None:
    """Start the local platform (embedded broker + Postgres unless configured) and run the processors
    until Ctrl-C / SIGTERM."""
    from flywheel.platform import Platform
    from streams.runtime import tune_interpreter

    tune_interpreter()
    settings = _settings()

    def ready(e: Endpoints) -> None:
        table = Table(title="Flywheel is up", show_header=False)
        storage = ("durable, in " + str(settings.data_dir / "broker") if settings.broker_storage == "durable"
                   else "memory: not durable")
        table.add_row("Kafka bootstrap", e.bootstrap + (f" (embedded Tansu, {storage})" if e.embedded_broker else ""))
        table.add_row("Postgres", "embedded pgserver in " + str(settings.data_dir / "pgdata")
                      if e.embedded_postgres else "FLYWHEEL_DATABASE_URL")
        table.add_row("Topics", ", ".join(settings.topics.all()))
        table.add_row("Metrics", e.metrics_url or "disabled")
        table.add_row("Schema registry", e.schema_registry_url or "disabled")
        table.add_row("Serving API", f"{e.serving_url}/predict, /feedback, /models, /docs" if e.serving_url
                      else "disabled")
        table.add_row("Processors", ", ".join(r.group for r in platform.runners) or "none")
        table.add_row("Trainer", f"model {settings.model_name!r}, events on {settings.topics.models}"
                      + (f", first champion from {settings.bootstrap_data}" if settings.bootstrap_data else "")
                      if settings.run_trainer else "off (FLYWHEEL_RUN_TRAINER=false)")
        out.print(table)
        out.print("Ctrl-C stops everything.")

    platform = Platform(settings, on_ready=ready, stop_event=_stop_event(ctx))
    with platform:
        platform.wait()
    if platform.failed:
        raise StackError(f"stopped because {', '.join(platform.failed)} failed (see the log above)")
    out.print("stopped cleanly")


@process_app.command("ingest")
def process_ingest(ctx: typer.Context) -> None:
    """Run the ingest processor against FLYWHEEL_KAFKA_BOOTSTRAP / FLYWHEEL_DATABASE_URL (or the
    running local platform) until SIGTERM."""
    from core.db import session_connector
    from schemas.registry import PostgresSchemaStore
    from streams.ingest import IngestProcessor
    from streams.runtime import ProcessorRunner, RunnerConfig, tune_interpreter

    tune_interpreter()
    settings = _settings()
    kafka_conn, database = resolve(settings)
    store = PostgresSchemaStore(database)
    runner = ProcessorRunner(IngestProcessor.from_settings(settings, store.schema_exists),
                             RunnerConfig.from_settings(settings, kafka_conn), session_connector(database))
    if settings.metrics_port:
        from prometheus_client import start_http_server

        start_http_server(settings.metrics_port, addr=settings.metrics_host, registry=runner.metrics.registry)
    try:
        runner.run(_stop_event(ctx))
    finally:
        store.close()


@app.command()
def serve(ctx: typer.Context) -> None:
    """Run one serving pod (API on FLYWHEEL_SERVING_PORT): it follows the models topic and hot-swaps."""
    from serving.app import create_app
    from serving.app import serve as run_server
    from streams.runtime import tune_interpreter

    tune_interpreter()
    settings = _settings()
    kafka_conn, database = resolve(settings)
    run_server(settings, _stop_event(ctx), host=settings.metrics_host,
               app=create_app(settings, kafka=kafka_conn, database_url=database))


@app.command("schema-registry")
def schema_registry(ctx: typer.Context) -> None:
    """Run the Confluent-compatible schema registry on the platform database until SIGTERM: its REST API on
    FLYWHEEL_SCHEMA_REGISTRY_PORT (0: a free port) bound to FLYWHEEL_METRICS_HOST. Producers of the Confluent
    wire format register their schemas here; ingest checks schema ids against the same tables."""
    from schemas.registry import PostgresSchemaStore, RegistryServer, create_app
    from streams.runtime import tune_interpreter

    tune_interpreter()
    settings = _settings()
    database = _database_only(settings)
    stop = _stop_event(ctx)
    with PostgresSchemaStore(database) as store:
        server = RegistryServer(create_app(store), settings.metrics_host, settings.schema_registry_port,
                                log_level="info")
        url = server.start()
        out.print(f"schema registry at {url}", highlight=False)
        try:
            stop.wait()
        finally:
            server.stop()
    out.print("stopped cleanly")


@process_app.command("canary")
def process_canary(ctx: typer.Context) -> None:
    """Run the online monitors until SIGTERM: canary controller + champion watchdog, and the drift monitor
    (each acts alone per model: advisory locks)."""
    cli_lifecycle.process_canary(_stop_event(ctx))


@process_app.command("trainer")
def process_trainer(ctx: typer.Context) -> None:
    """Run the trainer consumer (signals, reconcile timer, cron) until SIGTERM."""
    cli_lifecycle.process_trainer(_stop_event(ctx))


@db_app.command("upgrade")
def db_upgrade(revision: Annotated[str, typer.Argument(help="Target revision")] = "head") -> None:
    """Apply schema migrations."""
    from flywheel import migrate

    settings = _settings()
    database = _database_only(settings)
    migrate.upgrade(database, revision, default_model=settings.model_name)
    out.print(f"database at revision {migrate.current_revision(database)}")


@db_app.command("current")
def db_current() -> None:
    """Show the database's migration revision and the newest available."""
    from flywheel import migrate

    settings = _settings()
    database = _database_only(settings)
    out.print(f"current {migrate.current_revision(database)}  head {migrate.head_revision(database)}")


def _database_only(settings: FlywheelSettings) -> str:
    if settings.database_url:
        return settings.database_url.get_secret_value()
    return resolve(settings)[1]


@topics_app.command("create")
def topics_create(
    names: Annotated[list[str] | None, typer.Argument(help="Topics (default: all Flywheel topics)")] = None,
    partitions: Annotated[int | None, typer.Option(min=1, help="Partitions (default: settings)")] = None,
    config: Annotated[list[str] | None, typer.Option("--config", "-c", help="key=value topic config")] = None,
) -> None:
    """Create topics (existing ones are left as they are)."""
    from streams import kafka

    settings = _settings()
    kafka_conn, _ = resolve(settings)
    configs = dict(_key_value(c) for c in config or [])
    wanted = names or settings.topics.all()
    created = kafka.create_topics(kafka.admin(kafka_conn), wanted, partitions or settings.topic_partitions, configs)
    for name in wanted:
        out.print(f"{name}: {'created' if name in created else 'exists'}")


@topics_app.command("list")
def topics_list() -> None:
    """List topics and their partition counts."""
    from streams import kafka

    kafka_conn, _ = resolve(_settings())
    table = Table("topic", "partitions")
    for topic in kafka.list_topics(kafka.admin(kafka_conn)):
        table.add_row(topic.name, str(topic.partitions))
    out.print(table)


@topics_app.command("describe")
def topics_describe(name: str) -> None:
    """Partitions, high watermarks (from Fetch) and configs of one topic."""
    from streams import kafka

    kafka_conn, _ = resolve(_settings())
    info = kafka.describe_topic(kafka.admin(kafka_conn), name)
    marks = kafka.high_watermarks(kafka_conn, [(name, p) for p in range(info.partitions)])
    out.print(f"{name} ({info.partitions} partitions)")
    table = Table("partition", "high watermark")
    for p in range(info.partitions):
        table.add_row(str(p), str(marks.get((name, p), "?")))
    out.print(table)
    for key, value in sorted(info.configs.items()):
        out.print(f"  {key} = {value}")


@topics_app.command("delete")
def topics_delete(names: list[str], yes: Annotated[bool, typer.Option("--yes", "-y")] = False) -> None:
    """Delete topics (asks first unless --yes)."""
    from streams import kafka

    kafka_conn, _ = resolve(_settings())
    if not yes and not typer.confirm(f"Delete {', '.join(names)}?"):
        raise typer.Exit(1)
    kafka.delete_topics(kafka.admin(kafka_conn), names)
    for name in names:
        out.print(f"{name}: deleted")


@topics_app.command("lag")
def topics_lag(group: str) -> None:
    """Lag of a processor group: high watermark minus the next offset it committed in Postgres."""
    from flywheel.status import group_lag

    kafka_conn, database = resolve(_settings())
    rows = group_lag(kafka_conn, database, group)
    if not rows:
        err.print(f"group {group!r} has not committed a batch yet (no offsets stored in Postgres)")
        raise typer.Exit(1)
    out.print(f"lag of {group}")
    table = Table("topic", "partition", "next offset", "high watermark", "lag")
    for r in rows:
        table.add_row(r.topic, str(r.partition), str(r.next_offset), str(r.high_watermark), str(r.lag))
    out.print(table)
    out.print(f"total lag {sum(r.lag for r in rows if r.lag is not None)}")


@app.command()
def status() -> None:
    """Broker, database, processors and counts at a glance."""
    from flywheel.status import collect, render

    settings = _settings()
    render(out, collect(settings))


@schemas_app.command("export")
def schemas_export(directory: Path) -> None:
    """Write the JSON Schema of every event type into DIRECTORY."""
    from schemas.jsonschema import write_json_schemas

    for path in write_json_schemas(directory):
        out.print(str(path))


def _key_value(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise typer.BadParameter(f"expected key=value, got {text!r}")
    return key.strip(), value.strip()


def main(stop: threading.Event | None = None, *, early_signals: list[int] | None = None) -> None:
    """The CLI; ``stop`` is set by SIGINT/SIGTERM (``flywheel.__main__.run`` catches them before this
    module is even imported, and ``early_signals`` says which came meanwhile)."""
    stop = stop or threading.Event()
    stop_on_signals(stop, on_signal=lambda signum: logging.getLogger("flywheel").info(
        "received %s, stopping", signal.Signals(signum).name))  # a SIGTERM during start-up is a clean stop
    if err.is_terminal:
        logging.basicConfig(level=logging.INFO, format="%(message)s",
                            handlers=[RichHandler(console=err, show_path=False, rich_tracebacks=False)])
    else:  # files and log collectors get one plain line per record
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("alembic", "pgserver", "httpx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # pgserver asks platformdirs for a runtime dir it does not use; the fallback warning is noise
    warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
    for signum in early_signals or ():
        logging.getLogger("flywheel").info("received %s while starting, stopping", signal.Signals(signum).name)
    try:
        app(obj=stop)
    except FlywheelError as exc:
        err.print(f"[bold red]error:[/] {exc}")
        sys.exit(1)
