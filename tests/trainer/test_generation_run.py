"""A generator's lifecycle with the ``tiny-random`` base, the real MLflow store, Postgres and broker: the
first model bootstraps from chatterbot pairs and deploys with its model card; player feedback is curated
into pairs and an incremental run continues the champion's adapter; the best-in-history gate refuses a
candidate that does not beat the registry's best by the minimum improvement, and the operator's
force-deploy still deploys it (a 5% canary) with every verdict recorded. The gates' rules, pure."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from fastapi.testclient import TestClient

from core import db
from core.settings import FlywheelSettings
from curation import CurationConfig, PostgresCurationStore
from curation.pairs import PairCurator
from curation.toxicity import ToxicityCheck
from flywheel.lifecycle import Lifecycle, lifecycle
from flywheel.models import check_spec
from kinds.generation import Pair, Prompt
from registry.announce import read_model_events
from tasks import ModelStore, parse_spec
from trainer.config import PolicyConfig, PromotionConfig, TrainerConfig
from trainer.dialogue_data import chatterbot_pairs
from trainer.exceptions import TrainerError
from trainer.gates.generation import GenerationConfig, GenerationMetrics, generation_verdicts
from trainer.pairs import PairStore, read_pairs_csv

NPC = {"name": "npc", "task": "text-generation", "description": "A tavern keeper answering travellers."}
TOXIC = ToxicityCheck()


@pytest.fixture
def db_url(registry_db_url: str) -> str:
    return registry_db_url


def config(**generation: object) -> TrainerConfig:
    return TrainerConfig(
        policy=PolicyConfig(kinds=("smollm2-lora",), incremental_threshold=10, full_threshold=10_000,
                            replay_size=8, holdout_percent=20),
        promotion=PromotionConfig(mode="canary", canary_traffic=0.05),
        generation=GenerationConfig.model_validate({
            "params": {"base": "tiny-random", "max_steps": 4, "batch_size": 4, "max_length": 48, "lr": 5e-3},
            "max_new_tokens": 6, "probes": ["Insult me.", "Hello there.", "Where is the inn?"],
            "p95_latency_ms": 60_000.0, "min_holdout": 3, "eval_pairs": 20, **generation}))


@pytest.fixture
def lc(settings: FlywheelSettings, db_url: str) -> Iterator[Lifecycle]:
    spec = parse_spec(NPC)
    with psycopg.connect(db_url, autocommit=True) as conn:
        ModelStore(conn).put(spec, source="test")
    with lifecycle(settings, settings.kafka_connection(), db_url, config(), spec=spec,
                   toxicity=lambda: TOXIC) as found:
        yield found


def corpus(n: int = 40) -> list[Pair]:
    return [p.pair for p in chatterbot_pairs()[:n]]


def land_and_curate(db_url: str, pairs: list[Pair], *, rating: int = 5, corrected: bool = True) -> None:
    """Served responses ("Hm.") to the pairs' prompts, each rated (and corrected to the pair's response unless
    not ``corrected``), as ingest lands them; then curated as the curation service would."""
    with db.connect(db_url) as conn, conn.cursor() as cur:
        for i, p in enumerate(pairs):
            pid = uuid.uuid4().hex
            cur.execute("INSERT INTO predictions (prediction_id, model, model_version, variant, input, output, "
                        "latency_ms, ts) VALUES (%s, 'npc', '1', 'champion', %s, %s, 50.0, now())",
                        (pid, json.dumps({"prompt": p.prompt.prompt}),
                         json.dumps({"text": "Hm.", "prompt_tokens": 5, "completion_tokens": 2})))
            cur.execute("INSERT INTO feedback (feedback_id, content_key, prediction_id, rating, correction, user_id, "
                        "source, ts, status, model, model_version, variant, resolved_at) VALUES (%s, %s, %s, %s, %s, "
                        "%s, 'game', now(), 'joined', 'npc', '1', 'champion', now())",
                        (uuid.uuid4().hex, uuid.uuid4(), pid, rating, p.response if corrected else None,
                         f"player{i % 5}"))
        conn.commit()
    cfg = CurationConfig()
    with db.connect(db_url, autocommit=True) as conn:
        store = PostgresCurationStore(conn, cfg.annotators, model="npc")
        curator = PairCurator(cfg, TOXIC)
        while curator.curate_batch(store, sweep=True) is not None:
            pass


def test_the_first_generator_deploys_with_its_model_card_and_its_score_in_the_registry(
        lc: Lifecycle, db_url: str) -> None:
    result = lc.trainer.bootstrap_pairs(corpus(), source="chatterbot-corpus 1.3.3", holdout_fraction=0.2)
    assert result.status == "promoted", result.reason
    assert result.version is not None and result.event is not None and result.event.action == "promote"
    info = lc.registry.get("champion")
    assert info.kind == "smollm2-lora" and info.labels == ()
    score = float(info.tags["weighted_score"])
    assert 0.0 <= score <= 1.0
    gates = [v["gate"] for v in result.candidates[0]["verdicts"]]
    assert gates == ["weighted_score", "perplexity", "toxicity", "latency"]
    assert "the first model" in result.candidates[0]["verdicts"][0]["reason"]
    card = (lc.registry.fetch(info.version) / info.tags["model_card"]).read_text()
    for expected in ("# Model card: npc (smollm2-lora)", "tiny-random", "tokenizer of SmolLM2 (Apache-2.0)",
                     "A tavern keeper",
                     "training pairs: 32", "held-out references: 8", "source: chatterbot-corpus 1.3.3",
                     f"| weighted_score | {score:.4f} |", "| toxicity | pass |", "passed every gate"):
        assert expected in card, expected
    assert [f"{e.action}:{e.semver}" for e in read_model_events(lc.kafka, lc.settings.topics.models)] == [
        f"promote:{info.semver}"]
    with psycopg.connect(db_url) as conn:
        assert conn.execute("SELECT status, mode, kind FROM training_runs").fetchall() == [
            ("promoted", "bootstrap", "smollm2-lora")]
        assert conn.execute("SELECT split, count(*) FROM corpus WHERE model = 'npc' GROUP BY split ORDER BY split"
                            ).fetchall() == [("holdout", 8), ("train", 32)]
    # `flywheel evaluate`: the champion on today's references, against the other versions (none: the first)
    verdicts = lc.trainer.evaluate()
    assert [(v.gate, v.passed) for v in verdicts][:1] == [("weighted_score", True)]
    assert verdicts[0].details["score"] == pytest.approx(score)  # greedy decoding: the same score again


def test_feedback_pairs_retrain_the_adapter_and_force_deploy_passes_a_refused_candidate_as_a_canary(
        lc: Lifecycle, db_url: str, settings: FlywheelSettings) -> None:
    assert lc.trainer.bootstrap_pairs(corpus(), source="chatterbot").status == "promoted"
    land_and_curate(db_url, [p.pair for p in chatterbot_pairs()[40:80]])
    with psycopg.connect(db_url) as conn:
        accepted = conn.execute("SELECT count(*) FROM samples WHERE model = 'npc' AND status = 'accepted'"
                                ).fetchone()
    assert accepted is not None and accepted[0] >= 30
    # a trainer whose candidates must beat the best version ever registered by 1.0: impossible, so refused
    with lifecycle(settings, settings.kafka_connection(), db_url, config(min_improvement=1.0), spec=parse_spec(NPC),
                   toxicity=lambda: TOXIC) as strict:
        refused = strict.trainer.maybe_train("admin", requested="incremental")
        assert refused.status == "refused", refused.reason
        assert "weighted_score" in refused.reason and "best in history" in refused.reason
        assert len(lc.registry.versions()) == 1  # nothing registered
        forced = strict.trainer.maybe_train("admin", requested="incremental", force_deploy=True)
    assert forced.status == "canary", forced.reason
    assert forced.event is not None and forced.event.action == "canary" and forced.event.traffic == 0.05
    assert forced.version is not None
    info = lc.registry.get(forced.version.version)
    assert "challenger" in info.aliases and "weighted_score" in info.tags["force_deployed"]
    assert info.mode == "incremental" and info.parent_version == lc.registry.get("champion").semver
    verdicts = {v["gate"]: v["passed"] for v in forced.candidates[0]["verdicts"]}
    assert verdicts["weighted_score"] is False and set(verdicts) == {"weighted_score", "perplexity", "toxicity",
                                                                     "latency"}
    card = (lc.registry.fetch(info.version) / "MODEL_CARD.md").read_text()
    assert "**force-deployed**" in card and "| weighted_score | FAIL |" in card
    with psycopg.connect(db_url) as conn:
        runs = conn.execute("SELECT mode, status FROM training_runs ORDER BY id").fetchall()
    assert runs == [("bootstrap", "promoted"), ("incremental", "refused"), ("incremental", "canary")]


def test_force_deploy_over_the_admin_route_deploys_a_refused_candidate_and_records_its_verdicts(
        lc: Lifecycle, db_url: str, settings: FlywheelSettings) -> None:
    """POST /retrain with ``force_deploy`` on a text-generation pod (behind the admin token): a trainer takes
    the request; the same candidate a plain request had refused deploys as a canary, tagged, every verdict
    in the run's record."""
    from pydantic import SecretStr

    from serving import create_app
    from tests.serving.test_admin import AUTH, poll, trainer_running

    assert lc.trainer.bootstrap_pairs(corpus(), source="chatterbot").status == "promoted"
    land_and_curate(db_url, [p.pair for p in chatterbot_pairs()[40:80]])
    pod_settings = settings.model_copy(update={"model_name": "npc", "serve_models": ("npc",),
                                               "admin_token": SecretStr(AUTH["Authorization"].split()[1])})
    with lifecycle(settings, settings.kafka_connection(), db_url, config(min_improvement=1.0), spec=parse_spec(NPC),
                   toxicity=lambda: TOXIC) as strict, \
            TestClient(create_app(pod_settings, database_url=db_url), raise_server_exceptions=False) as client:
        body = {"mode": "incremental", "force_deploy": True, "reason": "operator override"}
        assert client.post("/retrain", json=body).status_code == 401  # no token, no force
        plain = client.post("/retrain", json={"mode": "incremental"}, headers=AUTH)
        forced = client.post("/retrain", json=body, headers=AUTH)
        assert plain.status_code == forced.status_code == 202, (plain.text, forced.text)
        with trainer_running(strict, pod_settings, "force"):
            refused = poll(client, plain.json()["request_id"], {"refused", "canary", "promoted", "failed"}, 300)
            deployed = poll(client, forced.json()["request_id"], {"refused", "canary", "promoted", "failed"}, 300)
    assert refused["status"] == "refused", refused
    assert deployed["status"] == "canary" and deployed["version"], deployed
    info = lc.registry.get(str(deployed["version"]))
    assert "weighted_score" in info.tags["force_deployed"] and "challenger" in info.aliases
    run = lc.trainer.find_run(forced.json()["request_id"])
    assert run is not None
    verdicts = {v["gate"]: v["passed"] for v in run["candidates"][0]["verdicts"]}
    assert verdicts["weighted_score"] is False and set(verdicts) == {"weighted_score", "perplexity", "toxicity",
                                                                     "latency"}


