"""``flywheel process curation``: the curation service in the foreground. It resolves the broker and
database like the other commands (settings first, else the running local platform) and reads its
thresholds from ``FLYWHEEL_CURATION_CONFIG`` (YAML; unset = the built-in defaults)."""

from __future__ import annotations

import threading

import typer

from core.settings import FlywheelSettings
from flywheel.endpoints import resolve


def process_curation(ctx: typer.Context) -> None:
    """Run the curation service (Landed signals, reconcile timer; one curator at a time) until SIGTERM."""
    from prometheus_client import CollectorRegistry, start_http_server

    from curation import CurationMetrics, CurationService, load_curation_config
    from streams.runtime import tune_interpreter

    tune_interpreter()
    stop = ctx.obj if isinstance(ctx.obj, threading.Event) else threading.Event()
    settings = FlywheelSettings()
    config = load_curation_config(settings.curation_config)
    kafka, database = resolve(settings)
    registry = CollectorRegistry()
    if settings.metrics_port:
        start_http_server(settings.metrics_port, addr=settings.metrics_host, registry=registry)
    CurationService.from_settings(settings, kafka, database, config,
                                  metrics=CurationMetrics(registry)).run(stop)
