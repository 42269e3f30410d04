"""Session fixtures: the real broker (Tansu subprocess, or FLYWHEEL_TEST_KAFKA_BOOTSTRAP) and real
Postgres (FLYWHEEL_TEST_DATABASE_URL, else the local server on 127.0.0.1:5432, else the pgserver wheel).

Isolation: every test that asks for ``db_url`` gets its own database cloned from a migrated template;
every test that asks for ``settings`` gets its own topic prefix (hence its own topics and groups).
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from core.kafka import KafkaConnection
from core.settings import FlywheelSettings
from flywheel import migrate
from flywheel.stack import EmbeddedBroker, EmbeddedPostgres

LOCAL_PG = "postgresql://postgres@127.0.0.1:5432/postgres"


def _reachable(url: str) -> bool:
    try:
        psycopg.connect(url, connect_timeout=2).close()
    except psycopg.OperationalError:
        return False
    return True


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    external = os.environ.get("FLYWHEEL_TEST_KAFKA_BOOTSTRAP")
    if external:
        yield external
        return
    broker = EmbeddedBroker(log_path=tmp_path_factory.mktemp("broker") / "broker.log")
    broker.start()
    try:
        yield broker.bootstrap
    finally:
        broker.stop()


@pytest.fixture(scope="session")
def kafka_conn(kafka_bootstrap: str) -> KafkaConnection:
    """The test broker's connection (plaintext, like every embedded broker)."""
    return KafkaConnection(bootstrap_servers=kafka_bootstrap)


@pytest.fixture(scope="session")
def pg_admin_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """URL of a maintenance database on a server where tests may create databases."""
    for url in (os.environ.get("FLYWHEEL_TEST_DATABASE_URL"), LOCAL_PG):
        if url and _reachable(url):
            yield url
            return
    server = EmbeddedPostgres(Path(tmp_path_factory.mktemp("pgserver")))
    try:
        yield server.start()
    finally:
        server.stop()


def _with_dbname(url: str, name: str) -> str:
    info = psycopg.conninfo.conninfo_to_dict(url)
    info["dbname"] = name
    return psycopg.conninfo.make_conninfo(**info)  # type: ignore[arg-type]


def _admin_exec(admin_url: str, statement: sql.Composable, params: tuple[object, ...] = ()) -> None:
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(statement, params)


@pytest.fixture(scope="session")
def template_db(pg_admin_url: str) -> Iterator[str]:
    name = f"flywheel_tpl_{uuid.uuid4().hex[:10]}"
    _admin_exec(pg_admin_url, sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = _with_dbname(pg_admin_url, name)
    migrate.upgrade(url)
    try:
        yield name
    finally:
        _admin_exec(pg_admin_url, sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@contextlib.contextmanager
def _clone(admin_url: str, template: str, prefix: str) -> Iterator[str]:
    """A new database copied from ``template`` for one test, dropped afterwards."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    _admin_exec(admin_url, sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
        sql.Identifier(name), sql.Identifier(template)))
    try:
        yield _with_dbname(admin_url, name)
    finally:
        _admin_exec(admin_url, sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture
def db_url(pg_admin_url: str, template_db: str) -> Iterator[str]:
    with _clone(pg_admin_url, template_db, "flywheel_t") as url:
        yield url


@pytest.fixture(scope="session")
def mlflow_template(pg_admin_url: str, template_db: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A database cloned from the platform template, plus the ``mlflow`` schema with MLflow's tables."""
    name = f"flywheel_mltpl_{uuid.uuid4().hex[:10]}"
    _admin_exec(pg_admin_url, sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
        sql.Identifier(name), sql.Identifier(template_db)))
    from registry import open_registry, postgres_backend  # MLflow loads only for tests that need it

    open_registry(postgres_backend(_with_dbname(pg_admin_url, name)), tmp_path_factory.mktemp("tpl"), "template")
    # MLflow keeps a connection pool per URI; a template must have no other sessions to be cloned
    _admin_exec(pg_admin_url, sql.SQL("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                     "WHERE datname = %s AND pid <> pg_backend_pid()"), (name,))
    try:
        yield name
    finally:
        _admin_exec(pg_admin_url, sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture
def registry_db_url(pg_admin_url: str, mlflow_template: str) -> Iterator[str]:
    """A fresh database (platform tables + MLflow's tables in schema ``mlflow``) for this test."""
    with _clone(pg_admin_url, mlflow_template, "flywheel_rt") as url:
        yield url


@pytest.fixture
def topic_prefix() -> str:
    return f"t{uuid.uuid4().hex[:10]}"


@pytest.fixture
def settings(kafka_bootstrap: str, db_url: str, topic_prefix: str, tmp_path: Path) -> FlywheelSettings:
    return FlywheelSettings(
        kafka_bootstrap=kafka_bootstrap,
        database_url=db_url,  # type: ignore[arg-type]
        topic_prefix=topic_prefix,
        data_dir=tmp_path / "data",
        metrics_port=0,
        schema_registry_port=0,
        batch_max_wait_ms=50,
    )