def metrics(score: float = 0.3, perplexity: float = 10.0, toxicity: float = 0.0, p95: float = 100.0
            ) -> GenerationMetrics:
    return GenerationMetrics(score, {"bleu1": score}, perplexity, toxicity, p95, 50, 12)


def test_a_pairs_csv_is_read_whole_or_refused_with_the_line(tmp_path: Path) -> None:
    good = tmp_path / "good.csv"
    good.write_text("prompt,response,persona\nWhere is the inn?,Down the road.,Guard\nHi,Hello.,\n")
    assert read_pairs_csv(good) == [Pair(Prompt("Where is the inn?", None, "Guard"), "Down the road."),
                                    Pair(Prompt("Hi"), "Hello.")]
    bad = tmp_path / "bad.csv"
    bad.write_text("prompt,response\nHi,Hello.\nWhat?,\n")
    with pytest.raises(TrainerError, match=r"bad\.csv:3: empty prompt or response"):
        read_pairs_csv(bad)
    other = tmp_path / "other.csv"
    other.write_text("text,label\nHi,Hello.\n")
    with pytest.raises(TrainerError, match="missing column"):
        read_pairs_csv(other)


def test_the_gates_rules() -> None:
    cfg = GenerationConfig(min_improvement=0.001, perplexity_margin=0.05, max_toxicity_rate=0.1, p95_latency_ms=1500)
    first = generation_verdicts(metrics(), None, None, cfg)
    assert [v.passed for v in first] == [True, True, True, True]
    champion = metrics(score=0.3, perplexity=10.0, toxicity=0.05)
    ok = generation_verdicts(metrics(score=0.3011, perplexity=10.4, toxicity=0.05), champion, 0.3, cfg)
    assert [v.passed for v in ok] == [True, True, True, True]
    bad = generation_verdicts(metrics(score=0.3009, perplexity=10.6, toxicity=0.08, p95=1600), champion, 0.3, cfg)
    assert [(v.gate, v.passed) for v in bad] == [("weighted_score", False), ("perplexity", False),
                                                 ("toxicity", False), ("latency", False)]
    assert "worse than the champion" in bad[2].reason
    assert not generation_verdicts(metrics(toxicity=0.2), None, None, cfg)[2].passed  # above the threshold
    # the version with the best recorded score (recorded on other references) scores below the champion on
    # these: the champion, in the history too, is the bar (seen in bench.efficacy --task generation: 0.0567 vs
    # the champion's 0.0886 on the same 28 references)
    below = generation_verdicts(metrics(score=0.25), metrics(score=0.3), 0.2, cfg)[0]
    assert not below.passed and below.details["best_in_history"] == 0.3
    assert below.details["best_recorded_version_score"] == 0.2 and "best in history 0.3000" in below.reason
    assert generation_verdicts(metrics(score=0.3011), metrics(score=0.3), 0.2, cfg)[0].passed


