"""Another process and this one open the registry on a database MLflow has never seen, at the same
moment, and register: the schema is created once and the semvers do not collide. The other process
opens no Python socket at all (an audit hook records every connect and name lookup; Postgres goes
through libpq, below it). It imports MLflow with telemetry on, as a careless caller would: without the
registry's offline switch MLflow 3.17.2 then looks up config.mlflow-telemetry.io on the first write."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import psycopg

from registry import Lineage, open_registry, postgres_backend
from tests.registry.conftest import MODEL, Saved

REPO = Path(__file__).resolve().parents[2]

CHILD = """
import json, socket, sys
seen = []
sys.addaudithook(lambda event, args: seen.append([event, repr(args[:2])])
                 if event in ("socket.connect", "socket.getaddrinfo") else None)
from pathlib import Path
from registry import Lineage, open_registry
imported_early = "mlflow" in sys.modules  # importing the registry must not import MLflow
import mlflow  # telemetry on: builds a telemetry client that open_registry must drop
print("ready", flush=True)
sys.stdin.readline()
registry = open_registry(sys.argv[1], Path(sys.argv[2]), sys.argv[3])
info = registry.register(Path(sys.argv[4]), mode="bootstrap", metrics={"accuracy": 0.5},
                         lineage=Lineage(data_hash="h", watermark=0, sample_count=24))
registry.promote(info.version, "probe")  # alias writes record telemetry events too
from mlflow.telemetry import get_telemetry_client
with socket.create_server(("127.0.0.1", 0)) as probe:  # proves the hook sees a connect
    port = probe.getsockname()[1]
    socket.create_connection(("127.0.0.1", port)).close()
print(json.dumps({"semver": info.semver, "sockets": seen, "port": port,
                  "telemetry": get_telemetry_client() is not None, "imported_early": imported_early}))
"""


def test_two_processes_initialise_and_register_at_once_offline(db_url: str, tmp_path: Path,
                                                                saved: dict[str, Saved]) -> None:
    backend, artifacts = postgres_backend(db_url), tmp_path / "artifacts"
    env = {k: v for k, v in os.environ.items()  # only the registry may switch telemetry off
           if k not in ("PYTEST_CURRENT_TEST", "MLFLOW_DISABLE_TELEMETRY", "DO_NOT_TRACK", "CI")}
    env["XDG_CONFIG_HOME"] = str(tmp_path / "config")  # where MLflow writes its installation id
    child = subprocess.Popen([sys.executable, "-c", CHILD, backend, str(artifacts), MODEL, str(saved["b"].path)],
                             cwd=REPO, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    assert child.stdin is not None and child.stdout is not None
    try:
        assert child.stdout.readline() == "ready\n"
        child.stdin.write("go\n")
        child.stdin.flush()
        mine = open_registry(backend, artifacts, MODEL).register(
            saved["a"].path, mode="bootstrap", metrics={}, lineage=Lineage(data_hash="h", watermark=0, sample_count=24))
        out, err = child.communicate(timeout=120)
    finally:
        child.kill()
    assert child.returncode == 0, err
    result = json.loads(out.splitlines()[-1])

    assert not result["telemetry"] and not result["imported_early"]
    assert result["sockets"] and all(str(result["port"]) in args for _, args in result["sockets"]), result
    # whoever came second saw no champion (2.0.0) or the first one promoted (1.1.0): never 1.0.0 twice
    semvers = sorted([mine.semver, result["semver"]])
    assert semvers in (["1.0.0", "2.0.0"], ["1.0.0", "1.1.0"])
    assert sorted(v.semver for v in open_registry(backend, artifacts, MODEL).versions()) == semvers
    with psycopg.connect(db_url) as conn:
        assert conn.execute("SELECT count(*) FROM mlflow.alembic_version").fetchone() == (1,)
