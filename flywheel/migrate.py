"""Schema migrations (Alembic): the app's, applied by ``flywheel db upgrade`` and ``flywheel up``."""

from __future__ import annotations

from pathlib import Path

import psycopg
import sqlalchemy.exc
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine

from core.db import root_cause, sqlalchemy_url
from core.exceptions import DatabaseUnavailable

_MIGRATIONS = Path(__file__).with_name("migrations")


def alembic_config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(_MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", sqlalchemy_url(url).replace("%", "%%"))
    return cfg


def upgrade(url: str, revision: str = "head") -> None:
    """Apply migrations up to ``revision`` (idempotent; serialised by an advisory lock in env.py)."""
    try:
        command.upgrade(alembic_config(url), revision)
    except (psycopg.OperationalError, sqlalchemy.exc.OperationalError) as exc:
        raise DatabaseUnavailable(root_cause(exc)) from exc


def current_revision(url: str) -> str | None:
    engine = create_engine(sqlalchemy_url(url))
    try:
        with engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    except sqlalchemy.exc.OperationalError as exc:
        raise DatabaseUnavailable(root_cause(exc)) from exc
    finally:
        engine.dispose()


def head_revision(url: str) -> str | None:
    return ScriptDirectory.from_config(alembic_config(url)).get_current_head()
