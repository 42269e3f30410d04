"""Curation of a generator's feedback: which response becomes the target (a correction, a well-rated
served response), which are refused (low-rated, neutral, empty, too long, toxic, a low-trust user), exact
and near-duplicate prompts; pure rules first, then a generator and a classifier curated side by side in
real Postgres by the service."""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

import psycopg
import pytest

from core import db
from core.db import session_connector
from core.kafka import KafkaConnection
from curation import CurationConfig, CurationService
from curation.config import AnnotatorsConfig, PairsConfig, ServiceConfig
from curation.pairs import PairMember, decide_pairs, judge
from curation.toxicity import ToxicityCheck
from tasks import ModelStore, parse_spec
from tests.curation.helpers import LABELS, T0, Feedback, RecordingPublisher, land

CFG = CurationConfig(pairs=PairsConfig(max_response_chars=60))


@pytest.mark.parametrize(("judgement", "generated", "expected"), [
    ({"rating": 5}, "By the gate.", ("good", "By the gate.", ())),
    ({"rating": 4, "signal": "abandoned"}, "By the gate.", ("good", "By the gate.", ())),  # the rating decides
    ({"thumbs": "up"}, "By the gate.", ("good", "By the gate.", ())),
    ({"signal": "continued"}, "By the gate.", ("good", "By the gate.", ())),
    ({"rating": 1, "correction": "Past the well."}, "By the gate.", ("bad", "Past the well.", ())),
    ({"correction": "Past the well."}, "By the gate.", ("bad", "Past the well.", ())),
    ({"rating": 2}, "By the gate.", ("bad", None, ("low_rating",))),
    ({"thumbs": "down"}, "By the gate.", ("bad", None, ("low_rating",))),
    ({"signal": "abandoned"}, "By the gate.", ("bad", None, ("low_rating",))),
    ({"rating": 3}, "By the gate.", (None, None, ("no_target",))),
    ({"rating": 5}, "   ", ("good", "   ", ("empty_response",))),
    ({"correction": "x" * 61}, "By the gate.", ("bad", "x" * 61, ("too_long",))),
])
def test_the_target_is_the_correction_else_a_well_judged_response(
        judgement: dict[str, object], generated: str, expected: tuple[object, ...]) -> None:
    fields = {"rating": None, "thumbs": None, "correction": None, "signal": None, **judgement}
    j = judge(fields["rating"], fields["thumbs"], fields["correction"], fields["signal"],  # type: ignore[arg-type]
              generated, CFG)
    assert (j.vote, j.target, j.reasons) == expected


def test_a_cluster_keeps_one_representative_rejects_exact_duplicates_and_down_weights_other_references() -> None:
    same, other = b"prompt+target", b"prompt+another"
    verdicts = decide_pairs([
        PairMember(5, "u1", same, ()), PairMember(6, "u2", same, ()), PairMember(7, "u3", other, ()),
        PairMember(8, "u4", other, ("toxic",)), PairMember(9, "u5", same, (), low_trust=True),
        PairMember(4, "u6", same, ("low_rating",)),
    ], CFG)
    assert {i: (v.status, v.weight, v.reasons) for i, v in verdicts.items()} == {
        4: ("rejected", 1.0, ("low_rating",)),
        5: ("accepted", 1.0, ()),
        6: ("rejected", 1.0, ("duplicate",)),
        7: ("accepted", 0.5, ("near_duplicate",)),
        8: ("quarantined", 1.0, ("toxic",)),
        9: ("quarantined", 1.0, ("low_trust",)),
    }


@dataclass(frozen=True)
class Turn:
    prompt: str
    generated: str
    user: str | None = "p1"
    rating: int | None = None
    thumbs: str | None = None
    correction: str | None = None
    signal: str | None = None
    persona: str = "Old guard"


