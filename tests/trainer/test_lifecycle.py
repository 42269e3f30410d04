"""The model lifecycle end to end on the real broker, real Postgres and the real MLflow store:
bootstrap, threshold-triggered single-flight training, gates refusing a worse model, promotion of a
better one, rollback, and the events serving pods fold."""

from __future__ import annotations

import json
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from core import db
from core.settings import FlywheelSettings
from flywheel.lifecycle import Lifecycle, lifecycle
from kinds.base import Resources
from kinds.embeddings import Embedder, MemoryEmbeddingCache
from registry import Lineage, NoPrevious, registry_backend
from registry.announce import fold, now, read_model_events
from registry.requests import AdminRequests
from schemas import Landed, RetrainRequest
from serving.canary import mlflow_run_metric
from streams.kafka import CheckedProducer, admin, create_topics, producer_config
from tests.fakes import HashingEncoder
from trainer.config import PolicyConfig, PromotionConfig, TrainerConfig
from trainer.data import SampleStore, holdout_predicate
from trainer.exceptions import TrainerError
from trainer.gates import GatesConfig
from trainer.runs import RunResult
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
    with lifecycle(settings, settings.kafka_connection(), db_url, config) as found:
        yield found


@pytest.fixture
def champion(lc: Lifecycle) -> RunResult:
    result = lc.trainer.bootstrap(rows("vader_movies")[:400], source="vader_movies.csv", kind="tfidf-logreg")
    assert result.status == "promoted", result.reason
    return result


def events(lc: Lifecycle) -> list[str]:
    found = read_model_events(lc.kafka, lc.settings.topics.models)
    return [f"{e.action}:{e.semver}" for e in found]


def test_bootstrap_deploys_the_first_champion_and_announces_it(lc: Lifecycle, champion: RunResult,
                                                               db_url: str) -> None:
    info = lc.registry.champion()
    assert info.semver == "1.0.0" and info.kind == "tfidf-logreg" and info.mode == "bootstrap"
    assert champion.event is not None and champion.event.sha256 == info.sha256
    state = fold(read_model_events(lc.kafka, lc.settings.topics.models))
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
    with lifecycle(settings, settings.kafka_connection(), db_url, config) as other:
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
    # a warm start continues the champion rather than refitting its recipe: never judged as a refresh
    assert not any(v["reason"].startswith("refresh") for c in trained[0].candidates for v in c["verdicts"])
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
    # the refused run is in MLflow too: its verdicts, the GE validation result and data docs
    root = lc.settings.data_dir / "mlartifacts"
    verdicts = [json.loads(p.read_text()) for p in root.rglob("gates/tfidf-logreg.evaluation.json")]
    assert [v["passed"] for v in verdicts].count(False) == 1  # the bootstrap's passed, this run's did not
    assert list(root.rglob("gates/quality/data_docs/index.html")) and list(root.rglob("gates/quality/validation.json"))


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
    state = fold(read_model_events(lc.kafka, lc.settings.topics.models))["sentiment"]
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
    kafka_conn = settings.kafka_connection()
    topics = settings.topics
    create_topics(admin(kafka_conn), topics.all(), 1)  # as `flywheel up` does before it starts the trainer
    service = TrainerService(lc.trainer, lc.config, kafka=kafka_conn, group=f"trainer-{topics.prefix}",
                             signal_topics=[topics.landed, topics.curated], request_topic=topics.retrain)
    stop = threading.Event()
    thread = threading.Thread(target=service.run, args=(stop,), daemon=True)
    thread.start()
    producer = CheckedProducer(producer_config(kafka_conn))
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


