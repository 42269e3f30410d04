"""Migration 0006 on a database with landed feedback: what the 0003 view showed becomes accepted
samples (landed_at kept, so the trainer sees the same snapshot), the service scores them without
changing their verdict, and the downgrade restores the view."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from alembic import command
from psycopg import sql

from core import db
from core.db import session_connector
from core.kafka import KafkaConnection
from curation import CurationConfig
from curation.service import CurationService
from flywheel import migrate
from schemas import Curated
from trainer.data import SampleStore, Snapshot

from .helpers import LABELS, Feedback, RecordingPublisher, land


@pytest.fixture
def db_at_0005(pg_admin_url: str) -> Iterator[str]:
    name = f"flywheel_mig_{uuid.uuid4().hex[:10]}"
    with db.connect(pg_admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    from tests.conftest import _with_dbname

    url = _with_dbname(pg_admin_url, name)
    migrate.upgrade(url, "0005")
    try:
        yield url
    finally:
        with db.connect(pg_admin_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def _view(url: str) -> list[tuple[object, ...]]:
    with db.connect(url) as conn:
        return conn.execute("SELECT id, feedback_id, prediction_id, text, label, status, weight, reasons, user_id, "
                            "domain, segment, ts, landed_at FROM samples ORDER BY id").fetchall()


def test_upgrade_keeps_every_landed_sample_and_downgrade_restores_the_view(db_at_0005: str) -> None:
    url = db_at_0005
    ids = land(url, [Feedback("a fine film", "positive", served="positive"),
                     Feedback("a dull film", None, thumbs="up", served="negative"),
                     Feedback("a so-so film", None, thumbs="down", served="positive"),
                     Feedback("a great film", "positive", served="negative")])
    land(url, [Feedback("waiting for its prediction", "negative")], status="pending")
    before = _view(url)
    assert [r[0] for r in before] == [ids[0], ids[1], ids[3]]
    with db.connect(url) as conn:  # the snapshot a trainer of this version took (no holdout reserved)
        row = conn.execute("SELECT COALESCE(max(id), 0), count(*) FROM samples WHERE status = 'accepted'").fetchone()
        assert row is not None
        snapshot = Snapshot(watermark=int(row[0]), count=int(row[1]))

    migrate.upgrade(url)
    assert _view(url) == before  # same rows, same columns, same landed_at
    with db.connect(url) as conn:
        assert SampleStore(conn, 0, model="sentiment").snapshot() == snapshot
        kind = conn.execute("SELECT relkind FROM pg_class WHERE relname = 'samples'").fetchone()
        assert kind is not None and kind[0] == "r"
        state = conn.execute("SELECT watermark FROM curation_state").fetchone()
        assert state is not None and state[0] == ids[3]

    # the first pass scores the migrated rows (verdicts kept) and sweeps in the thumbs down
    sent = RecordingPublisher()
    service = CurationService(connector=session_connector(url), config=CurationConfig(), labels=LABELS,
                              kafka=KafkaConnection(bootstrap_servers="127.0.0.1:1"), group="g", landed_topic="l",
                              curated_topic="c", default_model="sentiment", producer=sent)
    result = service.curate_pass(sweep=True)
    assert result.backfilled == 3 and result.total("rejected") == 1
    assert [Curated.model_validate_json(v).rejected for _t, _k, v in sent.records] == [1]
    with db.connect(url) as conn:
        rows = conn.execute("SELECT id, status, label_quality IS NOT NULL, text_hash IS NOT NULL, disagreement, "
                            "curated_at IS NOT NULL FROM samples ORDER BY id").fetchall()
    assert rows == [(ids[0], "accepted", True, True, False, True), (ids[1], "accepted", True, True, False, True),
                    (ids[2], "rejected", False, True, True, True), (ids[3], "accepted", True, True, True, True)]
    assert _view(url)[:2] == before[:2]

    command.downgrade(migrate.alembic_config(url), "0005")
    assert _view(url) == before
