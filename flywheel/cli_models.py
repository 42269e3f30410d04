"""``flywheel models create | list`` (declared models) and ``flywheel feedback import`` (outcomes from a
file, e.g. a log or an API export, through the same validation, dedup and join as the stream)."""

from __future__ import annotations

import csv
import hashlib
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
import yaml
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from core.settings import FlywheelSettings
from flywheel.endpoints import resolve

if TYPE_CHECKING:  # the stages' modules load only when a command runs: `flywheel --help` stays fast
    from schemas.events import FeedbackEventV2

feedback_app = typer.Typer(help="Feedback from files: import outcomes.", no_args_is_help=True)
out = Console()
err = Console(stderr=True)


def models_create(
    spec_file: Annotated[Path, typer.Argument(help="YAML or JSON: one model spec, or `models: [spec, ...]`.")],
    replace: Annotated[bool, typer.Option(help="Change a model that exists (its task cannot change).")] = False,
) -> None:
    """Declare models (name, task, labels, features, kinds, training): stored in Postgres, picked up by
    ingest, curation and the trainers of a running platform."""
    from core.db import session_connector
    from flywheel import models
    from tasks import SpecError, parse_spec

    try:
        document = yaml.safe_load(spec_file.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise SpecError(f"{spec_file}: cannot read it: {exc}") from exc
    items = document["models"] if isinstance(document, dict) and "models" in document else [document]
    if not isinstance(items, list):
        raise SpecError(f"{spec_file}: `models` must be a list of specs")
    specs = [parse_spec(item, f"{spec_file}: spec {i}") for i, item in enumerate(items)]
    _, database = resolve(FlywheelSettings())
    with session_connector(database)() as conn:
        changed = models.create_all(conn, specs, replace=replace)  # all or none
    for spec, new in zip(specs, changed, strict=True):
        out.print(f"{'declared' if new else 'unchanged'} {spec.name} ({spec.task}, labels {list(spec.labels)})")


def models_list() -> None:
    """Every declared model: task, labels, features, kinds, where it was declared (the default model by the
    settings when nothing stored it yet)."""
    from core.db import session_connector
    from flywheel import models
    from tasks import ModelStore

    settings = FlywheelSettings()
    _, database = resolve(settings)
    with session_connector(database)() as conn:
        store = ModelStore(conn)
        specs, sources = store.all(), store.sources()
    if settings.model_name not in {spec.name for spec in specs}:  # declared by the settings until `flywheel up`
        specs = [models.default_spec(settings), *specs]
        sources[settings.model_name] = (models.SETTINGS_SOURCE, None)
    table = Table("model", "task", "labels", "features", "kinds", "declared by", "updated")
    for spec in specs:
        source, updated = sources.get(spec.name, ("?", None))
        kinds = ",".join(spec.kinds) if spec.kinds else "(policy)"
        default = " (default)" if spec.name == settings.model_name else ""
        table.add_row(spec.name + default, spec.task, ",".join(spec.labels),
                      str(len(spec.features.features)) if spec.features else "-", kinds, source,
                      updated.strftime("%Y-%m-%d %H:%M:%S") if updated else "")
    out.print(table)


@feedback_app.command("import")
def feedback_import(
    file: Annotated[Path, typer.Argument(help="JSONL or CSV: prediction_id (or task_id) + label (or outcome) "
                                              "[+ user_id, ts].")],
    model: Annotated[str, typer.Option("--model", help="The model the outcomes judge.")],
    source: Annotated[str, typer.Option(help="Recorded as the feedback's source.")] = "import",
    shadow: Annotated[bool, typer.Option(help="Also judge the shadow model's prediction of each task "
                                              "(`<prediction_id>-shadow`): a model in shadow mode is then "
                                              "measured on the real outcomes.")] = False,
) -> None:
    """Send outcomes as feedback events (schema version 2) on the feedback topic. The feedback id is derived
    from the model and the task id, so importing the same file twice lands each outcome once; ingest
    validates, deduplicates and joins them as it does the stream. Rows that are not valid feedback are
    written with their reason to FILE.rejected.jsonl and sent nowhere; the exit code is 1 if any."""
    from core.db import session_connector
    from schemas import DecodeError, EventRules
    from streams.kafka import CheckedProducer, create_topics, producer_config
    from streams.kafka import admin as kafka_admin
    from tasks import ModelStore, UnknownModel

    settings = FlywheelSettings()
    kafka, database = resolve(settings)
    with session_connector(database)() as conn:
        spec = ModelStore(conn).get(model)
    if spec is None:
        raise UnknownModel(model)
    # what ingest would dead-letter is refused here (the stream's rules: a ts too far ahead, ...)
    rules = EventRules(frozenset(spec.labels), settings.max_text_chars, timedelta(seconds=settings.max_future_skew_s))
    events, rejected = [], []
    for line, row in _rows(file):
        try:
            event = _event(row, model, source)
            rules.check(event, datetime.now(UTC))
        except (ValueError, ValidationError, DecodeError) as exc:
            rejected.append({"line": line, "row": row, "reason": _reason(exc)})
            continue
        if event.label is not None and event.label not in spec.labels:
            rejected.append({"line": line, "row": row,
                             "reason": f"label {event.label!r} is not one of {model}'s {list(spec.labels)}"})
            continue
        events.append(event)
        if shadow:
            events.append(event.model_copy(update={"prediction_id": f"{event.prediction_id}-shadow",
                                                   "feedback_id": f"{event.feedback_id}-shadow"}))
    create_topics(kafka_admin(kafka), [settings.topics.feedback], settings.topic_partitions)
    producer = CheckedProducer(producer_config(kafka))
    sent = producer.send_all(settings.topics.feedback,
                             ((e.prediction_id.encode(), e.to_json()) for e in events), timeout=60.0)
    out.print(f"sent {sent} outcomes of {model} to {settings.topics.feedback}"
              + (" (each for the served and the shadow prediction)" if shadow else ""))
    path = file.with_name(file.name + ".rejected.jsonl")
    if not rejected:
        path.unlink(missing_ok=True)  # an earlier import's rejects no longer describe this file
        return
    path.write_text("".join(json.dumps(r, default=str) + "\n" for r in rejected))
    err.print(f"{len(rejected)} rows rejected (first: line {rejected[0]['line']}: {rejected[0]['reason']}); "
              f"all with their reasons in {path}")
    raise typer.Exit(1)


def _rows(file: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    from tasks import SpecError

    try:
        with file.open(newline="", encoding="utf-8-sig") as fh:  # a spreadsheet's CSV starts with a BOM
            if file.suffix.lower() == ".csv":
                for line, row in enumerate(csv.DictReader(fh), start=2):
                    yield line, {k: v for k, v in row.items() if k is not None and v not in (None, "")}
                return
            for line, text in enumerate(fh, start=1):
                if not text.strip():
                    continue
                try:
                    value = json.loads(text)
                except ValueError as exc:
                    yield line, {"_raw": text.rstrip("\n"), "_error": f"not JSON: {exc}"}
                    continue
                yield line, value if isinstance(value, dict) else {"_raw": text.rstrip("\n"),
                                                                   "_error": "not a JSON object"}
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError(f"{file}: cannot read it: {exc}") from exc


def _event(row: dict[str, Any], model: str, source: str) -> FeedbackEventV2:
    from schemas.events import FeedbackEventV2

    if "_error" in row:
        raise ValueError(row["_error"])
    task = row.get("prediction_id", row.get("task_id"))
    if task in (None, ""):
        raise ValueError("needs a prediction_id (or task_id)")
    label = row.get("label", row.get("outcome"))
    digest = hashlib.sha256(f"{model}\x1f{task}".encode()).hexdigest()[:32]
    return FeedbackEventV2.model_validate({
        "feedback_id": f"outcome-{digest}", "prediction_id": str(task), "model": model,
        "label": None if label is None else str(label), "thumbs": row.get("thumbs"),
        "user_id": row.get("user_id"), "source": source, "ts": row.get("ts") or datetime.now(UTC).isoformat()})


def _reason(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        return "; ".join(f"{'.'.join(map(str, e['loc'])) or 'row'}: {e['msg']}" for e in exc.errors()[:3])
    return str(exc)
