"""Poisoned feedback on real data: 30% of the labels of a real labelled stream are flipped, and the
curation stage must flag (quarantine) at least 80% of them.

The served model is a ``tfidf-logreg`` trained on one part of vader_movies; its probabilities for the
rest are out of sample, as a served prediction's are. The rest is landed as joined feedback with 30%
of the labels flipped (negative <-> positive, neutral -> either), then curated in batches of 200 through
Postgres exactly as the service does.

- ``attack``: the flipped labels come from 6 accounts that flip what they label (30% of the stream);
  14 honest accounts label the rest. Trust falls for the attackers and quarantines them (recall >= 0.8).
- ``uniform``: every one of 20 accounts flips 30% of its labels at random. Trust cannot tell users
  apart, and recall is what confident learning alone reaches with this model (reported; a regression
  floor is asserted, not the 0.8 target).
"""

from __future__ import annotations

import json
import random
import uuid

import numpy as np
import pytest

from curation import CurationConfig, CurationService
from curation.config import ServiceConfig
from flywheel import db
from tests.trainer.lifecycle_helpers import rows
from trainer.tfidf import TfidfLogReg

from .helpers import LABELS, RecordingPublisher

FLIP = {"negative": "positive", "positive": "negative"}


def _flip(label: str, rng: random.Random) -> str:
    return FLIP.get(label) or rng.choice(["negative", "positive"])


def _land(db_url: str, texts: list[str], labels: list[str], users: list[str], proba: np.ndarray,
          classes: tuple[str, ...]) -> list[int]:
    with db.connect(db_url) as conn, conn.cursor() as cur:
        pids = [uuid.uuid4().hex for _ in texts]
        with cur.copy("COPY predictions (prediction_id, model, model_version, variant, text, label, probabilities, "
                      "latency_ms, domain, ts) FROM STDIN") as copy:
            for pid, text, p in zip(pids, texts, proba, strict=True):
                copy.write_row((pid, "sentiment", "1", "champion", text, classes[int(p.argmax())],
                                json.dumps(dict(zip(classes, map(float, p), strict=True))), 3.0, "movies",
                                "2026-11-22T00:00:00Z"))
        with cur.copy("COPY feedback (feedback_id, content_key, prediction_id, label, user_id, source, ts, status, "
                      "model, model_version, variant, predicted_label, probabilities, resolved_at) FROM STDIN") as copy:
            for pid, label, user, p in zip(pids, labels, users, proba, strict=True):
                copy.write_row((uuid.uuid4().hex, uuid.uuid4(), pid, label, user, "test", "2026-11-22T00:00:01Z",
                                "joined", "sentiment", "1", "champion", classes[int(p.argmax())],
                                json.dumps(dict(zip(classes, map(float, p), strict=True))), "2026-11-22T00:00:02Z"))
        ids = [int(r[0]) for r in cur.execute(
            "SELECT f.id FROM feedback f JOIN unnest(%s::text[]) WITH ORDINALITY AS u(pid, n) "
            "ON u.pid = f.prediction_id ORDER BY u.n", (pids,)).fetchall()]
        conn.commit()
    return ids


@pytest.mark.parametrize("scenario", ["attack", "uniform"])
def test_curation_flags_flipped_labels(db_url: str, scenario: str) -> None:
    data = rows("vader_movies")
    train, stream = data[:3000], data[3000:6000]
    model = TfidfLogReg().fit([r.text for r in train], [r.label for r in train])
    proba = model.predict_proba([r.text for r in stream])
    rng = random.Random(3)
    labels, users, flipped = [], [], []
    for r in stream:
        if scenario == "attack":
            bad = rng.random() < 0.3
            users.append(f"attacker{rng.randrange(6)}" if bad else f"user{rng.randrange(14)}")
        else:
            bad = rng.random() < 0.3
            users.append(f"user{rng.randrange(20)}")
        labels.append(_flip(r.label, rng) if bad else r.label)
        flipped.append(bad)
    ids = _land(db_url, [r.text for r in stream], labels, users, proba, model.labels)

    config = CurationConfig(service=ServiceConfig(batch_size=200))
    service = CurationService(db_url=db_url, config=config, labels=LABELS, bootstrap="unused", group="g",
                              landed_topic="l", curated_topic="c", producer=RecordingPublisher())
    assert service.curate_pass().outcome == "curated"
    with db.connect(db_url) as conn:
        found = dict(conn.execute("SELECT id, status FROM samples").fetchall())
    flag = np.array([found[i] == "quarantined" for i in ids])
    bad = np.array(flipped)
    recall = float((flag & bad).sum() / bad.sum())
    precision = float((flag & bad).sum() / max(1, flag.sum()))
    clean_flagged = float((flag & ~bad).sum() / (~bad).sum())
    print(f"\n{scenario}: {bad.sum()} flipped of {len(bad)}; flagged {flag.sum()}: recall {recall:.3f}, "
          f"precision {precision:.3f}, clean samples quarantined {clean_flagged:.3f}; model accuracy "
          f"{np.mean([model.labels[int(p.argmax())] == r.label for p, r in zip(proba, stream, strict=True)]):.3f}")
    if scenario == "attack":
        assert recall >= 0.8
        assert precision >= 0.55
    else:
        assert recall >= 0.65  # confident learning alone with a ~0.73-accuracy model (measured 0.74)
