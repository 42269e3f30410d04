"""Alembic environment: online migrations only, serialised with a Postgres advisory lock."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine, text

_LOCK_KEY = 0x466C7977  # "Flyw": one migrator at a time across processes

url = context.config.get_main_option("sqlalchemy.url")
assert url is not None
engine = create_engine(url)
with engine.connect() as connection:
    connection.execute(text("SELECT pg_advisory_lock(:k)"), {"k": _LOCK_KEY})
    connection.commit()
    try:
        context.configure(connection=connection, transactional_ddl=True)
        with context.begin_transaction():
            context.run_migrations()
        connection.commit()
    finally:
        connection.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": _LOCK_KEY})
        connection.commit()
engine.dispose()
