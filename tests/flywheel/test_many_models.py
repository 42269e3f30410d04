"""Two models in one platform, on the real broker, real Postgres and the real MLflow store: a text model
and a tabular one share ingest, curation and the trainer deployment, yet land, curate, train, promote
and roll back independently; a weekly cron policy fires for the tabular model (fake clock)."""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from core.db import session_connector
from core.settings import FlywheelSettings
from curation import CurationConfig
from curation.service import CurationService
from flywheel import models
from flywheel.lifecycle import Lifecycle, lifecycle
from kinds import KINDS
from kinds.base import Resources
from kinds.embeddings import Embedder, MemoryEmbeddingCache
from registry import CHAMPION
from streams.kafka import admin, create_topics
from tasks import ModelSpec, parse_spec
from tests.fakes import HashingEncoder
from tests.streams.helpers import producer, running_ingest
from tests.trainer.lifecycle_helpers import land_feedback, rows
from trainer.config import PolicyConfig, PromotionConfig, TrainerConfig
from trainer.data import CorpusRow
from trainer.service import TrainerService

AUTOMATION = {
    "name": "automation", "task": "tabular-classification", "labels": ["failed", "succeeded"],
    "positive_label": "failed", "kinds": ["lightgbm"],
    "features": [
        {"name": "load", "type": "numeric", "min": 0, "max": 100},
        {"name": "os", "type": "categorical", "categories": ["linux", "windows", "macos"]},
        {"name": "retried", "type": "boolean", "required": False},
    ],
    "training": {
        # outcomes judge the model by what it decides now: the bootstrap history's holdout weighs 10%
        "policy": {"full_cron": "0 2 * * 0", "incremental_threshold": 100000, "full_threshold": 100000,
                   "holdout_percent": 20, "recent_share": 0.9,
                   "search": {"max_trials": 3, "budget_s": 30, "folds": 3},
                   "kind_params": {"lightgbm": {"n_estimators": 40, "min_child_samples": 5}}},
        "gates": {"evaluation": {"rules": [{"metric": "accuracy", "min_gain": 0.01},
                                           {"metric": "macro_f1", "min_gain": 0.01},
                                           {"metric": "accuracy", "max_drop": 0.05}]}},
        "promotion": {"mode": "direct"},
    },
}


