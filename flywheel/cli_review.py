"""``flywheel review next | label``: the active-learning review queue (see :mod:`curation.review`)."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from core.exceptions import ConfigError
from core.settings import FlywheelSettings
from flywheel.endpoints import resolve

review_app = typer.Typer(help="Label what the model is least sure of: next, label.", no_args_is_help=True)
out = Console()


@review_app.command("next")
def review_next(
    n: Annotated[int, typer.Option("-n", min=1, max=500, help="How many items.")] = 10,
    reviewer: Annotated[str, typer.Option(help="Who claims them (not handed to others for 10 minutes).")] = "cli",
) -> None:
    """The unjudged predictions with the smallest margin between the two likeliest labels."""
    from core import db
    from curation.review import ReviewQueue

    settings = FlywheelSettings()
    _kafka, database = resolve(settings)
    with db.connect(database, autocommit=True) as conn:
        items = ReviewQueue(conn, settings.model_name).next(n, reviewer)
    if not items:
        out.print("nothing to review: every recent prediction has feedback or is claimed")
        return
    if any(item.response is not None for item in items):  # a generator: what it was asked, what it answered
        table = Table("prediction_id", "asked (persona / context / prompt)", "model answered")
        for item in items:
            asked = " / ".join(part for part in (item.persona, item.context, item.prompt) if part)
            table.add_row(item.prediction_id, asked[:300], (item.response or "")[:300])
        out.print(table)
        out.print("answer one with a rating or a corrected response: POST /v1/models/<name>/feedback")
        return
    table = Table("prediction_id", "margin", "model said", "text")
    for item in items:
        table.add_row(item.prediction_id, f"{item.margin:.3f}", item.label, item.text[:200])
    out.print(table)
    out.print(f"label one with: flywheel review label <prediction_id> <{'|'.join(settings.labels)}>")


@review_app.command("label")
def review_label(
    prediction_id: Annotated[str, typer.Argument(help="A prediction id from `review next`.")],
    label: Annotated[str, typer.Argument(help="The right label.")],
    reviewer: Annotated[str, typer.Option(help="Recorded as the feedback's user id.")] = "cli",
) -> None:
    """Send the label as feedback (source ``review``): ingested, joined and curated like any other."""
    from core import db
    from curation.review import ReviewQueue
    from streams.producer import FeedbackProducer

    settings = FlywheelSettings()
    if label not in settings.labels:
        raise ConfigError(f"label {label!r} is not one of {list(settings.labels)}")
    kafka, database = resolve(settings)
    with db.connect(database, autocommit=True) as conn:
        item = ReviewQueue(conn, settings.model_name).find(prediction_id)
    if item is None:
        raise ConfigError(f"no prediction {prediction_id!r} of model {settings.model_name!r} has landed")
    producer = FeedbackProducer(kafka, settings.topics)
    try:
        event = producer.feedback(prediction_id, label=label, user_id=f"review:{reviewer}", source="review")
    finally:
        producer.close()  # flushes: a delivery failure raises here
    verdict = "agrees with" if label == item.label else "corrects"
    out.print(f"feedback {event.feedback_id} sent: {label!r} {verdict} the model's {item.label!r}")
