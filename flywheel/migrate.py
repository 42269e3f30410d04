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


DEFAULT_MODEL = "sentiment"


def alembic_config(url: str, default_model: str = DEFAULT_MODEL) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(_MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", sqlalchemy_url(url).replace("%", "%%"))
    cfg.set_main_option("flywheel.default_model", default_model.replace("%", "%%"))
    return cfg


def upgrade(url: str, revision: str = "head", *, default_model: str = DEFAULT_MODEL) -> None:
    """Apply migrations up to ``revision`` (idempotent; serialised by an advisory lock in env.py).
    ``default_model`` (``FLYWHEEL_MODEL_NAME``) owns the rows that predate per-model tables (0009)."""
    try:
        command.upgrade(alembic_config(url, default_model), revision)
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