def test_admin_requests_are_worked_on_once_recorded_and_expire(
        lc: Lifecycle, champion: RunResult, db_url: str, settings: FlywheelSettings) -> None:
    """What a serving pod's admin routes queue: the trainer claims the admin_requests row, works on it once
    (a replay finds it taken) and records the outcome; a stale request is recorded as expired."""
    requests = AdminRequests(db.Connector(db_url), lc.settings.model_name)
    service = TrainerService(lc.trainer, lc.config, kafka=settings.kafka_connection(), group="unused",
                             signal_topics=[], request_topic=settings.topics.retrain, requests=requests)
    evaluate = RetrainRequest(ts=now(), model="sentiment", action="evaluate", version="1", trigger="admin")
    requests.create(evaluate.request_id, "evaluate", {"version": "1"})
    assert service._handle(evaluate)
    row, run = requests.find(evaluate.request_id)
    assert row is not None and run is None and (row["status"], row["outcome"]) == ("done", "evaluated"), row
    assert row["result"]["version"] == "1" and {v["gate"] for v in row["result"]["verdicts"]} == {
        "evaluation", "behaviour"}
    assert service._handle(evaluate)  # the replay: taken, not evaluated again
    assert requests.find(evaluate.request_id)[0] == row

    bootstrap = RetrainRequest(ts=now(), model="sentiment", action="bootstrap", trigger="admin")
    requests.create(bootstrap.request_id, "bootstrap",
                    {"rows": [[r.text, r.label, r.domain] for r in rows("vader_movies")[:50]], "kind": "tfidf-logreg"})
    assert service._handle(bootstrap)
    row, _ = requests.find(bootstrap.request_id)
    assert row is not None and row["status"] == "failed" and "already has a champion" in row["error"], row

    stale = RetrainRequest(ts=now() - timedelta(seconds=lc.config.policy.request_max_age_s + 60), model="sentiment",
                           mode="full", trigger="admin")
    requests.create(stale.request_id, "retrain", {"mode": "full"})
    assert service._handle(stale)
    row, run = requests.find(stale.request_id)
    assert row is not None and run is None and (row["status"], row["outcome"]) == ("failed", "expired"), row
    assert count_runs(db_url) == 0  # neither the bootstrap nor the stale retrain trained