def automation_rows(n: int, *, drifted: bool, seed: int) -> list[CorpusRow]:
    """Will the automation fail? Before the drift: under heavy load or a retried Windows run; after it,
    already at moderate load. 3% label noise."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        load, system = round(rng.uniform(0, 100), 1), rng.choice(["linux", "windows", "macos"])
        retried = rng.random() < 0.3 if rng.random() < 0.8 else None
        failed = load > 30 if drifted else (load > 60 or (system == "windows" and retried is True))
        if rng.random() < 0.03:
            failed = not failed
        row = {"load": load, "os": system, **({} if retried is None else {"retried": retried})}
        out.append(CorpusRow(row, "failed" if failed else "succeeded", None))
    return out


@pytest.fixture
def db_url(registry_db_url: str) -> str:
    return registry_db_url


@pytest.fixture
def spec(settings: FlywheelSettings, db_url: str) -> ModelSpec:
    with session_connector(db_url)() as conn:
        models.declare(conn, settings)
        models.create(conn, parse_spec(AUTOMATION))
    return parse_spec(AUTOMATION)


@pytest.fixture
def pair(settings: FlywheelSettings, db_url: str, spec: ModelSpec) -> Iterator[tuple[Lifecycle, Lifecycle]]:
    resources = Resources(embedder=Embedder(HashingEncoder(), MemoryEmbeddingCache()))
    text_config = TrainerConfig(policy=PolicyConfig(incremental_threshold=200, full_threshold=1500),
                                promotion=PromotionConfig(mode="direct"))
    kafka = settings.kafka_connection()
    with lifecycle(settings, kafka, db_url, text_config, resources=resources) as text, \
            lifecycle(settings, kafka, db_url, resources=resources, spec=spec) as tabular:
        yield text, tabular


def land_outcomes(settings: FlywheelSettings, samples: list[CorpusRow], start: int) -> None:
    """Served predictions (version 2) and, later, their observed outcomes, through the real ingest."""
    p = producer(settings.kafka_connection())
    now = datetime.now(UTC).isoformat()
    for i, row in enumerate(samples, start=start):
        pid = f"run-{i}"
        prediction = {"type": "prediction", "schema_version": 2, "prediction_id": pid, "model": "automation",
                      "model_version": "1", "input": {"features": row.text},
                      "output": {"label": "succeeded", "probabilities": {"failed": 0.4, "succeeded": 0.6}},
                      "latency_ms": 0.3, "ts": now}
        outcome = {"type": "feedback", "schema_version": 2, "feedback_id": f"outcome-{i}", "prediction_id": pid,
                   "model": "automation", "label": row.label, "source": "outcomes", "ts": now}
        p.produce(settings.topics.predictions, json.dumps(prediction).encode(), pid.encode())
        p.produce(settings.topics.feedback, json.dumps(outcome).encode(), pid.encode())
    assert p.flush(30) == 0


def wait_for(check: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def count(db_url: str, query: str) -> int:
    with psycopg.connect(db_url) as conn:
        row = conn.execute(query).fetchone()
    assert row is not None
    return int(row[0])


def test_two_models_land_curate_train_promote_and_roll_back_independently(
        settings: FlywheelSettings, db_url: str, pair: tuple[Lifecycle, Lifecycle]) -> None:
    text, tabular = pair
    create_topics(admin(settings.kafka_connection()), settings.topics.all(), 1)
    assert text.trainer.bootstrap(rows("vader_movies")[:400], source="movies", kind="tfidf-logreg").status == "promoted"
    boot = tabular.trainer.bootstrap(automation_rows(600, drifted=False, seed=1), source="history", kind="lightgbm")
    assert boot.status == "promoted", boot.reason
    text_champion = text.registry.get(CHAMPION).version

    with running_ingest(settings):
        land_outcomes(settings, automation_rows(700, drifted=True, seed=2), start=0)
        wait_for(lambda: count(db_url, "SELECT count(*) FROM feedback WHERE status = 'joined'") == 700,
                 "700 joined outcomes")
    land_feedback(db_url, rows("vader_movies")[400:500])  # the text model's feedback, curated for it
    curation = CurationService(connector=session_connector(db_url), config=CurationConfig(), labels=settings.labels,
                               kafka=settings.kafka_connection(), group="g", landed_topic="l", curated_topic="c",
                               default_model=settings.model_name, producer=_Discard())
    while curation.curate_pass(sweep=True).outcome == "curated":
        pass
    with psycopg.connect(db_url) as conn:
        owners = dict(conn.execute("SELECT model, count(*) FROM samples GROUP BY model").fetchall())
        tabular_row = conn.execute("SELECT text, input FROM samples WHERE model = 'automation' LIMIT 1").fetchone()
    assert owners == {"automation": 700, "sentiment": 100}
    assert tabular_row is not None and tabular_row[0] is None and set(tabular_row[1]["features"]) == {
        "load", "os", "retried"}

    result = tabular.trainer.maybe_train("admin", requested="full")
    assert result.status == "promoted", result.reason
    [candidate] = result.candidates
    [evaluation] = [v for v in candidate["verdicts"] if v["gate"] == "evaluation"]
    assert evaluation["passed"] and "3 metric rule(s) met" in evaluation["reason"], evaluation["reason"]
    assert {v["gate"] for v in candidate["verdicts"]} == {"evaluation", "behaviour"}
    assert text.registry.get(CHAMPION).version == text_champion  # the other model's champion never moved
    searched = json.loads(tabular.registry.get(CHAMPION).tags["searched_params"])
    assert set(searched) <= set(KINDS["lightgbm"].search_space) and searched

    rolled = tabular.rollback(None, "test: roll the tabular model back")
    assert boot.event is not None
    assert (rolled.model, rolled.version) == ("automation", boot.event.version)
    assert text.registry.get(CHAMPION).version == text_champion
    with psycopg.connect(db_url) as conn:
        runs = conn.execute("SELECT model_name, mode, status FROM training_runs ORDER BY id").fetchall()
    assert runs == [("sentiment", "bootstrap", "promoted"), ("automation", "bootstrap", "promoted"),
                    ("automation", "full", "promoted")]
    assert text.trainer.maybe_train("signal").status == "skipped"  # 100 text samples: below its threshold


def test_a_weekly_cron_policy_fires_on_its_model_only(
        settings: FlywheelSettings, db_url: str, pair: tuple[Lifecycle, Lifecycle]) -> None:
    _text, tabular = pair
    kafka = settings.kafka_connection()
    create_topics(admin(kafka), settings.topics.all(), 1)
    tabular.trainer.bootstrap(automation_rows(400, drifted=False, seed=3), source="history", kind="lightgbm")
    moment = [datetime(2026, 12, 6, 1, 59, 58, tzinfo=UTC)]  # a Sunday, just before 02:00
    service = TrainerService(tabular.trainer, tabular.config, kafka=kafka, group=f"{settings.topic_prefix}-t-auto",
                             signal_topics=[settings.topics.landed], request_topic=settings.topics.retrain,
                             clock=lambda: moment[0])
    stop = threading.Event()
    thread = threading.Thread(target=service.run, args=(stop,), daemon=True)
    thread.start()
    try:
        wait_for(lambda: bool(service.results), "the first reconcile")
        assert not any(r.mode == "full" for r in service.results)
        moment[0] += timedelta(seconds=5)  # 02:00:03 on Sunday: the cron is due
        wait_for(lambda: any(r.mode == "full" for r in service.results), "the scheduled full run")
    finally:
        stop.set()
        thread.join(60)
    with psycopg.connect(db_url) as conn:
        scheduled = conn.execute("SELECT model_name, trigger FROM training_runs WHERE mode = 'full'").fetchall()
    assert scheduled == [("automation", "schedule")]


class _Discard:
    def send_all(self, topic: str, records: object, timeout: float = 30.0) -> int:
        return 0
