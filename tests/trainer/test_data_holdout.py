"""The recent part of the evaluation holdout does not depend on the champion's opinion: reserved samples
quarantined only as label issues (the served model disagrees with the user; reserved or not, no run trains on
them) are in it; samples flagged for anything about the user or the data (low trust, conflicting or exact
duplicates, no label) are not, nor accepted samples outside the reserved split (runs train on them)."""

from __future__ import annotations

import json
from typing import Any

import psycopg

from core import db
from trainer.data import SampleStore, holdout_predicate

CASES = [  # (status, reasons, in the recent holdout)
    ("accepted", [], True),
    ("accepted", ["label_issue"], True),  # a trusted user's label issue, down-weighted
    ("accepted", ["near_duplicate"], True),
    ("quarantined", ["label_issue"], True),
    ("quarantined", ["low_trust"], False),
    ("quarantined", ["low_trust", "label_issue"], False),
    ("quarantined", ["conflicting_duplicates"], False),
    ("quarantined", ["conflicting_duplicates", "label_issue"], False),
    ("quarantined", ["unknown_label"], False),
    ("rejected", ["duplicate"], False),
    ("rejected", ["label_issue", "duplicate"], False),
    ("rejected", ["no_label"], False),
]


def _reserved_ids(conn: psycopg.Connection[Any], count: int, percent: int) -> list[str]:
    """Feedback ids the holdout predicate reserves (asked of Postgres, which owns the predicate)."""
    candidates = [f"fb-{i}" for i in range(count * 4)]
    rows = conn.execute(f"SELECT feedback_id FROM unnest(%s::text[]) AS u(feedback_id) "
                        f"WHERE {holdout_predicate(percent)}", (candidates,)).fetchall()
    assert len(rows) >= count
    return [str(r[0]) for r in rows[:count]]


def test_recent_holdout_keeps_label_issues_and_drops_what_curation_flagged_for_other_reasons(db_url: str) -> None:
    with db.connect(db_url) as conn:
        reserved = _reserved_ids(conn, len(CASES), 50)
        with conn.cursor() as cur:
            for i, ((status, reasons, _), fid) in enumerate(zip(CASES, reserved, strict=True), start=1):
                label = None if "no_label" in reasons else "positive"
                cur.execute("INSERT INTO samples (id, feedback_id, prediction_id, text, label, status, weight, "
                            "reasons, ts, domain, model) VALUES (%s, %s, %s, %s, %s, %s, 1.0, %s, now(), 'tweets', "
                            "'sentiment')",
                            (i, fid, f"p{i}", f"text {i}", label, status, json.dumps(reasons)))
            not_reserved = [r[0] for r in conn.execute(
                f"SELECT feedback_id FROM (SELECT 'fb-x' || g AS feedback_id FROM generate_series(1, 400) g) u "
                f"WHERE NOT {holdout_predicate(50)} LIMIT 2").fetchall()]
        assert len(not_reserved) == 2
        conn.execute("INSERT INTO samples (id, feedback_id, prediction_id, text, label, status, weight, ts, model) "
                     "VALUES (100, %s, 'p100', 'trained on', 'positive', 'accepted', 1.0, now(), 'sentiment')",
                     (not_reserved[0],))
        # not reserved but quarantined as a label issue: no run trains on it either, so it is evidence
        conn.execute("INSERT INTO samples (id, feedback_id, prediction_id, text, label, status, weight, reasons, ts, "
                     "model) VALUES (101, %s, 'p101', 'the model disagrees', 'positive', 'quarantined', 1.0, "
                     "'[\"label_issue\"]', now(), 'sentiment')", (not_reserved[1],))
        conn.commit()
        store = SampleStore(conn, 50, model="sentiment")
        frame = store.recent_holdout(100)
        assert frame.ids == [i for i, (_, _, kept) in enumerate(CASES, start=1) if kept] + [101]
        assert frame.slices == ["tweets"] * (len(frame) - 1) + [None]
        assert store.recent_holdout(2).ids == frame.ids[-2:]  # the most recent
        assert 100 not in store.holdout(100).ids
