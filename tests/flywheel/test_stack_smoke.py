from __future__ import annotations

import psycopg

from core.settings import FlywheelSettings
from flywheel import migrate


def test_template_database_is_migrated(db_url: str) -> None:
    assert migrate.current_revision(db_url) == migrate.head_revision(db_url)
    with psycopg.connect(db_url) as conn:
        tables = {r[0] for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname='public'")}
    assert {"predictions", "feedback", "stream_offsets", "dead_letters", "stream_counters"} <= tables


def test_settings_topics_and_labels(settings: FlywheelSettings) -> None:
    assert settings.topics.feedback == f"{settings.topic_prefix}.feedback.v1"
    assert FlywheelSettings(labels="a, b").labels == ("a", "b")  # type: ignore[arg-type]
