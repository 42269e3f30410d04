"""The review queue on real Postgres: unjudged predictions, least sure first, claimed for a while; shadow
predictions and judged ones never; and through the admin API with a label published as feedback."""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime

from core import db
from curation.review import ReviewQueue


def land(db_url: str, rows: Sequence[tuple[str, dict[str, float], str]], model: str = "sentiment") -> list[str]:
    """Predictions (text, probabilities, variant) as ingest lands them; their ids."""
    ids = []
    with db.connect(db_url) as conn, conn.transaction():
        for text, proba, variant in rows:
            pid = uuid.uuid4().hex
            ids.append(pid)
            conn.execute(
                "INSERT INTO predictions (prediction_id, model, model_version, variant, text, label, probabilities, "
                "latency_ms, ts) VALUES (%s, %s, '1', %s, %s, %s, %s, 1.0, %s)",
                (pid, model, variant, text, max(proba, key=proba.__getitem__), json.dumps(proba), datetime.now(UTC)))
    return ids


def judge(db_url: str, prediction_id: str) -> None:
    with db.connect(db_url) as conn, conn.transaction():
        conn.execute("INSERT INTO feedback (feedback_id, content_key, prediction_id, label, source, ts, status) "
                     "VALUES (%s, %s, %s, 'positive', 'test', now(), 'pending')",
                     (uuid.uuid4().hex, uuid.uuid4(), prediction_id))


def p(neg: float, neu: float, pos: float) -> dict[str, float]:
    return {"negative": neg, "neutral": neu, "positive": pos}


def test_least_sure_unjudged_first_claimed_for_a_while(db_url: str) -> None:
    ids = land(db_url, [
        ("sure", p(0.9, 0.05, 0.05), "champion"),       # margin 0.85
        ("torn", p(0.45, 0.1, 0.45), "champion"),       # margin 0.00
        ("unsure", p(0.4, 0.25, 0.35), "canary"),       # margin 0.05
        ("judged", p(0.34, 0.33, 0.33), "champion"),    # margin 0.01, but has feedback
        ("shadow", p(0.34, 0.33, 0.33), "shadow"),      # never shown to anyone
        ("middling", p(0.6, 0.3, 0.1), "champion"),     # margin 0.30
    ])
    land(db_url, [("other model", p(0.34, 0.33, 0.33), "champion")], model="other")
    judge(db_url, ids[3])
    with db.connect(db_url, autocommit=True) as conn:
        queue = ReviewQueue(conn, "sentiment")
        first = queue.next(2, "ann")
        assert [i.text for i in first] == ["torn", "unsure"]
        assert first[0].margin == 0.0 and abs(first[1].margin - 0.05) < 1e-9 and first[1].variant == "canary"
        second = queue.next(5, "bob")  # ann's claims are skipped
        assert [i.text for i in second] == ["middling", "sure"]
        assert queue.next(5, "cy") == []
        expired = ReviewQueue(conn, "sentiment", claim_s=0.0).next(1, "dee")  # claims lapse
        assert [i.text for i in expired] == ["torn"]
        found = queue.find(ids[2])
        assert found is not None and found.text == "unsure" and abs(found.margin - 0.05) < 1e-9
        assert queue.find("nope") is None


def test_a_generators_predictions_show_the_prompt_its_context_and_the_response(db_url: str) -> None:
    """A text-generation model's predictions have no text column and no probabilities: the item carries
    what the model was asked (prompt, context, persona) and what it answered."""
    asked = [({"prompt": "Where is the inn?", "context": "village square", "persona": "a guard"}, "Down the road."),
             ({"prompt": "Hello!"}, "Well met, traveller.")]
    ids = []
    with db.connect(db_url) as conn, conn.transaction():
        for question, answer in asked:
            pid = uuid.uuid4().hex
            ids.append(pid)
            output = {"text": answer, "prompt_tokens": 9, "completion_tokens": 4, "finish_reason": "stop"}
            conn.execute(
                "INSERT INTO predictions (prediction_id, model, model_version, variant, input, output, latency_ms, "
                "ts) VALUES (%s, 'npc', '1', 'champion', %s, %s, 80.0, %s)",
                (pid, json.dumps(question), json.dumps(output), datetime.now(UTC)))
    with db.connect(db_url, autocommit=True) as conn:
        queue = ReviewQueue(conn, "npc")
        items = {i.prediction_id: i for i in queue.next(5, "ann")}
        assert set(items) == set(ids)
        inn, hello = items[ids[0]], items[ids[1]]
        assert (inn.prompt, inn.context, inn.persona, inn.response) == (
            "Where is the inn?", "village square", "a guard", "Down the road.")
        assert inn.text == "Where is the inn?" and inn.label == "" and inn.probabilities == {}
        assert (hello.prompt, hello.context, hello.persona, hello.response) == (
            "Hello!", None, None, "Well met, traveller.")
        assert inn.to_dict()["response"] == "Down the road."
        found = queue.find(ids[1])
        assert found is not None and found.response == "Well met, traveller." and found.margin == 1.0
