"""Migration 0011 (text generation): rows from before it keep their meaning (a classifier's prediction has
a label and probabilities, feedback a label or thumbs); generation rows land after it; a downgrade deletes
only the rows version 0010 cannot hold; upgrading again restores the columns."""

from __future__ import annotations

import psycopg
import pytest
from alembic import command

from core import db
from flywheel import migrate

PRED = ("INSERT INTO predictions (prediction_id, model, model_version, variant, text, input, label, probabilities, "
        "output, latency_ms, ts) VALUES (%s, %s, '1', 'champion', %s, %s, %s, %s, %s, 1.0, now())")
FB = ("INSERT INTO feedback (feedback_id, content_key, prediction_id, label, thumbs, rating, correction, signal, "
      "source, ts, status) VALUES (%s, gen_random_uuid(), %s, %s, %s, %s, %s, %s, 'api', now(), 'pending')")


def test_generation_rows_and_constraints_across_0011(db_url: str) -> None:
    config = migrate.alembic_config(db_url)
    command.downgrade(config, "0010")
    with db.connect(db_url, autocommit=True) as conn:
        conn.execute("INSERT INTO predictions (prediction_id, model, model_version, variant, text, label, "
                     "probabilities, latency_ms, ts) VALUES ('c1', 'sentiment', '1', 'champion', 'fine', 'pos', "
                     "'{\"pos\": 1.0}', 1.0, now())")
        conn.execute("INSERT INTO feedback (feedback_id, content_key, prediction_id, label, source, ts, status) "
                     "VALUES ('cf1', gen_random_uuid(), 'c1', 'pos', 'api', now(), 'pending')")
    migrate.upgrade(db_url)
    with db.connect(db_url, autocommit=True) as conn:
        assert conn.execute("SELECT output FROM predictions").fetchall() == [(None,)]
        conn.execute(PRED, ("g1", "npc", None, '{"prompt": "hi"}', None, None, '{"text": "hello"}'))
        conn.execute(FB, ("gf1", "g1", None, None, 5, "Hello there.", "continued"))
        for bad in (("cf2", "c1", "pos", "up", None, None, None),   # label and thumbs
                    ("cf3", "c1", None, None, None, None, None),    # no judgement at all
                    ("gf2", "g1", None, None, 6, None, None),       # a rating out of 1..5
                    ("gf3", "g1", None, None, None, None, "left")):  # an unknown signal
            with pytest.raises(psycopg.errors.CheckViolation):
                conn.execute(FB, bad)
        with pytest.raises(psycopg.errors.CheckViolation):  # neither a label with probabilities nor an output
            conn.execute(PRED, ("g2", "npc", None, '{"prompt": "hi"}', None, None, None))
    command.downgrade(config, "0010")
    with db.connect(db_url, autocommit=True) as conn:
        assert conn.execute("SELECT prediction_id FROM predictions").fetchall() == [("c1",)]
        assert conn.execute("SELECT feedback_id FROM feedback").fetchall() == [("cf1",)]
    migrate.upgrade(db_url)
    assert migrate.current_revision(db_url) == migrate.head_revision(db_url)
