"""Two processes open the registry on a database MLflow has never seen, at the same moment, and
register: the schema is created once, the semvers do not collide, and Python opens no socket at all
(an audit hook records every connect and name lookup; Postgres goes through libpq, below it). Without
the registry's offline switch MLflow 3.17.2 looks up config.mlflow-telemetry.io on the first write."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import psycopg

from registry import open_registry, postgres_backend
from tests.registry.conftest import MODEL, Saved

REPO = Path(__file__).resolve().parents[2]

CHILD = """
import json, socket, sys
seen = []
sys.addaudithook(lambda event, args: seen.append([event, repr(args[:2])])
                 if event in ("socket.connect", "socket.getaddrinfo") else None)
from pathlib import Path
from registry import Lineage, open_registry
registry = open_registry(sys.argv[1], Path(sys.argv[2]), sys.argv[3])
info = registry.register(Path(sys.argv[4]), mode="bootstrap", metrics={"accuracy": 0.5},
                         lineage=Lineage(data_hash="h", watermark=0, sample_count=24))
registry.promote(info.version, "probe")  # alias writes record telemetry events too
from mlflow.telemetry import get_telemetry_client
with socket.create_server(("127.0.0.1", 0)) as probe:  # proves the hook sees a connect
    port = probe.getsockname()[1]
    socket.create_connection(("127.0.0.1", port)).close()
print(json.dumps({"semver": info.semver, "sockets": seen, "port": port,
                  "telemetry": get_telemetry_client() is not None}))
"""


def test_two_processes_initialise_and_register_at_once_offline(db_url: str, tmp_path: Path,
                                                                saved: dict[str, Saved]) -> None:
    backend = postgres_backend(db_url)
    env = {k: v for k, v in os.environ.items()  # only the registry may switch telemetry off
           if k not in ("PYTEST_CURRENT_TEST", "MLFLOW_DISABLE_TELEMETRY", "DO_NOT_TRACK", "CI")}
    children = [subprocess.Popen([sys.executable, "-c", CHILD, backend, str(tmp_path / "artifacts"), MODEL,
                                  str(saved[name].path)], cwd=REPO, env=env, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True) for name in ("a", "b")]
    results = []
    for child in children:
        out, err = child.communicate(timeout=120)
        assert child.returncode == 0, err
        results.append(json.loads(out.splitlines()[-1]))

    # the second sees no champion (or the first, and a label set it shares): 2.0.0 or 1.1.0, never 1.0.0 twice
    assert sorted(r["semver"] for r in results) in (["1.0.0", "2.0.0"], ["1.0.0", "1.1.0"])
    for result in results:  # Postgres goes through libpq, below Python's sockets: only the probe is seen
        assert not result["telemetry"]
        assert result["sockets"] and all(str(result["port"]) in args for _, args in result["sockets"]), result
    registry = open_registry(backend, tmp_path / "artifacts", MODEL)
    assert sorted(v.semver for v in registry.versions()) == sorted(r["semver"] for r in results)
    with psycopg.connect(db_url) as conn:
        assert conn.execute("SELECT count(*) FROM mlflow.alembic_version").fetchone() == (1,)