def wait_for(check: Callable[[], bool], what: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def test_canary_mode_makes_the_candidate_challenger_and_announces_a_canary(
        settings: FlywheelSettings, db_url: str) -> None:
    config = TrainerConfig(policy=PolicyConfig(full_threshold=1500), promotion=PromotionConfig(canary_traffic=0.25))
    with lifecycle(settings, settings.kafka_connection(), db_url, config) as lc:
        first = lc.trainer.bootstrap(rows("vader_movies")[:400], source="m.csv", kind="tfidf-logreg")
        assert first.status == "promoted", first.reason
        land_feedback(db_url, rows("vader_movies")[400:6400])
        result = lc.trainer.maybe_train("signal")
        assert result.status == "canary", result.reason
        assert result.event is not None and result.event.action == "canary" and result.event.traffic == 0.25
        assert lc.registry.get("challenger").semver == "1.1.0" and lc.registry.champion().semver == "1.0.0"
        state = fold(read_model_events(settings.kafka_connection(), settings.topics.models))["sentiment"]
        assert state.canary is not None and state.canary.semver == "1.1.0" and state.canary_traffic == 0.25
        assert state.champion is not None and state.champion.semver == "1.0.0"
        event = lc.promote("challenger", "canary won")
        assert event.action == "promote" and event.semver == "1.1.0" and event.previous_version == "1"
        assert "challenger" not in lc.registry.aliases()


def test_a_run_left_running_by_a_crash_is_settled_by_the_next_lock_holder(
        lc: Lifecycle, champion: RunResult, db_url: str, tmp_path: Path) -> None:
    # a crashed trainer's run: its row stayed 'running' and it registered a version it never finished
    crashed = uuid.uuid4()
    with db.connect(db_url, autocommit=True) as conn:
        conn.execute("INSERT INTO training_runs (run_id, model_name, trigger, mode, status, watermark, sample_count, "
                     "data_hash) VALUES (%s, 'sentiment', 'signal', 'incremental', 'running', 5, 5, '')", (crashed,))
    model = lc.registry.load("champion")
    model.save(tmp_path / "half")
    half = lc.registry.register(tmp_path / "half", mode="incremental", metrics={},
                                lineage=Lineage(data_hash="x", watermark=5, sample_count=5,
                                                training_run_id=str(crashed)))
    assert [v.version for v in lc.registry.versions()] == ["1", half.version]
    result = lc.trainer.maybe_train("reconcile")
    assert result.status == "skipped"
    assert [v.version for v in lc.registry.versions()] == ["1"]  # no half-registered model is left
    with db.connect(db_url) as conn:
        row = conn.execute("SELECT status FROM training_runs WHERE run_id = %s", (crashed,)).fetchone()
    assert row is not None and row[0] == "abandoned"


def test_reconcile_re_announces_what_the_registry_has_and_the_topic_lacks(
        lc: Lifecycle, champion: RunResult, settings: FlywheelSettings, tmp_path: Path) -> None:
    kafka_conn, topic = settings.kafka_connection(), settings.topics.models
    model = lc.registry.load("champion")
    model.save(tmp_path / "m")
    second = lc.registry.register(tmp_path / "m", mode="full", metrics={},
                                  lineage=Lineage(data_hash="y", watermark=0, sample_count=0))
    lc.registry.promote(second.version, "an alias move whose event was lost")  # as if the trainer died here
    sent = lc.trainer.reconcile_announcements(fold(read_model_events(kafka_conn, topic)))
    assert [(e.action, e.version) for e in sent] == [("promote", second.version)]
    assert lc.trainer.reconcile_announcements(fold(read_model_events(kafka_conn, topic))) == []
    assert fold(read_model_events(kafka_conn, topic))["sentiment"].champion.version == second.version  # type: ignore[union-attr]


def test_a_request_trains_at_most_once_and_repeated_failures_back_off(
        lc: Lifecycle, champion: RunResult, db_url: str) -> None:
    land_feedback(db_url, rows("vader_movies")[400:500])
    first = lc.trainer.maybe_train("admin", requested="incremental", request_id="req-1")
    assert first.status in ("promoted", "refused"), first.reason
    again = lc.trainer.maybe_train("admin", requested="incremental", request_id="req-1")
    assert again.status == "skipped" and "req-1 already handled" in again.reason
    # a champion whose artifact is broken fails every run on this snapshot: after 3, the trainer waits
    info = lc.registry.champion()
    assert info is not None
    artifact = lc.registry.fetch(info.version)
    for path in artifact.iterdir():
        if path.suffix == ".npz":
            path.write_bytes(b"broken")
    land_feedback(db_url, rows("vader_movies")[500:800])
    statuses = [lc.trainer.maybe_train("signal").status for _ in range(4)]
    assert statuses == ["failed", "failed", "failed", "skipped"], statuses


def test_a_full_run_trains_every_configured_kind_and_the_gates_choose(
        settings: FlywheelSettings, db_url: str) -> None:
    # the trainer embeds with the shipped hashing fake instead of the MiniLM encoder: this test is about
    # choosing among candidates (the real encoder is covered by the conformance suite and the loop benchmark)
    config = TrainerConfig(policy=PolicyConfig(full_threshold=1500, kinds=("tfidf-logreg", "minilm-head")),
                           promotion=PromotionConfig(mode="direct"))
    fake = Resources(embedder=Embedder(HashingEncoder(), MemoryEmbeddingCache()))
    with lifecycle(settings, settings.kafka_connection(), db_url, config, resources=fake) as lc:
        assert lc.trainer.bootstrap(rows("vader_movies")[:400], source="m.csv", kind="tfidf-logreg").event
        land_feedback(db_url, rows("vader_movies")[400:6400])
        result = lc.trainer.maybe_train("signal")
    assert result.mode == "full" and {c["kind"] for c in result.candidates} == {"tfidf-logreg", "minilm-head"}
    with db.connect(db_url) as conn:
        row = conn.execute("SELECT candidates FROM training_runs WHERE mode = 'full'").fetchone()
    assert row is not None and len(row[0]) == 2 and all(c["verdicts"] for c in row[0])
    assert result.status == "promoted", result.reason
    best = max((c for c in result.candidates if c["passed"]), key=lambda c: c["score"])
    assert result.version is not None and result.version.kind == best["kind"]
    # a new kind is a major version; the same kind retrained in full a minor one
    assert result.version.semver == ("2.0.0" if best["kind"] == "minilm-head" else "1.1.0")


DRIFT_CONFIG = TrainerConfig(
    policy=PolicyConfig(incremental_threshold=200, full_threshold=200, holdout_percent=20, recent_min=20),
    # what is under test is the evidence, not the other checks: the reserved split is random (uuid feedback ids),
    # and a candidate that learnt tweets loses 0-3 points on the movie slice by chance of that split
    gates=GatesConfig(evaluation={"slice_tolerance": 0.05},
                      behaviour={"min_pass_rate": {"invariance": 0.0, "directional": 0.0, "mft": 0.0}}),
    promotion=PromotionConfig(mode="direct"))


@pytest.mark.parametrize("config", [DRIFT_CONFIG])
def test_under_drift_every_label_is_evidence_cross_fitted_and_the_watchdog_reads_current_accuracy(
        lc: Lifecycle, db_url: str, config: TrainerConfig) -> None:
    # the movies champion meets tweets: the samples a full run trains on were never seen by the champion, so
    # they join the evaluation with the recipe's out-of-fold predictions next to the reserved 20%
    boot = lc.trainer.bootstrap(rows("vader_movies")[:2500], source="vader_movies.csv", kind="tfidf-logreg")
    assert boot.status == "promoted", boot.reason
    land_feedback(db_url, rows("vader_tweets")[:400])
    with db.connect(db_url) as conn:
        trained = conn.execute(f"SELECT count(*) FROM samples WHERE status = 'accepted' AND NOT "
                               f"{holdout_predicate(20)}").fetchone()
    assert trained is not None and 250 < trained[0] < 400
    result = lc.trainer.maybe_train("signal")
    assert result.mode == "full" and result.status == "promoted", result.reason
    assert f"{trained[0]} cross-fitted" in result.reason
    root = lc.settings.data_dir / "mlartifacts"
    verdicts = [json.loads(p.read_text()) for p in root.rglob("gates/tfidf-logreg.evaluation.json")]
    run = next(v for v in verdicts if v["details"].get("cross_fitted"))
    d = run["details"]
    assert d["cross_fitted"] == {"rows": trained[0], "folds": 5}
    assert d["candidate"]["current"]["rows"] > trained[0]  # plus the reserved tweets
    # all the current traffic lies outside the corpus's slice (movies): it carries 0.9 of the weight
    assert d["effective_rows"] < d["rows"]
    assert result.version is not None
    offline = mlflow_run_metric(registry_backend(lc.settings, db_url))(result.version)
    assert offline == pytest.approx(d["candidate"]["current"]["accuracy"])  # the watchdog's reference


@pytest.mark.parametrize("config", [DRIFT_CONFIG])
def test_a_full_run_against_a_full_champion_cross_fits_the_champions_recipe_on_the_samples_it_trained_on(
        lc: Lifecycle, db_url: str, config: TrainerConfig) -> None:
    # after a first promotion on 400 tweets, the next full run's evidence is not only the tweets that came
    # since: the champion's recipe, refit without each fold, predicts the samples the champion trained on
    boot = lc.trainer.bootstrap(rows("vader_movies")[:2500], source="vader_movies.csv", kind="tfidf-logreg")
    assert boot.status == "promoted", boot.reason
    trained_count = f"SELECT count(*) FROM samples WHERE status = 'accepted' AND NOT {holdout_predicate(20)}"
    land_feedback(db_url, rows("vader_tweets")[:400])
    first = lc.trainer.maybe_train("signal")
    assert first.status == "promoted" and first.version is not None and first.version.mode == "full", first.reason
    with db.connect(db_url) as conn:
        seen = conn.execute(trained_count).fetchone()
    land_feedback(db_url, rows("vader_tweets")[400:650])
    with db.connect(db_url) as conn:
        now = conn.execute(trained_count).fetchone()
    assert seen is not None and now is not None and now[0] > seen[0]
    second = lc.trainer.maybe_train("admin", requested="full")  # whatever share of the 250 was reserved
    assert second.mode == "full", second.reason
    [evaluation] = [v for v in second.candidates[0]["verdicts"] if v["gate"] == "evaluation"]
    assert f"{now[0]} cross-fitted ({seen[0]} for the champion too)" in evaluation["reason"]
    # the champion's own recipe on more of the stream: a refresh, held to non-inferiority
    assert evaluation["reason"].startswith("refresh of the champion's recipe: "), evaluation["reason"]
    root = lc.settings.data_dir / "mlartifacts"
    details = [json.loads(p.read_text())["details"] for p in root.rglob("gates/tfidf-logreg.evaluation.json")]
    d = next(x for x in details if (x.get("cross_fitted") or {}).get("champion_rows"))
    assert d["cross_fitted"] == {"rows": now[0], "folds": 5, "champion_rows": seen[0]}
    # judged in sample, the champion's own training rows would have flattered it
    champion = lc.trainer.registry.load(first.version.version)
    with db.connect(db_url) as conn:
        own = conn.execute(f"SELECT text, label FROM samples WHERE status = 'accepted' AND NOT "
                           f"{holdout_predicate(20)} AND id <= %s", (first.version.watermark,)).fetchall()
    in_sample = sum(p == label for p, (_, label) in zip(champion.predict([t for t, _ in own]), own, strict=True))
    assert d["champion"]["current"]["accuracy"] < in_sample / len(own) - 0.05


@pytest.mark.parametrize("config", [DRIFT_CONFIG])
def test_labels_that_arrive_while_a_run_fits_join_its_evaluation_and_not_its_training(
        lc: Lifecycle, db_url: str, config: TrainerConfig, monkeypatch: pytest.MonkeyPatch) -> None:
    # a fast stream labels many rows while a run fits: neither its candidates nor the champion trained on them,
    # so the gate judges them too (held out, not cross-fitted); the version's lineage is the snapshot's
    boot = lc.trainer.bootstrap(rows("vader_movies")[:2500], source="vader_movies.csv", kind="tfidf-logreg")
    assert boot.status == "promoted", boot.reason
    land_feedback(db_url, rows("vader_tweets")[:250])
    recipes, fit = lc.trainer.recipes, lc.trainer.recipes.fit
    landed: list[int] = []

    def fit_while_labels_arrive(*args: Any) -> Any:
        if not landed:  # the run's first fit: 150 more tweets are labelled and curated meanwhile
            land_feedback(db_url, rows("vader_tweets")[250:400])
            landed.append(1)
        return fit(*args)

    monkeypatch.setattr(recipes, "fit", fit_while_labels_arrive)
    trained_count = f"SELECT count(*), max(id) FROM samples WHERE status = 'accepted' AND NOT {holdout_predicate(20)}"
    with db.connect(db_url) as conn:
        before = conn.execute(trained_count).fetchone()
    result = lc.trainer.maybe_train("admin", requested="full")
    assert landed and result.mode == "full", result.reason
    with db.connect(db_url) as conn:
        after = conn.execute(trained_count).fetchone()
        run = conn.execute("SELECT watermark, sample_count, trained_count FROM training_runs WHERE mode = 'full'"
                           ).fetchone()
        corpus = conn.execute("SELECT count(*) FROM corpus WHERE split = 'train'").fetchone()
        store = SampleStore(conn, 20, model="sentiment")
        reserved = len(store.recent_holdout(1000))
        arrived = store.arrived(before[1] if before else 0)
    assert before is not None and after is not None and run is not None and corpus is not None
    assert after[0] > before[0]
    assert run[0] == before[1] and run[1] == before[0]  # the snapshot's samples
    assert run[2] == corpus[0] + before[0]  # trained on: the corpus's train split and the snapshot's samples
    assert len(arrived) == after[0] - before[0] and min(arrived.ids) > before[1]
    root = lc.settings.data_dir / "mlartifacts"
    d = next(x for x in (json.loads(p.read_text())["details"] for p in root.rglob("gates/tfidf-logreg.evaluation.json"))
             if x.get("cross_fitted"))  # the full run's (the bootstrap's has none)
    assert d["cross_fitted"] == {"rows": before[0], "folds": 5}  # the arrivals are not cross-fitted
    # every current row: reserved (those of the 150 too), cross-fitted, and the training samples that arrived
    assert d["candidate"]["current"]["rows"] == reserved + before[0] + len(arrived)


@pytest.mark.parametrize("config", [DRIFT_CONFIG.model_copy(update={
    "policy": DRIFT_CONFIG.policy.model_copy(update={"judge_arrivals": False})})])
def test_without_judge_arrivals_a_run_is_judged_on_what_was_there_when_it_began(
        lc: Lifecycle, db_url: str, config: TrainerConfig, monkeypatch: pytest.MonkeyPatch) -> None:
    boot = lc.trainer.bootstrap(rows("vader_movies")[:2500], source="vader_movies.csv", kind="tfidf-logreg")
    assert boot.status == "promoted", boot.reason
    land_feedback(db_url, rows("vader_tweets")[:250])
    with db.connect(db_url) as conn:
        reserved = len(SampleStore(conn, 20, model="sentiment").recent_holdout(1000))
    recipes, fit = lc.trainer.recipes, lc.trainer.recipes.fit
    landed: list[int] = []

    def fit_while_labels_arrive(*args: Any) -> Any:
        if not landed:
            land_feedback(db_url, rows("vader_tweets")[250:400])
            landed.append(1)
        return fit(*args)

    monkeypatch.setattr(recipes, "fit", fit_while_labels_arrive)
    result = lc.trainer.maybe_train("admin", requested="full")
    assert landed and result.mode == "full", result.reason
    root = lc.settings.data_dir / "mlartifacts"
    d = next(x for x in (json.loads(p.read_text())["details"] for p in root.rglob("gates/tfidf-logreg.evaluation.json"))
             if x.get("cross_fitted"))  # the full run's (the bootstrap's has none)
    assert d["candidate"]["current"]["rows"] == reserved + d["cross_fitted"]["rows"]


CHOICES_CONFIG = DRIFT_CONFIG.model_copy(update={
    "policy": DRIFT_CONFIG.policy.model_copy(update={"corpus_weight_choices": (0.02, 0.2)})})


@pytest.mark.parametrize("config", [CHOICES_CONFIG])
def test_full_runs_try_each_corpus_weight_and_the_version_remembers_the_one_that_won(
        lc: Lifecycle, db_url: str, config: TrainerConfig, monkeypatch: pytest.MonkeyPatch) -> None:
    boot = lc.trainer.bootstrap(rows("vader_movies")[:2500], source="vader_movies.csv", kind="tfidf-logreg")
    assert boot.status == "promoted" and "corpus_weight" not in boot.version.tags  # type: ignore[union-attr]
    land_feedback(db_url, rows("vader_tweets")[:400])
    first = lc.trainer.maybe_train("signal")
    # the policy's own weight (0.2) is not tried twice
    assert [c["name"] for c in first.candidates] == ["tfidf-logreg", "tfidf-logreg_corpus0.02"]
    assert {c["kind"] for c in first.candidates} == {"tfidf-logreg"}
    assert first.status == "promoted" and first.version is not None, first.reason
    top = max((c for c in first.candidates if c["passed"]), key=lambda c: c["score"])
    default = next(c for c in first.candidates if c["name"] == "tfidf-logreg")
    if top is not default and default["passed"]:
        # the higher-scoring weight replaces the policy's only when the gate finds it better than that one
        assert set(top["selection"]) == {"chosen", "reason"} and "vs champion" in top["selection"]["reason"]
        chosen = top if top["selection"]["chosen"] else default
    else:
        assert "selection" not in top
        chosen = top
    weight = 0.02 if chosen["name"].endswith("0.02") else 0.2
    assert float(first.version.tags["corpus_weight"]) == weight and chosen["name"] in first.reason
    root = lc.settings.data_dir / "mlartifacts"
    assert list(root.rglob("gates/tfidf-logreg_corpus0.02.evaluation.json"))
    # the next run refits the champion's recipe at the weight the champion was trained with
    used: list[float | None] = []
    corpus = lc.trainer.frames.corpus
    monkeypatch.setattr(lc.trainer.frames, "corpus", lambda store, w=None: used.append(w) or corpus(store, w))
    land_feedback(db_url, rows("vader_tweets")[400:500])
    second = lc.trainer.maybe_train("admin", requested="full")
    assert second.mode == "full" and weight in used, (used, second.reason)
    assert all("for the champion too" in v["reason"] for c in second.candidates for v in c["verdicts"]
               if v["gate"] == "evaluation")
    # only the candidate at the champion's weight is its recipe refreshed; the other must improve on it
    refreshed = {c["name"]: next(v["reason"] for v in c["verdicts"] if v["gate"] == "evaluation").startswith(
        "refresh of the champion's recipe") for c in second.candidates}
    assert refreshed == {"tfidf-logreg": weight == 0.2, "tfidf-logreg_corpus0.02": weight == 0.02}, refreshed


TARGET_ONLY_CONFIG = TrainerConfig(
    policy=PolicyConfig(incremental_threshold=200, full_threshold=200, holdout_percent=20, recent_min=20,
                        corpus_weight=1.0, corpus_weight_choices=(0.0,)),
    gates=GatesConfig(evaluation={"metric_weights": {"accuracy": 1.0}},
                      behaviour={"min_pass_rate": {"invariance": 0.0, "directional": 0.0, "mft": 0.0}}),
    promotion=PromotionConfig(mode="direct"))


@pytest.mark.parametrize("config", [TARGET_ONLY_CONFIG])
def test_the_target_only_recipe_is_judged_by_the_same_gate_on_the_same_cross_fitted_rows(
        lc: Lifecycle, db_url: str, config: TrainerConfig) -> None:
    # the stream moved away from the corpus twice over: tweets instead of movie reviews, and users who label
    # them the other way round. The recipe without the corpus (corpus weight 0) is a candidate beside the
    # policy's weight, scored by the same gate on the same cross-fitted rows, and replaces it only through
    # the gate (its selection verdict). Which one wins is the gate's call: on 400 such labels the target-only
    # recipe scored +0.03 over the corpus recipe, significant in 1 of 7 random draws of the feedback ids
    # (p 0.08-0.10), so the ids are fixed here and the test checks the mechanism, not a winner. (A bootstrap
    # holdout of 25 rows: no movie slice big enough to check, as when the corpus's domain is no longer served.)
    boot = lc.trainer.bootstrap(rows("vader_movies")[:2500], source="vader_movies.csv", kind="tfidf-logreg",
                                holdout_fraction=0.01)
    assert boot.status == "promoted", boot.reason
    land_feedback(db_url, rows("vader_tweets")[:400], flip=True, seed=18)
    result = lc.trainer.maybe_train("signal")
    assert [c["name"] for c in result.candidates] == ["tfidf-logreg", "tfidf-logreg_corpus0"]
    assert result.status == "promoted" and result.version is not None, result.reason
    target_only = next(c for c in result.candidates if c["name"] == "tfidf-logreg_corpus0")
    default = next(c for c in result.candidates if c["name"] == "tfidf-logreg")

    def rows_judged(candidate: dict[str, Any]) -> tuple[str, ...]:
        reason = next(v["reason"] for v in candidate["verdicts"] if v["gate"] == "evaluation")
        found = re.search(r"on (\d+) rows, (\d+) cross-fitted", reason)
        assert found is not None, reason
        return found.groups()

    assert target_only["passed"] and default["passed"], result.candidates
    assert rows_judged(target_only) == rows_judged(default)  # the same rows, both cross-fitted
    won = target_only["score"] > default["score"] and target_only["selection"]["chosen"]
    if target_only["score"] > default["score"]:  # the higher score alone does not decide: the gate does
        assert "selection" in target_only, target_only
    chosen = "tfidf-logreg_corpus0" if won else "tfidf-logreg"
    assert (float(result.version.tags["corpus_weight"]) == 0.0) == won and chosen in result.reason
    root = lc.settings.data_dir / "mlartifacts"
    assert list(root.rglob("gates/tfidf-logreg_corpus0.evaluation.json"))
    # the next full run refits the champion's recipe (with or without the corpus) and calls it a refresh
    land_feedback(db_url, rows("vader_tweets")[400:500], flip=True, seed=19)
    second = lc.trainer.maybe_train("admin", requested="full")
    refreshed = {c["name"]: next(v["reason"] for v in c["verdicts"] if v["gate"] == "evaluation").startswith(
        "refresh of the champion's recipe") for c in second.candidates}
    assert refreshed == {"tfidf-logreg": not won, "tfidf-logreg_corpus0": won}, second.reason


def test_corpus_weight_choices_must_be_positive_or_zero() -> None:
    # 0 is the target-only recipe (was refused before it existed)
    assert PolicyConfig(corpus_weight_choices=(0.1, 0.0)).corpus_weight_choices == (0.1, 0.0)
    with pytest.raises(ValueError, match="corpus weights must be positive or 0"):
        PolicyConfig(corpus_weight_choices=(0.1, -0.5))
