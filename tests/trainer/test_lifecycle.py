"""The model lifecycle end to end on the real broker, real Postgres and the real MLflow store:
bootstrap, threshold-triggered single-flight training, gates refusing a worse model, promotion of a
better one, rollback, and the events serving pods fold."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from flywheel import db
from flywheel.lifecycle import Lifecycle, lifecycle
from flywheel.settings import FlywheelSettings
from registry import NoPrevious
from schemas import Landed, RetrainRequest
from streams.kafka import CheckedProducer, admin, create_topics, producer_config
from trainer.announce import fold, now, read_model_events
from trainer.config import PolicyConfig, PromotionConfig, TrainerConfig
from trainer.exceptions import TrainerError
from trainer.pipeline import RunResult
from trainer.service import TrainerService

from .lifecycle_helpers import count_runs, land_feedback, rows


@pytest.fixture
def db_url(registry_db_url: str) -> str:
    """A fresh database that already holds MLflow's tables (cloned from a session template)."""
    return registry_db_url


@pytest.fixture
def config() -> TrainerConfig:
    return TrainerConfig(policy=PolicyConfig(incremental_threshold=200, full_threshold=1500, replay_size=400),
                         promotion=PromotionConfig(mode="direct"))


@pytest.fixture
def lc(settings: FlywheelSettings, db_url: str, config: TrainerConfig) -> Iterator[Lifecycle]:
    assert settings.kafka_bootstrap is not None
    with lifecycle(settings, settings.kafka_bootstrap, db_url, config) as found:
        yield found


@pytest.fixture
def champion(lc: Lifecycle) -> RunResult:
    result = lc.trainer.bootstrap(rows("vader_movies")[:400], source="vader_movies.csv", kind="tfidf-logreg")
    assert result.status == "promoted", result.reason
    return result


def events(lc: Lifecycle) -> list[str]:
    found = read_model_events(lc.settings.kafka_bootstrap or "", lc.settings.topics.models)
    return [f"{e.action}:{e.semver}" for e in found]


def test_bootstrap_deploys_the_first_champion_and_announces_it(lc: Lifecycle, champion: RunResult,
                                                               db_url: str) -> None:
    info = lc.registry.champion()
    assert info.semver == "1.0.0" and info.kind == "tfidf-logreg" and info.mode == "bootstrap"
    assert champion.event is not None and champion.event.sha256 == info.sha256
    state = fold(read_model_events(lc.settings.kafka_bootstrap or "", lc.settings.topics.models))
    assert state["sentiment"].champion is not None and state["sentiment"].champion.version == info.version
    with db.connect(db_url) as conn:
        splits = dict(conn.execute("SELECT split, count(*) FROM corpus GROUP BY split").fetchall())
    assert splits == {"train": 320, "holdout": 80}
    with pytest.raises(TrainerError, match="already has a champion"):
        lc.trainer.bootstrap(rows("vader_movies")[:400], source="again.csv", kind="tfidf-logreg")


def test_below_threshold_nothing_trains(lc: Lifecycle, champion: RunResult, db_url: str) -> None:
    land_feedback(db_url, rows("vader_movies")[400:550])
    result = lc.trainer.maybe_train("signal")
    assert result.status == "skipped" and "< incremental threshold 200" in result.reason
    assert count_runs(db_url) == 0


