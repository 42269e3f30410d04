"""Where a running local platform listens, and how admin commands find it.

``flywheel up`` records its endpoints in ``<data_dir>/stack.json``; every other command reads them from
there unless the settings name a broker and a database. Kept apart from :mod:`flywheel.platform` (which
imports every stage) so that a command that only needs the endpoints starts in a fraction of a second.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.exceptions import ConfigError
from core.kafka import KafkaConnection
from core.settings import FlywheelSettings


@dataclass(frozen=True)
class Endpoints:
    """Where a running platform listens (written to ``stack.json``)."""

    pid: int
    bootstrap: str
    database_url: str
    metrics_url: str | None
    schema_registry_url: str | None
    embedded_broker: bool
    embedded_postgres: bool
    serving_url: str | None = None


def state_file(settings: FlywheelSettings) -> Path:
    return settings.data_dir / "stack.json"


def read_endpoints(settings: FlywheelSettings) -> Endpoints | None:
    path = state_file(settings)
    try:
        data: dict[str, Any] = json.loads(path.read_text())
        endpoints = Endpoints(**data)
    except (OSError, ValueError, TypeError):
        return None
    return endpoints if pid_alive(endpoints.pid) else None


def resolve(settings: FlywheelSettings) -> tuple[KafkaConnection, str]:
    """The Kafka connection and database URL for admin commands: settings first, else a running ``up``
    (its embedded broker is plaintext; an external one it used gets the security settings)."""
    running = read_endpoints(settings)
    database = (settings.database_url.get_secret_value() if settings.database_url else None) or (
        running.database_url if running else None)
    bootstrap = settings.kafka_bootstrap or (running.bootstrap if running else None)
    if not bootstrap or not database:
        missing = [n for n, v in (("FLYWHEEL_KAFKA_BOOTSTRAP", bootstrap), ("FLYWHEEL_DATABASE_URL", database))
                   if not v]
        raise ConfigError(
            f"no running local platform in {settings.data_dir} and {' / '.join(missing)} not set: "
            "start one with `flywheel up` or point the settings at your cluster")
    return endpoint_connection(settings, running), database


def endpoint_connection(settings: FlywheelSettings, running: Endpoints | None) -> KafkaConnection:
    """The connection to FLYWHEEL_KAFKA_BOOTSTRAP, else to the broker of a running ``up``."""
    if settings.kafka_bootstrap or running is None:
        return settings.kafka_connection()
    if running.embedded_broker:
        return KafkaConnection(bootstrap_servers=running.bootstrap)
    return settings.kafka_connection(running.bootstrap)


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` still runs. A zombie does not: it has exited (its ports, locks and files are
    released) and only waits for its parent to reap it. An orphan (a child of a killed ``up``) is reaped by
    init, which may take seconds on a loaded machine, or longer under an init that reaps on a timer."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat_line = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:  # it exited meanwhile, or there is no procfs (not Linux) to tell a zombie by
        return not Path("/proc/self").exists()
    return stat_line[stat_line.rindex(b")") + 2:][:1] not in (b"Z", b"X")  # state follows "(comm) "
