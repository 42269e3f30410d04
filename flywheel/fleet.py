"""One worker per declared model: the trainer consumers (``flywheel up``, ``flywheel process trainer``) and
the online monitors (``flywheel process canary``) run a body per model, each in its own thread, and
start one for a model declared while they run."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from core.db import session_connector
from core.settings import FlywheelSettings
from tasks import ModelSpec, ModelStore

log = logging.getLogger(__name__)
MODEL_WATCH_S = 10.0  # how often a fleet looks for models declared while it runs

Start = Callable[[str, Callable[[], None]], None]
"""Start a named thread running a body (the platform's starts a thread that stops the platform on error)."""


def trainer_group(settings: FlywheelSettings, spec: ModelSpec | None) -> str:
    """The trainer consumer group of a model: the default model keeps ``flywheel-trainer``."""
    return "flywheel-trainer" if spec is None or spec.name == settings.model_name else f"flywheel-trainer.{spec.name}"


def run_per_model(settings: FlywheelSettings, database_url: str, stop: threading.Event, known: list[ModelSpec],
                  body: Callable[[ModelSpec | None], None], *, name: str, start: Start | None = None) -> None:
    """``body(spec)`` for every model of ``known`` and every model declared later (checked every
    ``MODEL_WATCH_S``), each in a thread of its own named ``<name>.<model>``; the default model's (``spec``
    None when it is not declared) runs in the calling thread, until it returns."""
    start = start or _daemon
    started = {settings.model_name}

    def launch(spec: ModelSpec) -> None:
        if spec.name not in started:
            started.add(spec.name)
            start(f"{name}.{spec.name}", lambda: body(spec))

    def watch() -> None:
        while not stop.wait(MODEL_WATCH_S):
            try:
                with session_connector(database_url)() as conn:
                    specs = ModelStore(conn).all()
            except Exception as exc:  # the database is away: the next look retries
                log.warning("cannot read the declared models: %s", exc)
                continue
            for spec in specs:
                launch(spec)

    for spec in known:
        launch(spec)
    start(f"{name}-models", watch)
    body(next((m for m in known if m.name == settings.model_name), None))


def _daemon(name: str, body: Callable[[], None]) -> None:
    def target() -> None:
        try:
            body()
        except Exception:  # one model's worker must not take the others down
            log.exception("%s stopped with an error", name)

    threading.Thread(target=target, name=name, daemon=True).start()


def declared(settings: FlywheelSettings, database_url: str) -> list[ModelSpec]:
    """The declared models (the default one stored from the settings first, as ``up`` does)."""
    from flywheel import models

    with session_connector(database_url)() as conn:
        return models.declare(conn, settings)