def land_turns(db_url: str, turns: Sequence[Turn], model: str = "npc") -> list[int]:
    """A generator's predictions and their joined feedback, as ingest lands them; feedback ids back."""
    ids = []
    with db.connect(db_url) as conn, conn.cursor() as cur:
        for t in turns:
            pid = uuid.uuid4().hex
            output = {"text": t.generated, "prompt_tokens": 9, "completion_tokens": 4, "finish_reason": "stop"}
            cur.execute("INSERT INTO predictions (prediction_id, model, model_version, variant, input, output, "
                        "latency_ms, user_id, ts) VALUES (%s, %s, '1', 'champion', %s, %s, 40.0, %s, %s)",
                        (pid, model, json.dumps({"prompt": t.prompt, "persona": t.persona}), json.dumps(output),
                         t.user, T0))
            row = cur.execute(
                "INSERT INTO feedback (feedback_id, content_key, prediction_id, thumbs, rating, correction, signal, "
                "user_id, source, ts, status, model, model_version, variant, resolved_at) VALUES (%s, %s, %s, %s, %s, "
                "%s, %s, %s, 'game', %s, 'joined', %s, '1', 'champion', now()) RETURNING id",
                (uuid.uuid4().hex, uuid.uuid4(), pid, t.thumbs, t.rating, t.correction, t.signal, t.user, T0,
                 model)).fetchone()
            assert row is not None
            ids.append(int(row[0]))
        conn.commit()
    return ids


class RecordingToxicity(ToxicityCheck):
    """The platform's toxicity check, recording the texts it was asked about."""

    def __init__(self) -> None:
        super().__init__()
        self.asked: list[str] = []

    def scores(self, texts: Sequence[str], prompts: Sequence[str | None] | None = None) -> list[float]:
        self.asked.extend(texts)
        return super().scores(texts, prompts)


def service(db_url: str, toxicity: ToxicityCheck, config: CurationConfig = CFG) -> CurationService:
    return CurationService(connector=session_connector(db_url), config=config, labels=LABELS,
                           kafka=KafkaConnection(bootstrap_servers="unused:9092"), group="g", landed_topic="l",
                           curated_topic="c", default_model="sentiment", producer=RecordingPublisher(),
                           toxicity=lambda: toxicity)


def samples(db_url: str, model: str) -> dict[int, tuple[object, ...]]:
    with psycopg.connect(db_url) as conn:
        rows = conn.execute("SELECT id, status, target, reasons, weight, label, rating, signal FROM samples "
                            "WHERE model = %s ORDER BY id", (model,)).fetchall()
    return {int(r[0]): tuple(r[1:]) for r in rows}


