"""Text generation at ingest, on the real broker and Postgres: a generator's predictions land with their
prompt document and output, its ratings, corrections and signals land and join; a label for it is
dead-lettered ``feedback_wrong_for_task`` (and a rating for a classifier too); the text model's events
land beside them; a rating and a later correction of one response by one user are two rows, a resend of
either is a duplicate."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime

import psycopg

from core.db import session_connector
from core.kafka import KafkaConnection
from core.settings import FlywheelSettings
from curation import CurationConfig, CurationService
from curation.toxicity import ToxicityCheck
from tests.curation.helpers import RecordingPublisher
from tests.streams.helpers import (
    count,
    create_topics,
    feedback,
    prediction,
    produce,
    producer,
    running_ingest,
    wait_until,
)
from tests.streams.test_ingest_models import SENTIMENT, declare

NPC = {"name": "npc", "task": "text-generation"}


def gen_prediction(pid: str, prompt: str, text: str, **kw: object) -> bytes:
    return json.dumps({
        "type": "prediction", "schema_version": 2, "prediction_id": pid, "model": "npc", "model_version": "1",
        "input": {"prompt": prompt, "persona": "Old guard"},
        "output": {"text": text, "prompt_tokens": 12, "completion_tokens": 5, "finish_reason": "stop"},
        "latency_ms": 80.0, "ts": datetime.now(UTC).isoformat(), **kw}).encode()


def gen_feedback(pid: str, *, model: str = "npc", fid: str | None = None, **judgement: object) -> bytes:
    return json.dumps({"type": "feedback", "schema_version": 2, "feedback_id": fid or str(uuid.uuid4()),
                       "prediction_id": pid, "model": model, "user_id": "player-1", "source": "game",
                       "ts": datetime.now(UTC).isoformat(), **judgement}).encode()


def test_generation_predictions_ratings_and_corrections_land_and_join_beside_a_text_model(
    settings: FlywheelSettings, kafka_conn: KafkaConnection, db_url: str
) -> None:
    declare(db_url, NPC, SENTIMENT)
    create_topics(settings, kafka_conn)
    t = settings.topics
    p = producer(kafka_conn)
    text_preds = [prediction() for _ in range(3)]
    with running_ingest(settings):
        produce(p, t.feedback, [(b"g2", gen_feedback("g2", signal="abandoned"))])  # before its prediction
        produce(p, t.predictions, [
            (b"g1", gen_prediction("g1", "Where is the smith?", "By the gate.")),
            (b"g2", gen_prediction("g2", "Any news?", "None.")),
            *[(e.prediction_id.encode(), e.to_json()) for e in text_preds],
            # a generator's prediction with a classification output, and a classifier's with generated text
            (b"bad-out", json.dumps({
                "type": "prediction", "schema_version": 2, "prediction_id": "bad-out", "model": "npc",
                "model_version": "1", "input": {"prompt": "hi"}, "output": {"label": "a", "probabilities": {"a": 1.0}},
                "latency_ms": 1.0, "ts": datetime.now(UTC).isoformat()}).encode()),
        ])
        rating = gen_feedback("g1", fid="r1", rating=5)
        produce(p, t.feedback, [
            (b"g1", rating),
            (b"g1", gen_feedback("g1", fid="c1", rating=2, correction="By the west gate, past the well.")),
            (b"g1", gen_feedback("g1", fid="r1-again", rating=5)),  # same content, new id: a duplicate
            (b"g1", rating),  # same id: a duplicate
            (b"lbl", gen_feedback("g1", fid="lbl", label="positive")),  # a label for a generator
            # a rating for a classifier
            (b"cls", gen_feedback(text_preds[0].prediction_id, model="sentiment", rating=4)),
            *[(e.prediction_id.encode(), feedback(e.prediction_id).to_json()) for e in text_preds],
        ])
        wait_until(lambda: count(db_url, "SELECT count(*) FROM dead_letters") == 3, what="3 dead letters")
        wait_until(lambda: count(db_url, "SELECT count(*) FROM feedback WHERE status = 'joined'") == 6,
                   what="6 joined feedback")
    with psycopg.connect(db_url) as conn:
        reasons = dict(conn.execute("SELECT convert_from(original_key, 'UTF8'), reason FROM dead_letters").fetchall())
        g1 = conn.execute("SELECT text, input, output, label, probabilities FROM predictions "
                          "WHERE prediction_id = 'g1'").fetchone()
        fb = conn.execute("SELECT feedback_id, status, model, model_version, rating, correction, signal, label, "
                          "thumbs, predicted_label FROM feedback WHERE model = 'npc' ORDER BY feedback_id").fetchall()
        dupes = conn.execute("SELECT value FROM stream_counters WHERE name = 'duplicates:feedback'").fetchone()
    assert reasons == {"bad-out": "task_mismatch", "lbl": "feedback_wrong_for_task", "cls": "feedback_wrong_for_task"}
    assert g1 == (None, {"prompt": "Where is the smith?", "persona": "Old guard"},
                  {"text": "By the gate.", "prompt_tokens": 12, "completion_tokens": 5, "finish_reason": "stop"},
                  None, None)
    by_id = {row[0]: row[1:] for row in fb}
    assert by_id.pop("c1") == ("joined", "npc", "1", 2, "By the west gate, past the well.", None, None, None, None)
    assert by_id.pop("r1") == ("joined", "npc", "1", 5, None, None, None, None, None)
    ((_late, row),) = by_id.items()  # the signal that came before its prediction, joined when it landed
    assert row == ("joined", "npc", "1", None, None, "abandoned", None, None, None)
    assert dupes == (2,)
    assert count(db_url, "SELECT count(*) FROM predictions WHERE model = 'sentiment'") == 3
    assert count(db_url, "SELECT count(*) FROM feedback WHERE model = 'sentiment' AND status = 'joined'") == 3

    # what ingest landed, curated: the rating 5 makes the served response a target, the correction another
    # reference for the same prompt, the abandoned answer none
    service = CurationService(connector=session_connector(db_url), config=CurationConfig(), labels=["positive"],
                              kafka=KafkaConnection(bootstrap_servers="unused:9092"), group="g", landed_topic="l",
                              curated_topic="c", default_model="sentiment", producer=RecordingPublisher(),
                              toxicity=ToxicityCheck)
    assert service.curate_pass(sweep=True).outcome == "curated"
    with psycopg.connect(db_url) as conn:
        curated = {r[0]: r[1:] for r in conn.execute(
            "SELECT f.feedback_id, s.status, s.target, s.reasons FROM samples s JOIN feedback f USING (id) "
            "WHERE s.model = 'npc'").fetchall()}
    assert curated.pop("r1") == ("accepted", "By the gate.", [])
    assert curated.pop("c1") == ("accepted", "By the west gate, past the well.", ["near_duplicate"])
    assert list(curated.values()) == [("rejected", None, ["low_rating"])]
