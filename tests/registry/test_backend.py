"""Backend URIs: a Postgres schema through psycopg 3, or a sqlite file (pure, no database)."""

from __future__ import annotations

from pathlib import Path

import pytest
from psycopg.conninfo import conninfo_to_dict
from sqlalchemy.engine import make_url

from core.exceptions import ConfigError
from registry import postgres_backend, sqlite_backend
from registry.backend import _libpq, schema_of


def test_postgres_backend_uses_psycopg_and_a_search_path() -> None:
    backend = postgres_backend("postgresql://app:s3cret@db.internal:6432/flywheel?sslmode=require", "registry")
    url = make_url(backend)
    assert (url.drivername, url.host, url.port, url.database, url.password) == (
        "postgresql+psycopg", "db.internal", 6432, "flywheel", "s3cret")
    assert url.query == {"sslmode": "require", "options": "-csearch_path=registry"}
    assert schema_of(backend) == "registry"
    assert conninfo_to_dict(_libpq(backend)) == {  # what the lock connection uses
        "host": "db.internal", "port": "6432", "user": "app", "password": "s3cret", "dbname": "flywheel",
        "sslmode": "require", "options": "-csearch_path=registry"}


def test_postgres_backend_from_conninfo_keeps_a_unix_socket_and_other_options() -> None:
    backend = postgres_backend("host=/run/pg dbname=fw user=me options='-c statement_timeout=5s'")
    url = make_url(backend)
    assert url.host is None and url.query["host"] == "/run/pg"
    assert url.query["options"] == "-c statement_timeout=5s -csearch_path=mlflow"
    assert schema_of(backend) == "mlflow"
    assert conninfo_to_dict(_libpq(backend))["options"] == "-c statement_timeout=5s -csearch_path=mlflow"
    assert schema_of(postgres_backend(backend.replace("postgresql+psycopg", "postgresql"), "other")) == "other"


def test_bad_backends_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        postgres_backend("postgresql://localhost/fw", schema="Robert'); DROP TABLE x;--")
    with pytest.raises(ConfigError, match="own schema"):
        schema_of("postgresql+psycopg://localhost/fw")  # MLflow would share the platform's alembic_version
    with pytest.raises(ConfigError):
        schema_of("http://mlflow.internal:5000")
    assert sqlite_backend(tmp_path / "r.db") == f"sqlite:///{tmp_path}/r.db"
    assert schema_of(sqlite_backend(tmp_path / "r.db")) is None