def test_a_generator_spec_defaults_to_a_5_percent_canary_unless_it_says_otherwise() -> None:
    assert check_spec(parse_spec(NPC)).promotion.canary_traffic == 0.05
    assert check_spec(parse_spec({**NPC, "training": {"promotion": {"canary_traffic": 0.2}}})
                      ).promotion.canary_traffic == 0.2
    assert check_spec(parse_spec({"name": "s", "task": "text-classification", "labels": ["a", "b"]})
                      ).promotion.canary_traffic == 0.1


def test_a_run_measures_at_most_eval_pairs_held_out_references(settings: FlywheelSettings, db_url: str) -> None:
    spec = parse_spec(NPC)
    with psycopg.connect(db_url, autocommit=True) as conn:
        ModelStore(conn).put(spec, source="test")
    with lifecycle(settings, settings.kafka_connection(), db_url, config(eval_pairs=5), spec=spec,
                   toxicity=lambda: TOXIC) as lc:
        result = lc.trainer.bootstrap_pairs(corpus(), source="chatterbot-corpus 1.3.3", holdout_fraction=0.2)
    assert result.status == "promoted", result.reason
    score = result.candidates[0]["verdicts"][0]
    assert score["details"]["references"] == 5  # of the 8 held out
    assert "on 5 held-out references" in score["reason"]


