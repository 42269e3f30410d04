"""Migration 0009 (many models) on a database holding a platform's data: every row is kept, owned by
the model it came from (the default model for the corpus, the cursor and the annotators); the default
model's trainer sees exactly the snapshot it saw before; the downgrade keeps the default model's rows."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import psycopg
import pytest
from alembic import command
from psycopg import sql

from flywheel import migrate
from tasks import TASKS
from trainer.data import SampleStore

TABLES = ("predictions", "feedback", "samples", "corpus", "annotators", "curation_state")


@pytest.fixture
def db_at_0008(pg_admin_url: str) -> Iterator[str]:
    from tests.conftest import _with_dbname

    name = f"flywheel_mig9_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(pg_admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = _with_dbname(pg_admin_url, name)
    migrate.upgrade(url, "0008")
    try:
        yield url
    finally:
        with psycopg.connect(pg_admin_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def _fill(conn: psycopg.Connection) -> None:
    for i in range(40):
        model = "reviews" if i % 4 else "other-text-model"
        conn.execute("INSERT INTO predictions (prediction_id, model, model_version, variant, text, label, "
                     "probabilities, latency_ms, ts) VALUES (%s, %s, '1', 'champion', %s, 'pos', "
                     "'{\"pos\": 0.8, \"neg\": 0.2}', 1, now())", (f"p{i}", model, f"text {i}"))
        conn.execute("INSERT INTO feedback (feedback_id, content_key, prediction_id, label, source, ts, status, "
                     "model, model_version, resolved_at) VALUES (%s, gen_random_uuid(), %s, %s, 'api', now(), "
                     "'joined', %s, '1', now())", (f"f{i}", f"p{i}", "neg" if i % 3 else "pos", model))
    conn.execute("INSERT INTO samples (id, feedback_id, prediction_id, text, label, status, weight, ts, landed_at) "
                 "SELECT f.id, f.feedback_id, f.prediction_id, p.text, f.label, "
                 "CASE WHEN f.id % 5 = 0 THEN 'quarantined' ELSE 'accepted' END, 1, f.ts, f.resolved_at "
                 "FROM feedback f JOIN predictions p USING (prediction_id)")
    conn.execute("INSERT INTO corpus (text, label, split, source) SELECT 'corpus ' || g, "
                 "CASE WHEN g % 2 = 0 THEN 'pos' ELSE 'neg' END, CASE WHEN g % 5 = 0 THEN 'holdout' ELSE 'train' END, "
                 "'seed.csv' FROM generate_series(1, 25) g")
    conn.execute("INSERT INTO annotators (user_id, agree, disagree, labels, trust) VALUES ('u1', 3, 1, 4, 0.7), "
                 "('u2', 0, 4, 4, 0.2)")
    conn.execute("UPDATE curation_state SET watermark = 40 WHERE name = 'samples'")


def _rows(url: str) -> dict[str, list[tuple[object, ...]]]:
    with psycopg.connect(url) as conn:
        return {t: conn.execute(sql.SQL("SELECT * FROM {} ORDER BY 1, 2").format(sql.Identifier(t))).fetchall()
                for t in TABLES}


def test_every_row_is_kept_and_owned_by_its_model(db_at_0008: str) -> None:
    url = db_at_0008
    with psycopg.connect(url, autocommit=True) as conn:
        _fill(conn)
        before = conn.execute(  # what the 0008 trainer trained on
            "SELECT id, text, label, weight FROM samples WHERE status = 'accepted' ORDER BY id").fetchall()
        corpus_before = conn.execute("SELECT id, text, label, split FROM corpus ORDER BY id").fetchall()
    counts = {t: len(r) for t, r in _rows(url).items()}

    migrate.upgrade(url, default_model="reviews")

    assert {t: len(r) for t, r in _rows(url).items()} == counts
    with psycopg.connect(url, autocommit=True) as conn:
        owners = dict(conn.execute("SELECT model, count(*) FROM samples GROUP BY model").fetchall())
        assert owners == {"reviews": 30, "other-text-model": 10}
        assert conn.execute("SELECT DISTINCT model FROM corpus").fetchall() == [("reviews",)]
        assert conn.execute("SELECT model, user_id FROM annotators ORDER BY user_id").fetchall() == [
            ("reviews", "u1"), ("reviews", "u2")]
        assert conn.execute("SELECT name, watermark FROM curation_state").fetchall() == [("reviews", 40)]
        store = SampleStore(conn, 0, model="reviews", task=TASKS["text-classification"])
        mine = store.samples(after=0, upto=10**9)
        other = SampleStore(conn, 0, model="other-text-model").samples(after=0, upto=10**9)
        corpus = store.corpus("train").extend(store.corpus("holdout").rows())
    assert sorted([*mine.ids, *other.ids]) == [r[0] for r in before]
    assert all(i % 4 for i in (r - 1 for r in mine.ids))  # the reviews model's rows only
    assert sorted(-i for i in corpus.ids) == [r[0] for r in corpus_before]

    with psycopg.connect(url, autocommit=True) as conn:  # rows of a tabular model, then back to 0008
        conn.execute("INSERT INTO predictions (prediction_id, model, model_version, variant, input, label, "
                     "probabilities, latency_ms, ts) VALUES ('t1', 'automation', '1', 'champion', "
                     "'{\"features\": {\"x\": 1}}', 'ok', '{\"ok\": 1}', 1, now())")
    command.downgrade(migrate.alembic_config(url, "reviews"), "0008")
    after = _rows(url)
    assert {t: len(r) for t, r in after.items()} == counts
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT name FROM curation_state").fetchall() == [("samples",)]
    migrate.upgrade(url, default_model="reviews")  # and forward again