def test_threshold_crossing_trains_exactly_once_under_replays_and_two_trainers(
        lc: Lifecycle, champion: RunResult, settings: FlywheelSettings, db_url: str, config: TrainerConfig) -> None:
    land_feedback(db_url, rows("vader_movies")[400:700])
    results: list[RunResult] = []
    with lifecycle(settings, settings.kafka_bootstrap or "", db_url, config) as other:
        barrier = threading.Barrier(2)

        def replaying(trainer_lc: Lifecycle) -> None:
            barrier.wait()
            for _ in range(3):  # the same signal, replayed
                results.append(trainer_lc.trainer.maybe_train("signal"))

        threads = [threading.Thread(target=replaying, args=(x,)) for x in (lc, other)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
    trained = [r for r in results if r.status not in ("skipped", "busy")]
    assert len(trained) == 1, [(r.status, r.reason) for r in results]
    assert trained[0].mode == "incremental" and trained[0].status in ("promoted", "refused")
    assert count_runs(db_url) == 1
    again = lc.trainer.maybe_train("reconcile")
    assert again.status == "skipped", again.reason


def test_a_model_trained_on_flipped_labels_is_refused_with_the_reason_recorded(
        lc: Lifecycle, champion: RunResult, db_url: str) -> None:
    land_feedback(db_url, rows("vader_movies")[400:1000], flip=True)
    result = lc.trainer.maybe_train("signal")
    assert result.status == "refused", result.reason
    assert "evaluation" in result.reason
    with db.connect(db_url) as conn:
        row = conn.execute("SELECT status, reason, candidates FROM training_runs WHERE mode = 'incremental'").fetchone()
    assert row is not None and row[0] == "refused" and "weighted score" in row[1]
    assert row[2][0]["verdicts"][0]["gate"] == "evaluation" and not row[2][0]["verdicts"][0]["passed"]
    assert [v.semver for v in lc.registry.versions()] == ["1.0.0"]
    assert events(lc) == ["promote:1.0.0"]


def test_a_better_model_is_promoted_and_rollback_restores_the_previous(
        lc: Lifecycle, champion: RunResult, db_url: str) -> None:
    land_feedback(db_url, rows("vader_movies")[400:6400])  # behaviour tests need a model of real size
    result = lc.trainer.maybe_train("signal")
    assert result.status == "promoted", result.reason
    assert result.mode == "full" and result.version is not None and result.version.semver == "1.1.0"
    assert lc.registry.champion().semver == "1.1.0"
    assert lc.registry.get("previous").semver == "1.0.0"
    assert result.version.parent_version == "1.0.0" and result.version.data_hash
    event = lc.rollback(None, "test rollback")
    assert event.action == "rollback" and event.semver == "1.0.0" and event.previous_version == result.version.version
    assert lc.registry.champion().semver == "1.0.0"
    assert events(lc) == ["promote:1.0.0", "promote:1.1.0", "rollback:1.0.0"]
    state = fold(read_model_events(lc.settings.kafka_bootstrap or "", lc.settings.topics.models))["sentiment"]
    assert state.champion is not None and state.champion.semver == "1.0.0"
    with pytest.raises(NoPrevious):
        lc.rollback(None, "nothing before 1.0.0")


def test_a_tampered_champion_fails_the_run_without_stopping_the_trainer(
        lc: Lifecycle, champion: RunResult, db_url: str) -> None:
    info = lc.registry.champion()
    path = Path(lc.registry.fetch(info.version))
    target = next(p for p in sorted(path.iterdir()) if p.suffix == ".npz")
    target.write_bytes(target.read_bytes()[:-1] + bytes([target.read_bytes()[-1] ^ 1]))
    land_feedback(db_url, rows("vader_movies")[400:700])
    result = lc.trainer.maybe_train("signal")
    assert result.status == "failed" and "Tampered" in result.reason, result.reason
    assert count_runs(db_url, "failed") == 1
    assert events(lc) == ["promote:1.0.0"]


def test_the_trainer_consumer_wakes_on_signals_and_requests_and_skips_bad_records(
        lc: Lifecycle, champion: RunResult, db_url: str, settings: FlywheelSettings) -> None:
    bootstrap = settings.kafka_bootstrap or ""
    topics = settings.topics
    create_topics(admin(bootstrap), topics.all(), 1)  # as `flywheel up` does before it starts the trainer
    service = TrainerService(lc.trainer, lc.config, bootstrap=bootstrap, group=f"trainer-{topics.prefix}",
                             signal_topics=[topics.landed, topics.curated], request_topic=topics.retrain)
    stop = threading.Event()
    thread = threading.Thread(target=service.run, args=(stop,), daemon=True)
    thread.start()
    producer = CheckedProducer(producer_config(bootstrap))
    try:
        wait_for(lambda: any(r.status == "skipped" for r in service.results), "the first reconcile")
        land_feedback(db_url, rows("vader_movies")[400:700])
        landed = Landed(ts=now(), group="ingest", feedback=300, joined=300)
        producer.send_all(topics.landed, [(None, b"not json"), (b"g", landed.to_json())])
        wait_for(lambda: any(r.mode == "incremental" for r in service.results), "an incremental run")
        request = RetrainRequest(ts=now(), model="sentiment", mode="full", trigger="drift", reason="psi 0.4")
        producer.send_all(topics.retrain, [(None, b"{}"), (b"sentiment", request.to_json())])
        wait_for(lambda: any(r.mode == "full" for r in service.results), "a full run on the drift request")
    finally:
        stop.set()
        thread.join(30)
    assert not thread.is_alive()
    with db.connect(db_url) as conn:
        triggers = [r[0] for r in conn.execute(
            "SELECT trigger FROM training_runs WHERE mode <> 'bootstrap' ORDER BY id").fetchall()]
    assert triggers == ["signal", "drift"]


def wait_for(check: Callable[[], bool], what: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)