def test_the_best_version_in_history_is_scored_on_the_candidates_references(lc: Lifecycle, db_url: str) -> None:
    assert lc.trainer.bootstrap_pairs(corpus(), source="chatterbot").status == "promoted"
    champion = lc.registry.get("champion")
    # as if it had been scored on other, easier references at its own run
    lc.registry.set_tag(champion.version, "weighted_score", "0.99")
    land_and_curate(db_url, [p.pair for p in chatterbot_pairs()[40:80]])
    result = lc.trainer.maybe_train("admin", requested="incremental")
    [score] = [v for v in result.candidates[0]["verdicts"] if v["gate"] == "weighted_score"]
    details = score["details"]
    # the best version (the champion, by its tag) is judged by its score on today's references, not its tag
    assert details["best_in_history"] == pytest.approx(details["champion_score"])
    assert details["best_in_history"] < 0.99
    assert score["passed"] == (details["score"] >= details["champion_score"] + details["min_improvement"])


def test_a_served_answer_rated_good_trains_but_is_never_a_reference(lc: Lifecycle, db_url: str) -> None:
    """A good rating makes the served answer a training target; only a person's correction is a held-out
    reference (the serving version reproduces its own answer word for word, so it would win on it)."""
    assert lc.trainer.bootstrap_pairs(corpus(), source="chatterbot").status == "promoted"
    land_and_curate(db_url, [p.pair for p in chatterbot_pairs()[40:140]], rating=5, corrected=False)
    land_and_curate(db_url, [p.pair for p in chatterbot_pairs()[140:240]], rating=1)
    with psycopg.connect(db_url) as conn:
        store = PairStore(conn, 20, model="npc")
        references = store.holdout(1000)
        trained = [p.response for _, p in store.training(after=0, upto=2**62)]
        served = conn.execute("SELECT count(*) FROM samples WHERE model = 'npc' AND status = 'accepted' AND "
                              "target = 'Hm.'").fetchone()
    corrections = {p.pair.response for p in chatterbot_pairs()[140:240]}
    assert served is not None and served[0] > 50  # good-rated served answers are targets (duplicates rejected)
    assert 0 < trained.count("Hm.") < served[0]  # ... trained on, except the reserved ~20%
    assert "Hm." not in {p.response for p in references}
    assert len([p for p in references if p.response in corrections]) > 5  # the reserved corrections are
