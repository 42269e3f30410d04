"""Where the registry keeps its rows: a schema of the platform's Postgres, or one sqlite file.

A backend is MLflow's SQLAlchemy URI. For Postgres it carries ``options=-csearch_path=<schema>`` so
MLflow's tables (and its own ``alembic_version``) live apart from the platform's. :func:`exclusive`
serialises writers across processes: a Postgres advisory lock (per database), or ``flock`` on a file
beside the sqlite database. MLflow's own table creation takes no such lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from core import db
from core.exceptions import ConfigError
from core.settings import FlywheelSettings
from registry._offline import IMPORT_LOCK, go_offline
from registry.base import ModelRegistry
from registry.exceptions import RegistryStoreError

_IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
_SEARCH_PATH = re.compile(r"search_path\s*=\s*([a-z_][a-z0-9_]*)")


def postgres_backend(url: str, schema: str = "mlflow") -> str:
    """The MLflow backend URI for ``schema`` of the database at ``url`` (a ``postgresql://`` URL or
    a libpq ``key=value`` string; unix-socket hosts included), using the psycopg 3 driver."""
    if not _IDENTIFIER.match(schema):
        raise ConfigError(f"registry schema {schema!r} must be a lower-case SQL identifier")
    info = conninfo_to_dict(url)
    info["options"] = f"{info.get('options') or ''} -csearch_path={schema}".strip()
    return db.sqlalchemy_url(make_conninfo(**info))  # type: ignore[arg-type]


def sqlite_backend(path: Path) -> str:
    return f"sqlite:///{path.resolve()}"


def schema_of(backend: str) -> str | None:
    """The Postgres schema a backend URI points at (``None`` for sqlite)."""
    url = _parse(backend)
    if url.get_backend_name() == "sqlite":
        return None
    options = url.query.get("options", "")
    found = _SEARCH_PATH.findall(options if isinstance(options, str) else " ".join(options))
    if not found:
        raise ConfigError("a Postgres registry backend needs its own schema: build it with postgres_backend()")
    return str(found[-1])  # the last -c wins in Postgres too


def create_schema(backend: str) -> None:
    schema = schema_of(backend)
    if schema is None:
        Path(_parse(backend).database or "").parent.mkdir(parents=True, exist_ok=True)
        return
    with db.connect(_libpq(backend), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))


@contextmanager
def exclusive(backend: str, name: str) -> Iterator[None]:
    """Hold the lock called ``name`` for this backend (waits up to 60 s on Postgres)."""
    schema = schema_of(backend)
    if schema is None:
        lock_path = Path(f"{_parse(backend).database}.lock")
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        with lock_path.open("a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)  # released when the file closes
            yield
        return
    key = int.from_bytes(hashlib.sha256(f"flywheel.registry:{schema}:{name}".encode()).digest()[:8], "big",
                         signed=True)
    with db.connect(_libpq(backend), autocommit=True, session_timeouts=True) as conn:
        try:
            conn.execute("SELECT pg_advisory_lock(%s)", (key,))
        except psycopg.errors.LockNotAvailable as exc:
            raise RegistryStoreError(f"timed out waiting for the registry lock {name!r} in schema {schema!r}") from exc
        try:
            yield
        finally:
            with contextlib.suppress(psycopg.Error):  # a broken connection released it already
                conn.execute("SELECT pg_advisory_unlock(%s)", (key,))


def _parse(backend: str) -> URL:
    try:
        url = make_url(backend)
    except (ArgumentError, ValueError) as exc:  # ValueError: e.g. a port that is not a number
        raise ConfigError(f"not a registry backend URI: {exc}") from exc
    if url.get_backend_name() not in ("postgresql", "sqlite"):
        raise ConfigError(f"registry backends are postgresql or sqlite, not {url.get_backend_name()!r}")
    return url


def _libpq(backend: str) -> str:
    """The psycopg conninfo of a Postgres backend URI (not the URL itself: SQLAlchemy writes a space in
    the query as ``+``, which libpq does not decode)."""
    url = _parse(backend)
    params: dict[str, str | int | None] = {"host": url.host, "port": url.port, "user": url.username,
                                           "password": url.password, "dbname": url.database}
    params.update((k, v if isinstance(v, str) else v[-1]) for k, v in url.query.items())
    return make_conninfo("", **{k: v for k, v in params.items() if v is not None})


def open_registry(backend: str, artifact_root: Path, model_name: str) -> ModelRegistry:
    """The MLflow registry of ``model_name`` on ``backend`` (see :func:`postgres_backend`,
    :func:`sqlite_backend`), artifacts under ``artifact_root``. Imports MLflow on first use, offline."""
    with IMPORT_LOCK:
        go_offline()
        from registry.mlflow_registry import MlflowRegistry

    return MlflowRegistry.open(backend, artifact_root, model_name)


def registry_backend(settings: FlywheelSettings, database_url: str) -> str:
    """The platform's registry backend: ``FLYWHEEL_REGISTRY_URI``, else the ``mlflow`` schema of the
    platform database at ``database_url``."""
    if settings.registry_uri is not None:
        return settings.registry_uri.get_secret_value()
    return postgres_backend(database_url)


def artifact_root(settings: FlywheelSettings) -> Path:
    """Where the platform's model artifacts live (``<data_dir>/mlartifacts``, absolute)."""
    return (settings.data_dir / "mlartifacts").resolve()


def open_from_settings(settings: FlywheelSettings, database_url: str) -> ModelRegistry:
    """The registry of ``settings.model_name`` every Flywheel process opens: trainer, pods, CLI, MLflow UI."""
    return open_registry(registry_backend(settings, database_url), artifact_root(settings), settings.model_name)
