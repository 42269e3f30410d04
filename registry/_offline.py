"""Keep MLflow off the network. ``import mlflow`` builds a telemetry client (and writes an installation
id under ~/.config/mlflow) unless telemetry is disabled in the environment *before* the import; its
events are sent only when a record is added, which checks the environment again. So: set the
variables before the first import, and drop a client that an earlier import already built."""

from __future__ import annotations

import os
import sys
import threading

OFFLINE_ENV = {"MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true"}
# held while MLflow is first imported: threads opening registries at once (the trainer, the serving pod
# and the canary controller of one `flywheel up`) otherwise race on MLflow's half-imported modules
IMPORT_LOCK = threading.RLock()


def go_offline() -> None:
    with IMPORT_LOCK:
        os.environ.update(OFFLINE_ENV)
        if "mlflow" in sys.modules:
            from mlflow.telemetry import set_telemetry_client

            set_telemetry_client()  # type: ignore[no-untyped-call]  # disabled now: the client becomes None
