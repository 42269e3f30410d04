"""Data-to-deploy records on the real Postgres (migration 0012): each feedback event counted once, at the
first version trained on it that served, whoever serves first and however often pods restart."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import pytest

from core import db
from registry import DeployRecordError
from registry.deploys import forget_version, record_first_serve, record_trained, summaries

T0 = datetime(2026, 12, 5, 9, 0, tzinfo=UTC)


def add_samples(url: str, model: str, ids: Sequence[int], at: datetime = T0) -> None:
    """Samples with event time ``at + id seconds``."""
    with db.connect(url, autocommit=True) as conn:
        for i in ids:
            conn.execute("INSERT INTO samples (id, feedback_id, prediction_id, text, label, status, weight, ts, model) "
                         "VALUES (%s, %s, %s, 'a text', 'positive', 'accepted', 1.0, %s, %s)",
                         (i, f"f{i}", f"p{i}", at + timedelta(seconds=i), model))


def test_each_event_is_counted_once_at_the_first_version_served_that_trained_on_it(db_url: str) -> None:
    add_samples(db_url, "m", range(1, 11))
    with db.connect(db_url, autocommit=True) as conn:
        assert record_trained(conn, "m", "2", [-5, -1, 1, 2, 3, 4, 5]) == 5  # corpus rows (negative) are not feedback
        # version 3 trained on 1..10 before version 2 served: it records them all for now
        assert record_trained(conn, "m", "3", list(range(1, 11))) == 10
        served2 = T0 + timedelta(seconds=100)
        assert sorted(record_first_serve(conn, "m", "2", served2, "pod-a") or []) == [99, 98, 97, 96, 95][::-1]
        assert record_first_serve(conn, "m", "2", served2 + timedelta(seconds=5), "pod-b") is None  # once
        served3 = T0 + timedelta(seconds=200)
        # version 3 deploys only the events version 2 had not: 6..10
        assert sorted(record_first_serve(conn, "m", "3", served3, "pod-b") or []) == [194, 193, 192, 191, 190][::-1]
        # a later version trained on everything finds nothing new to record
        assert record_trained(conn, "m", "4", list(range(1, 11))) == 0
        assert record_first_serve(conn, "m", "4", served3, "pod-a") == []
        left = conn.execute("SELECT count(*) FROM version_feedback").fetchone()
        rows = conn.execute("SELECT version, count(*) FROM feedback_served GROUP BY version ORDER BY version"
                            ).fetchall()
        first = conn.execute("SELECT version, pod, feedback FROM version_first_served ORDER BY version").fetchall()
        found = summaries(conn)
    assert left == (0,)  # a served version's rows moved to feedback_served
    assert rows == [("2", 5), ("3", 5)]
    assert first == [("2", "pod-a", 5), ("3", "pod-b", 5), ("4", "pod-a", 0)]
    assert set(found) == {"m"} and found["m"].events == 10 and found["m"].versions == 2
    assert found["m"].p50_s == pytest.approx((99 + 190) / 2)  # median of 95..99 and 190..194
    assert 190 < found["m"].p95_s <= 194


def test_pods_racing_on_a_new_version_observe_each_event_once(db_url: str) -> None:
    add_samples(db_url, "m", range(1, 301))
    add_samples(db_url, "other", range(1001, 1011))
    with db.connect(db_url, autocommit=True) as conn:
        record_trained(conn, "m", "7", list(range(1, 301)))
        record_trained(conn, "other", "7", list(range(1001, 1011)))  # same version number, another model
    observed: list[list[float] | None] = []
    lock, start = threading.Lock(), threading.Barrier(8)

    def pod(n: int) -> None:
        with db.connect(db_url, autocommit=True) as conn:
            start.wait()
            got = record_first_serve(conn, "m", "7", T0 + timedelta(seconds=400 + n), f"pod-{n}")
        with lock:
            observed.append(got)

    threads = [threading.Thread(target=pod, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    winners = [o for o in observed if o is not None]
    assert len(winners) == 1 and len(winners[0]) == 300
    with db.connect(db_url, autocommit=True) as conn:
        assert summaries(conn, "m")["m"].events == 300
        assert "other" not in summaries(conn)  # not served yet
        assert record_first_serve(conn, "other", "7", T0 + timedelta(seconds=2000)) is not None
        assert summaries(conn)["other"].events == 10


def test_a_version_deleted_before_serving_leaves_nothing(db_url: str) -> None:
    add_samples(db_url, "m", range(1, 4))
    with db.connect(db_url, autocommit=True) as conn:
        record_trained(conn, "m", "9", [1, 2, 3])
        forget_version(conn, "m", "9")
        assert conn.execute("SELECT count(*) FROM version_feedback").fetchone() == (0,)


def test_a_database_error_is_the_registry_s_error_naming_the_version(db_url: str) -> None:
    with db.connect(db_url, autocommit=True) as conn:
        conn.execute("DROP TABLE feedback_served")
        with pytest.raises(DeployRecordError, match="'m' version 3"):
            record_first_serve(conn, "m", "3", T0)


def test_the_data_to_deploy_migration_downgrades_and_upgrades_again(db_url: str) -> None:
    from alembic import command

    from flywheel import migrate

    def tables() -> set[str]:
        with db.connect(db_url, autocommit=True) as conn:
            return {str(r[0]) for r in conn.execute("SELECT tablename FROM pg_tables WHERE tablename IN "
                                                    "('version_feedback', 'version_first_served', 'feedback_served')")}

    assert len(tables()) == 3
    command.downgrade(migrate.alembic_config(db_url), "0011")  # to just before this migration (0012)
    assert tables() == set()
    migrate.upgrade(db_url)
    assert len(tables()) == 3 and migrate.current_revision(db_url) == migrate.head_revision(db_url)
