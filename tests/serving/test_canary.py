"""The canary controller and the champion watchdog on the real broker, real Postgres and the real MLflow
store: a worse canary is retired, a better one promoted, too little feedback changes nothing, two
controllers act once, and a champion whose online accuracy collapsed is rolled back."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from confluent_kafka import Consumer, TopicPartition
from prometheus_client import CollectorRegistry

from core import db
from core.kafka import KafkaConnection
from core.settings import FlywheelSettings
from flywheel.lifecycle import Lifecycle
from registry import UNCHECKED, ChampionChanged, Expected, ModelVersionInfo
from registry.announce import model_event, read_model_events
from schemas import ModelEvent, RetrainRequest
from serving.canary import CanaryConfig, CanaryController, CanaryMetrics, WatchdogConfig, controller_for, lock_key
from serving.sequential import SequentialConfig
from streams.kafka import admin, consumer_config, describe_topic, high_watermarks

from ..trainer.lifecycle_helpers import bootstrapped, register_copy

CONFIG = CanaryConfig(interval_s=0.2, test=SequentialConfig(alpha=0.05, beta=0.2, effect=0.1, min_samples=100),
                      watchdog=WatchdogConfig(margin=0.1, window_s=3600, min_samples=100))


@pytest.fixture
def lc(settings: FlywheelSettings, db_url: str) -> Iterator[Lifecycle]:
    with bootstrapped(settings, db_url, "canary") as found:
        yield found


def start_canary(lc: Lifecycle, tmp_path: Path) -> ModelVersionInfo:
    """What the trainer does in canary mode: challenger alias, then a canary event."""
    info = register_copy(lc, tmp_path)
    lc.registry.mark_challenger(info.version, "test")
    lc.announcer.publish(model_event(lc.registry.get(info.version), "sentiment", "canary", 0.1, "test"))
    return info


def land(db_url: str, variant: str, version: str, n: int, correct: int, received: datetime | None = None,
         text: str = "text", wrong: str = "negative") -> None:
    """``n`` joined feedback rows on predictions (of ``text``, answered "positive") served by ``version`` as
    ``variant``; ``correct`` are right. Every fourth is a thumbs (up when right, down when wrong), the rest
    explicit labels (``wrong`` when wrong)."""
    received = received or datetime.now(UTC)
    with db.connect(db_url) as conn, conn.cursor() as cur:
        for i in range(n):
            pid, right = uuid.uuid4().hex, i < correct
            cur.execute("INSERT INTO predictions (prediction_id, model, model_version, variant, text, label, "
                        "probabilities, latency_ms, ts) VALUES (%s, 'sentiment', %s, %s, %s, 'positive', "
                        "'{}', 1.0, now())", (pid, version, variant, text))
            label, thumbs = (None, "up" if right else "down") if i % 4 == 0 else (
                "positive" if right else wrong, None)
            cur.execute("INSERT INTO feedback (feedback_id, content_key, prediction_id, label, thumbs, source, ts, "
                        "status, model, model_version, variant, predicted_label, received_at, resolved_at) "
                        "VALUES (%s, %s, %s, %s, %s, 'test', now(), 'joined', 'sentiment', %s, %s, 'positive', "
                        "%s, now())", (uuid.uuid4().hex, uuid.uuid4(), pid, label, thumbs, version, variant, received))
        conn.commit()


def decisions(db_url: str) -> list[tuple[str, str | None, str, str]]:
    with db.connect(db_url) as conn:
        found = conn.execute("SELECT action, verdict, version, reason FROM canary_decisions ORDER BY id").fetchall()
    return [(r[0], r[1], r[2], r[3]) for r in found]


def actions(lc: Lifecycle) -> list[str]:
    return [f"{e.action}:{e.version}" for e in read_model_events(lc.kafka,
                                                                  lc.settings.topics.models)]


def controller(lc: Lifecycle, db_url: str, config: CanaryConfig = CONFIG, offline: float | None = 0.8,
               metrics: CollectorRegistry | None = None) -> CanaryController:
    return controller_for(lc.settings, lc.kafka, db_url, config, actions=lc.actions,
                          offline_accuracy=None if offline is None else (lambda _: offline),
                          metrics=CanaryMetrics(metrics or CollectorRegistry()))


def test_a_worse_canary_is_retired(lc: Lifecycle, db_url: str, tmp_path: Path) -> None:
    canary = start_canary(lc, tmp_path)
    land(db_url, "champion", "1", 300, 240)  # 80%
    land(db_url, "canary", canary.version, 150, 90)  # 60%
    metrics = CollectorRegistry()
    result = controller(lc, db_url, metrics=metrics).tick()
    assert result.decision is not None and result.decision.verdict == "rollback", result.decision
    assert [(a.action, a.version) for a in result.acted] == [("retire", canary.version)]
    assert "challenger" not in lc.registry.aliases() and lc.registry.champion().version == "1"  # type: ignore[union-attr]
    assert "canary worse" in lc.registry.get(canary.version).tags["canary_retired"]
    assert actions(lc) == ["promote:1", f"canary:{canary.version}", f"retire:{canary.version}"]
    [(action, verdict, version, reason)] = decisions(db_url)
    assert (action, verdict, version) == ("retire", "rollback", canary.version)
    assert "canary worse" in reason and "90/150" in reason and "240/300" in reason
    sample = metrics.get_sample_value
    assert sample("flywheel_online_accuracy", {"model": "sentiment", "variant": "canary"}) == pytest.approx(0.6)
    assert sample("flywheel_online_accuracy", {"model": "sentiment", "variant": "champion"}) == pytest.approx(0.8)
    assert sample("flywheel_canary_decisions_total", {"model": "sentiment", "verdict": "rollback"}) == 1
    again = controller(lc, db_url).tick()  # nothing left to judge
    assert again.acted == () and again.notes[0] == "no challenger"
    assert len(decisions(db_url)) == 1


def test_a_better_canary_is_promoted_on_feedback_since_it_started(lc: Lifecycle, db_url: str,
                                                                  tmp_path: Path) -> None:
    land(db_url, "champion", "1", 500, 500, received=datetime.now(UTC) - timedelta(hours=1))  # before: ignored
    canary = start_canary(lc, tmp_path)
    land(db_url, "champion", "1", 300, 180)  # 60%
    land(db_url, "canary", canary.version, 150, 120)  # 80%
    result = controller(lc, db_url).tick()
    assert result.decision is not None and result.decision.verdict == "promote", result.decision
    assert "180/300" in result.decision.reason
    aliases = lc.registry.aliases()
    assert aliases["champion"] == canary.version and aliases["previous"] == "1" and "challenger" not in aliases
    assert actions(lc) == ["promote:1", f"canary:{canary.version}", f"promote:{canary.version}"]
    [(action, verdict, version, reason)] = decisions(db_url)
    assert (action, verdict, version) == ("promote", "promote", canary.version) and "canary better" in reason


def test_below_the_minimum_samples_nothing_happens(lc: Lifecycle, db_url: str, tmp_path: Path) -> None:
    canary = start_canary(lc, tmp_path)
    land(db_url, "champion", "1", 300, 300)
    land(db_url, "canary", canary.version, 60, 0)  # dreadful, but too little of it
    result = controller(lc, db_url).tick()
    assert result.decision is not None and result.decision.verdict == "continue"
    assert "too few samples" in result.decision.reason and result.acted == ()
    assert lc.registry.aliases().get("challenger") == canary.version
    assert actions(lc) == ["promote:1", f"canary:{canary.version}"] and decisions(db_url) == []


def test_two_controllers_act_once(lc: Lifecycle, db_url: str, tmp_path: Path) -> None:
    canary = start_canary(lc, tmp_path)
    land(db_url, "champion", "1", 300, 240)
    land(db_url, "canary", canary.version, 150, 90)
    # the lock itself: held by someone else, a tick does nothing
    with db.connect(db_url, autocommit=True) as holder:
        holder.execute("SELECT pg_advisory_lock(%s)", (lock_key("sentiment"),))
        assert controller(lc, db_url).tick().status == "busy"
    # two controllers looping at once
    stop, ran = threading.Event(), [controller(lc, db_url), controller(lc, db_url)]
    threads = [threading.Thread(target=c.run, args=(stop,)) for c in ran]
    for t in threads:
        t.start()
    try:
        deadline = datetime.now(UTC) + timedelta(seconds=20)
        while not decisions(db_url) and datetime.now(UTC) < deadline:
            stop.wait(0.1)
        stop.wait(1.0)  # both keep ticking for a while
    finally:
        stop.set()
        for t in threads:
            t.join(20)
    assert [(d[0], d[2]) for d in decisions(db_url)] == [("retire", canary.version)]
    assert actions(lc).count(f"retire:{canary.version}") == 1


NEGATIVE = "an awful, boring and terrible film"


def answer_of(lc: Lifecycle, version: str, text: str) -> str:
    model = lc.registry.load(version)
    return str(model.labels[int(model.predict_proba([text])[0].argmax())])


def test_the_watchdog_rolls_back_a_champion_whose_online_accuracy_collapsed(
        lc: Lifecycle, db_url: str, tmp_path: Path) -> None:
    second = register_copy(lc, tmp_path, holdout_accuracy=0.9)  # read back from its MLflow run
    lc.promote(second.version, "test")
    earlier = answer_of(lc, "1", NEGATIVE)
    assert earlier != "positive"  # version 1 answers what the champion (said "positive") got wrong
    land(db_url, "champion", "1", 200, 40, received=datetime.now(UTC) - timedelta(minutes=5))  # not the champion's
    land(db_url, "champion", second.version, 80, 20, text=NEGATIVE, wrong=earlier)
    ctl = controller(lc, db_url, offline=None)
    assert ctl.tick().acted == ()  # 80 < 100 samples
    land(db_url, "champion", second.version, 120, 60, text=NEGATIVE, wrong=earlier)  # 80 / 200 = 40%, offline 0.9
    result = ctl.tick()
    assert [(a.action, a.version) for a in result.acted] == [("rollback", second.version)]
    assert lc.registry.champion().version == "1"  # type: ignore[union-attr]
    assert actions(lc)[-1] == "rollback:1"
    [(action, _, version, reason)] = decisions(db_url)
    assert (action, version) == ("rollback", second.version)
    assert "0.4000 (80/200" in reason and "offline 0.9000" in reason
    assert ctl.tick().acted == ()  # version 1 has no feedback since it came back


def test_the_watchdog_does_not_roll_back_a_version_promoted_while_it_judged_the_one_before(
        lc: Lifecycle, db_url: str, tmp_path: Path) -> None:
    """The trainer promotes version 3 while the watchdog is judging champion 2 (whose online accuracy
    collapsed): the rollback decided on 2 must not demote 3 (it would restore 2, the collapsed one)."""
    second = register_copy(lc, tmp_path, holdout_accuracy=0.9)
    lc.promote(second.version, "test")
    earlier = answer_of(lc, "1", NEGATIVE)
    land(db_url, "champion", second.version, 200, 80, text=NEGATIVE, wrong=earlier)  # 40%, offline 0.9
    third = register_copy(lc, tmp_path, holdout_accuracy=0.9)

    def offline_while_promoting(info: ModelVersionInfo) -> float:
        if info.version == second.version and lc.registry.champion().version == second.version:  # type: ignore[union-attr]
            lc.promote(third.version, "a run that finished meanwhile")  # after the watchdog read the champion
        return 0.9

    ctl = controller_for(lc.settings, lc.kafka, db_url, CONFIG, actions=lc.actions,
                         offline_accuracy=offline_while_promoting, metrics=CanaryMetrics(CollectorRegistry()))
    result = ctl.tick()
    assert result.acted == ()
    assert any("no rollback" in n and f"now version {third.version}, not version {second.version}" in n
               for n in result.notes), result.notes
    assert lc.registry.champion().version == third.version  # type: ignore[union-attr]
    assert "rolled_back" not in lc.registry.get(third.version).tags
    assert decisions(db_url) == [] and actions(lc)[-1] == f"promote:{third.version}"
    assert ctl.tick().acted == ()  # the next look judges version 3, which has served nothing yet


def test_a_rollback_decided_on_another_champion_is_refused(lc: Lifecycle, tmp_path: Path) -> None:
    second = register_copy(lc, tmp_path)
    lc.promote(second.version, "test")
    with pytest.raises(ChampionChanged, match=f"now version {second.version}, not version 1"):
        lc.registry.rollback(None, "stale", expected="1")
    assert lc.registry.champion().version == second.version  # type: ignore[union-attr]
    assert lc.registry.rollback(None, "current", expected=second.version).to_version == "1"


def test_a_canary_promotion_decided_on_a_champion_an_operator_replaced_is_refused(
        lc: Lifecycle, db_url: str, tmp_path: Path) -> None:
    """The canary beat champion 1, but an operator promoted version 3 while the controller judged: the
    canary, never measured against 3, is not promoted over it; nothing is recorded, the next tick notes
    that there is no challenger (the operator's promotion ended the canary)."""
    canary = start_canary(lc, tmp_path)
    land(db_url, "champion", "1", 300, 180)  # 60%
    land(db_url, "canary", canary.version, 150, 120)  # 80%
    third = register_copy(lc, tmp_path)
    ctl = controller(lc, db_url)

    def promote_after_the_operator(ref: str, reason: str, *, expected: Expected = UNCHECKED) -> ModelEvent:
        lc.promote(third.version, "an operator, meanwhile")
        return lc.actions.promote(ref, reason, expected=expected)

    ctl.promote = promote_after_the_operator
    result = ctl.tick()
    assert result.decision is not None and result.decision.verdict == "promote"
    assert result.acted == ()
    assert any("no promotion" in n and f"now version {third.version}, not version 1" in n for n in result.notes)
    assert lc.registry.champion().version == third.version  # type: ignore[union-attr]
    assert decisions(db_url) == [] and actions(lc)[-1] == f"promote:{third.version}"
    assert controller(lc, db_url).tick().notes[0] == "no challenger"


def test_a_promotion_decided_on_another_champion_is_refused(lc: Lifecycle, tmp_path: Path) -> None:
    second, third = register_copy(lc, tmp_path), register_copy(lc, tmp_path)
    lc.promote(second.version, "test")
    with pytest.raises(ChampionChanged, match=f"now version {second.version}, not version 1 that the promotion"):
        lc.registry.promote(third.version, "stale", expected="1")
    assert lc.registry.champion().version == second.version  # type: ignore[union-attr]
    assert lc.registry.promote(third.version, "current", expected=second.version).to_version == third.version
    assert lc.registry.get("previous").version == second.version


def test_a_promotion_decided_with_no_champion_is_refused_once_there_is_one(lc: Lifecycle, tmp_path: Path) -> None:
    """``expected=None``: a bootstrap's promotion, judged with no champion, does not replace one promoted since."""
    second = register_copy(lc, tmp_path)
    with pytest.raises(ChampionChanged, match="now version 1, but there was none when the promotion was decided"):
        lc.registry.promote(second.version, "bootstrap", expected=None)
    assert lc.registry.champion().version == "1"  # type: ignore[union-attr]
    lc.registry.delete_alias("champion")
    assert lc.registry.promote(second.version, "bootstrap", expected=None).to_version == second.version


def test_the_watchdog_keeps_a_champion_the_previous_version_would_not_beat(
        lc: Lifecycle, db_url: str, tmp_path: Path) -> None:
    """Online accuracy far below offline, but version 1 would have served the same labelled predictions no
    better (the traffic got harder): no rollback, a full retrain is requested instead, once."""
    second = register_copy(lc, tmp_path, holdout_accuracy=0.9)
    lc.promote(second.version, "test")
    neither = next(x for x in ("negative", "neutral") if x != answer_of(lc, "1", NEGATIVE))
    land(db_url, "champion", second.version, 200, 80, text=NEGATIVE, wrong=neither)  # 40%, offline 0.9
    ctl = controller(lc, db_url, offline=None)
    assert [(a.action, a.version) for a in ctl.tick().acted] == [("retrain", second.version)]
    assert lc.registry.champion().version == second.version  # type: ignore[union-attr]
    [(action, _, version, reason)] = decisions(db_url)
    assert (action, version) == ("retrain", second.version) and "no rollback" in reason, reason
    assert ctl.tick().acted == ()  # within the cooldown
    requests = read_requests(lc.kafka, lc.settings.topics.retrain)
    assert len(requests) == 1 and requests[0].trigger == "drift" and "would have served" in requests[0].reason


def test_the_watchdog_requests_a_retrain_once_per_cooldown(lc: Lifecycle, db_url: str) -> None:
    config = CONFIG.model_copy(update={"watchdog": CONFIG.watchdog.model_copy(update={"action": "retrain"})})
    land(db_url, "champion", "1", 150, 30)
    ctl = controller(lc, db_url, config, offline=0.85)
    assert [a.action for a in ctl.tick().acted] == ["retrain"]
    assert ctl.tick().acted == ()  # within the cooldown
    requests = read_requests(lc.kafka, lc.settings.topics.retrain)
    assert len(requests) == 1 and requests[0].trigger == "drift" and requests[0].mode == "full"
    assert "30/150" in requests[0].reason and lc.registry.champion().version == "1"  # type: ignore[union-attr]


def read_requests(kafka_conn: KafkaConnection, topic: str) -> list[RetrainRequest]:
    """Every record on the retrain topic up to its current end."""
    partitions = describe_topic(admin(kafka_conn), topic).partitions
    wanted = {p: end for (_t, p), end in high_watermarks(kafka_conn, [(topic, p) for p in range(partitions)],
                                                         10.0).items() if end > 0}
    consumer = Consumer(consumer_config(kafka_conn, f"test-{uuid.uuid4().hex[:8]}"))
    found: list[RetrainRequest] = []
    try:
        consumer.assign([TopicPartition(topic, p, 0) for p in wanted])
        deadline = datetime.now(UTC) + timedelta(seconds=10)
        while wanted and datetime.now(UTC) < deadline:
            for m in consumer.consume(num_messages=10, timeout=0.2):
                if not m.error():
                    found.append(RetrainRequest.model_validate_json(m.value() or b""))
                    if (m.offset() or 0) + 1 >= wanted.get(m.partition() or 0, 0):
                        wanted.pop(m.partition() or 0, None)
    finally:
        consumer.close()
    return found