def test_a_generator_and_a_classifier_are_curated_side_by_side_in_postgres(db_url: str) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        ModelStore(conn).put(parse_spec({"name": "npc", "task": "text-generation"}), source="test")
    text_ids = land(db_url, [Feedback("a fine film", "positive"), Feedback("dull", thumbs="down")])
    ids = land_turns(db_url, [
        Turn("Where is the smith?", "By the gate.", rating=5),                        # 0 target: the response
        Turn("Where is the smith?", "By the gate.", user="p2", thumbs="up"),          # 1 same pair: duplicate
        Turn("Where is the smith?", "By the gate.", user="p3", rating=1,
             correction="Past the well, by the west gate."),                          # 2 another reference
        Turn("Where's the smith??", "Dunno.", user="p4", signal="abandoned"),         # 3 low rating
        Turn("Any news today?", "None at all.", user="p5", rating=3),                 # 4 neutral: no target
        Turn("Any news today?", "None.", user="p6", correction=" "),                  # 5 empty correction
        Turn("Tell me a story.", "Once upon a time " * 5, user="p7", rating=5),       # 6 too long
        Turn("What do you think of me?", "You are an idiot.", user="p8", rating=5),   # 7 toxic
        Turn("What do you think of me?", "A fine traveller.", user=None, signal="continued"),  # 8 anonymous
    ])
    toxicity = RecordingToxicity()
    svc = service(db_url, toxicity)
    result = svc.curate_pass(sweep=True)
    assert result.outcome == "curated"
    got = samples(db_url, "npc")
    assert got[ids[0]] == ("accepted", "By the gate.", [], 1.0, None, 5, None)
    assert got[ids[1]] == ("rejected", "By the gate.", ["duplicate"], 1.0, None, None, None)
    # another reference for the same prompt, at the near-duplicate factor, and by a player who contradicted the
    # two before (trust 4/6: weight 0.667 / 0.8 of the prior)
    assert got[ids[2]] == ("accepted", "Past the well, by the west gate.", ["near_duplicate"],
                           pytest.approx(0.5 * (4 / 6) / 0.8), None, 1, None)
    assert got[ids[3]] == ("rejected", None, ["low_rating"], 1.0, None, None, "abandoned")
    assert got[ids[4]] == ("rejected", None, ["no_target"], 1.0, None, 3, None)
    assert got[ids[5]] == ("rejected", " ", ["empty_response"], 1.0, None, None, None)
    assert got[ids[6]] == ("quarantined", "Once upon a time " * 5, ["too_long"], 1.0, None, 5, None)
    assert got[ids[7]] == ("quarantined", "You are an idiot.", ["toxic"], 1.0, None, 5, None)
    assert got[ids[8]] == ("accepted", "A fine traveller.", [], 1.0, None, None, "continued")  # the toxic one is out
    # only targets without another fault were scored; the classifier's feedback was curated by its own rules
    assert sorted(toxicity.asked) == sorted(["By the gate.", "By the gate.", "Past the well, by the west gate.",
                                             "You are an idiot.", "A fine traveller."])
    assert [s[0] for s in samples(db_url, "sentiment").values()] == ["accepted", "rejected"]
    assert sorted(samples(db_url, "sentiment")) == sorted(text_ids)
    assert svc.curate_pass().outcome == "idle"  # every joined row is one sample: nothing left


def test_a_player_who_keeps_contradicting_the_others_loses_trust_and_their_targets_are_quarantined(
        db_url: str) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        ModelStore(conn).put(parse_spec({"name": "npc", "task": "text-generation"}), source="test")
    config = CurationConfig(pairs=PairsConfig(), annotators=AnnotatorsConfig(rule="floor", min_evidence=4),
                            service=ServiceConfig(batch_size=6))  # two prompts a batch
    turns = []
    for i in range(8):  # eight prompts; two honest players rate the poor answer low, the troll rates it 5
        prompt, answer = f"Question number {i} about the {['mill', 'inn', 'keep', 'farm'][i % 4]}?", f"Blah {i}."
        turns += [Turn(prompt, answer, user="honest1", rating=1), Turn(prompt, answer, user="honest2", rating=2),
                  Turn(prompt, answer, user="troll", rating=5)]
    ids = land_turns(db_url, turns)
    svc = service(db_url, ToxicityCheck(), config)
    passes = [svc.curate_pass(sweep=True)]
    while passes[-1].outcome == "curated":
        passes.append(svc.curate_pass(sweep=True))
    assert sum(b.changed["quarantined"] for r in passes for b in r.batches) == 2  # batch 1's, decided again
    got = samples(db_url, "npc")
    troll = [got[i] for i, t in zip(ids, turns, strict=True) if t.user == "troll"]
    # the troll's first targets were accepted before the evidence was in (batch 1); once below the floor
    # (batch 2), every target of theirs is quarantined, the earlier ones too: their clusters are decided again
    assert all(s[0] == "quarantined" and "low_trust" in s[2] for s in troll)  # type: ignore[operator]
    with psycopg.connect(db_url) as conn:
        low = dict(conn.execute("SELECT user_id, low_trust FROM annotators WHERE model = 'npc'").fetchall())
    assert low == {"honest1": False, "honest2": False, "troll": True}
