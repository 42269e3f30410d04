"""The curation service end to end on the real broker and real Postgres: feedback produced to Kafka,
landed by the ingest processor, curated on its Landed signal into ``samples``, announced on the
curated topic; replays, late joins, bad records, a second instance and a database outage."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from confluent_kafka import Consumer

from core import db
from core.db import session_connector
from core.kafka import KafkaConnection
from core.settings import FlywheelSettings
from curation import CurationConfig, CurationService
from curation.config import ServiceConfig
from curation.service import lock_key
from schemas import Curated, FeedbackEvent, Landed, PredictionEvent
from streams import kafka
from tests.streams.helpers import create_topics, prediction, produce, producer, running_ingest, wait_until
from tests.tcp_proxy import CuttableProxy

from .helpers import LABELS, Feedback, land, probs, samples

QUIET = CurationConfig(service=ServiceConfig(reconcile_interval_s=60.0, retry_initial_s=0.2, retry_max_s=0.5))


@contextlib.contextmanager
def running_curation(settings: FlywheelSettings, config: CurationConfig = QUIET, *,
                     db_url: str | None = None) -> Iterator[CurationService]:
    assert settings.kafka_bootstrap and settings.database_url
    service = CurationService(
        connector=session_connector(db_url or settings.database_url.get_secret_value()), config=config,
        labels=LABELS, kafka=settings.kafka_connection(), group=f"{settings.topic_prefix}-curation",
        landed_topic=settings.topics.landed, curated_topic=settings.topics.curated, default_model="sentiment")
    stop = threading.Event()
    errors: list[BaseException] = []

    def target() -> None:
        try:
            service.run(stop)
        except BaseException as exc:  # surfaced to the test below
            errors.append(exc)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    try:
        yield service
    finally:
        stop.set()
        thread.join(30)
        assert not thread.is_alive(), "curation service did not stop"
    if errors:
        raise errors[0]


def passes(service: CurationService, outcome: str) -> float:
    value: float = service.metrics.passes.labels(outcome)._value.get()
    return value


def read_topic(kafka_conn: KafkaConnection, topic: str, quiet_s: float = 1.5) -> list[bytes]:
    consumer = Consumer(kafka.consumer_config(kafka_conn, f"reader-{time.monotonic_ns()}"))
    consumer.subscribe([topic])
    out: list[bytes] = []
    try:
        deadline, last = time.monotonic() + 20, time.monotonic()
        while time.monotonic() < deadline:
            msgs = consumer.consume(100, 0.3)
            out.extend(m.value() or b"" for m in msgs if m.error() is None)
            if msgs:
                last = time.monotonic()
            elif out and time.monotonic() - last > quiet_s:
                break
    finally:
        consumer.close()
    return out


def events(settings: FlywheelSettings, items: list[tuple[str, str | None, str | None, str]]) -> None:
    """Predictions and their feedback through Kafka: (text, label, thumbs, user) per item; the served
    model says ``positive`` with confidence 0.8."""
    preds: list[PredictionEvent] = []
    fbs: list[FeedbackEvent] = []
    for text, label, thumbs, user in items:
        pred = prediction(text=text, label="positive", user_id=user)
        pred = pred.model_copy(update={"probabilities": probs("positive")})
        preds.append(pred)
        fbs.append(FeedbackEvent(ts=pred.ts, feedback_id=f"fb-{pred.prediction_id}", prediction_id=pred.prediction_id,
                                 label=label, thumbs=thumbs, user_id=user))  # type: ignore[arg-type]
    p = producer(settings.kafka_connection())
    produce(p, settings.topics.predictions, [(e.prediction_id.encode(), e.to_json()) for e in preds])
    produce(p, settings.topics.feedback, [(e.prediction_id.encode(), e.to_json()) for e in fbs])


def snapshot(db_url: str) -> list[tuple[Any, ...]]:
    with db.connect(db_url) as conn:
        return conn.execute("SELECT * FROM samples ORDER BY id").fetchall()


def test_landed_feedback_is_curated_announced_and_a_replay_changes_nothing(
        settings: FlywheelSettings, kafka_conn: KafkaConnection, db_url: str) -> None:
    create_topics(settings, kafka_conn)
    with running_ingest(settings), running_curation(settings) as service:
        wait_until(lambda: passes(service, "idle") >= 1, timeout=30, what="the start-up pass")
        events(settings, [
            ("A wonderful, warm and funny film.", "positive", None, "ann"),
            ("The second half drags on forever.", "negative", None, "bob"),
            ("Not my kind of movie at all.", None, "down", "bob"),
            ("Exactly what I hoped for.", None, "up", "cid"),
            ("a wonderful warm and funny film", "positive", None, "bob"),  # a duplicate, another user
            ("The plot twists kept me guessing until the very end.", "negative", None, "ann"),
            ("the plot twists kept me guessing until the very end!", "positive", None, "cid"),
        ])
        wait_until(lambda: len(samples(db_url)) == 7, timeout=60, what="7 curated samples")
        found = {r[3]: (r[0], r[1], r[2], r[4]) for r in snapshot_rows(db_url)}
        # the same text from two users: whichever landed first (its partition's writer won) is the one
        # accepted, the other is its exact duplicate
        twins = sorted(found[t][:2] for t in ("A wonderful, warm and funny film.", "a wonderful warm and funny film"))
        assert twins == [("accepted", []), ("rejected", ["duplicate"])]
        assert found["The second half drags on forever."][:2] == ("accepted", [])
        assert found["Not my kind of movie at all."] == ("rejected", ["no_label"], True, None)
        assert found["Exactly what I hoped for."] == ("accepted", [], False, "positive")
        assert found["The plot twists kept me guessing until the very end."][:2] == (
            "quarantined", ["conflicting_duplicates"])
        assert found["the plot twists kept me guessing until the very end!"][:2] == (
            "quarantined", ["conflicting_duplicates"])
        disagreements = {text: r[2] for text, r in found.items()}
        assert disagreements["The second half drags on forever."] is True
        assert disagreements["Not my kind of movie at all."] is True
        assert disagreements["A wonderful, warm and funny film."] is False

        curated = [Curated.model_validate_json(v) for v in read_topic(kafka_conn, settings.topics.curated)]
        assert sum(c.accepted for c in curated) == 3 and sum(c.rejected for c in curated) == 2
        assert sum(c.quarantined for c in curated) == 2
        assert all(c.sample_ids is not None for c in curated)
        assert service.metrics.samples.labels("accepted", "new")._value.get() == 3

        # the same Landed signals again, and a record that is not one: nothing changes, nothing is sent
        before, idle = snapshot(db_url), passes(service, "idle")
        landed = [v for v in read_topic(kafka_conn, settings.topics.landed)]
        assert landed and all(Landed.model_validate_json(v) for v in landed)
        produce(producer(kafka_conn), settings.topics.landed, [(None, b"not json"), *((b"r", v) for v in landed)])
        wait_until(lambda: passes(service, "idle") > idle, timeout=30, what="a pass on the replayed signal")
        assert service.metrics.bad_signals._value.get() == 1
        assert snapshot(db_url) == before
        assert len(read_topic(kafka_conn, settings.topics.curated)) == len(curated)


def snapshot_rows(db_url: str) -> list[tuple[Any, ...]]:
    with db.connect(db_url) as conn:
        return conn.execute("SELECT status, reasons, disagreement, text, label FROM samples ORDER BY id").fetchall()


def test_late_joins_below_the_watermark_are_curated(settings: FlywheelSettings, kafka_conn: KafkaConnection,
                                                    db_url: str) -> None:
    create_topics(settings, kafka_conn)
    early = prediction(text="A late but lovely surprise.", label="positive")
    p = producer(kafka_conn)
    produce(p, settings.topics.feedback, [(early.prediction_id.encode(), FeedbackEvent(
        ts=early.ts, feedback_id="late-1", prediction_id=early.prediction_id, label="positive",
        user_id="ann").to_json())])
    with running_ingest(settings), running_curation(settings) as service:
        wait_until(lambda: _status(db_url, "late-1") == "pending", what="the feedback to wait for its prediction")
        events(settings, [("Something else entirely.", "positive", None, "bob")])
        wait_until(lambda: len(samples(db_url)) == 1, timeout=60, what="the joined row curated")
        with db.connect(db_url) as conn:
            watermark = conn.execute("SELECT watermark FROM curation_state").fetchone()
            late_id = conn.execute("SELECT id FROM feedback WHERE feedback_id = 'late-1'").fetchone()
        assert watermark is not None and late_id is not None and late_id[0] < watermark[0]
        produce(p, settings.topics.predictions, [(early.prediction_id.encode(), early.to_json())])
        wait_until(lambda: late_id[0] in samples(db_url), timeout=60, what="the late join curated")
        assert samples(db_url)[late_id[0]][0] == "accepted"
        assert service.failures == 0


def _status(db_url: str, feedback_id: str) -> str | None:
    with db.connect(db_url) as conn:
        row = conn.execute("SELECT status FROM feedback WHERE feedback_id = %s", (feedback_id,)).fetchone()
    return None if row is None else str(row[0])


def test_one_instance_curates_at_a_time(settings: FlywheelSettings, db_url: str) -> None:
    land(db_url, [Feedback("one", "positive"), Feedback("two", "negative")])
    service = CurationService(connector=session_connector(db_url), config=QUIET, labels=LABELS,
                              kafka=settings.kafka_connection(), group="g", landed_topic=settings.topics.landed,
                              curated_topic=settings.topics.curated, default_model="sentiment")
    with db.connect(db_url, autocommit=True) as conn, db.try_advisory_lock(conn, lock_key("sentiment")) as held:
        assert held
        assert service.curate_pass().outcome == "busy"
        assert samples(db_url) == {}
    assert service.curate_pass().outcome == "curated"
    assert len(samples(db_url)) == 2


def test_a_database_outage_is_survived(settings: FlywheelSettings, kafka_conn: KafkaConnection, db_url: str) -> None:
    create_topics(settings, kafka_conn)
    proxy = CuttableProxy(_target(db_url)).start()
    info = psycopg.conninfo.conninfo_to_dict(db_url)
    info.update(host="127.0.0.1", port=proxy.port)
    via_proxy = psycopg.conninfo.make_conninfo(**info)  # type: ignore[arg-type]
    fast = CurationConfig(service=ServiceConfig(reconcile_interval_s=0.5, retry_initial_s=0.2, retry_max_s=0.5))
    try:
        with running_curation(settings, fast, db_url=via_proxy) as service:
            land(db_url, [Feedback("before the outage", "positive")])
            wait_until(lambda: len(samples(db_url)) == 1, timeout=30, what="the first sample")
            proxy.cut()
            land(db_url, [Feedback("during the outage", "negative", user="bob")])
            wait_until(lambda: service.failures >= 2, timeout=30, what="failed passes while Postgres is away")
            assert len(samples(db_url)) == 1
            proxy.restore()
            wait_until(lambda: len(samples(db_url)) == 2, timeout=30, what="curation to resume")
            assert passes(service, "failed") >= 2
    finally:
        proxy.stop()


def _target(db_url: str) -> tuple[str, int] | str:
    info = psycopg.conninfo.conninfo_to_dict(db_url)
    host = str(info.get("host") or "/var/run/postgresql")
    port = int(info.get("port") or 5432)
    return f"{host}/.s.PGSQL.{port}" if host.startswith("/") else (host, port)


@pytest.fixture(autouse=True)
def _no_leftover_threads() -> Iterator[None]:
    before = {t.ident for t in threading.enumerate()}
    yield
    assert not [t for t in threading.enumerate() if t.ident not in before and not t.daemon]
