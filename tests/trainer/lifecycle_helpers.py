"""Shared pieces of the lifecycle integration tests: real data, and feedback landed in Postgres the
way the ingest processor lands it (a prediction, then its joined feedback), then curated as the curation
service would on the Landed signal."""

from __future__ import annotations

import contextlib
import csv
import functools
import json
import random
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Literal

from core import db
from core.settings import FlywheelSettings
from curation import CurationConfig, Curator, PostgresCurationStore
from flywheel.lifecycle import Lifecycle, lifecycle
from registry import Lineage, ModelVersionInfo
from trainer.config import PolicyConfig, PromotionConfig, TrainerConfig
from trainer.data import CorpusRow
from trainer.gates import GatesConfig

# the demo's policy and gates (flywheel/demo/platform.py), in canary mode so that the champion stays put
# between the two runs of one snapshot; on a 2,500-row corpus (the demo's has 8,500) the movie slice of a
# candidate that learnt tweets moves by chance of the reserved split, hence its wider tolerance
DEMO_CANARY_CONFIG = TrainerConfig(
    policy=PolicyConfig(incremental_threshold=300, full_threshold=300, corpus_weight_choices=(0.05,),
                        holdout_percent=10, recent_min=20),
    gates=GatesConfig(evaluation={"metric_weights": {"accuracy": 1.0}, "slice_tolerance": 0.05}),
    promotion=PromotionConfig(mode="canary", canary_traffic=0.5))

DATA = Path(__file__).resolve().parents[2] / "data"
LABELS = ("negative", "neutral", "positive")
FLIP = {"negative": "positive", "positive": "negative", "neutral": "neutral"}


@contextlib.contextmanager
def bootstrapped(settings: FlywheelSettings, db_url: str, mode: Literal["canary", "direct"], movies: int = 300
                 ) -> Iterator[Lifecycle]:
    """A lifecycle promoting in ``mode`` whose champion (version 1) is tfidf-logreg bootstrapped on ``movies``
    movie reviews."""
    config = TrainerConfig(promotion=PromotionConfig(mode=mode))
    with lifecycle(settings, settings.kafka_connection(), db_url, config) as found:
        result = found.trainer.bootstrap(rows("vader_movies")[:movies], source="movies.csv", kind="tfidf-logreg")
        assert result.status == "promoted", result.reason
        yield found


def register_copy(lc: Lifecycle, tmp_path: Path, holdout_accuracy: float = 0.8) -> ModelVersionInfo:
    """Another version holding the champion's bytes again (for tests that judge feedback or aliases, not the
    model)."""
    directory = tmp_path / uuid.uuid4().hex
    lc.registry.load("champion").save(directory)
    return lc.registry.register(directory, mode="full", metrics={"holdout_accuracy": holdout_accuracy},
                                lineage=Lineage(data_hash="x", watermark=0, sample_count=0))


@functools.cache
def rows(name: str) -> tuple[CorpusRow, ...]:
    with (DATA / f"{name}.csv").open(newline="") as fh:
        found = [CorpusRow(r["text"], r["label3"], r["domain"]) for r in csv.DictReader(fh)]
    random.Random(7).shuffle(found)  # the files are ordered by sentiment
    return tuple(found)


def land_feedback(db_url: str, samples: Sequence[CorpusRow], *, flip: bool = False, served: str = "1",
                  seed: int | None = None) -> None:
    """Predictions + joined label feedback, committed like ingest does (one transaction). With ``seed`` the
    ids are fixed (so is the reserved holdout, which hashes the feedback id): the same data on every run."""
    draw = random.Random(seed)

    def new_id() -> uuid.UUID:
        return uuid.uuid4() if seed is None else uuid.UUID(int=draw.getrandbits(128), version=4)

    with db.connect(db_url) as conn, conn.cursor() as cur:
        with cur.copy("COPY predictions (prediction_id, model, model_version, variant, text, label, probabilities, "
                      "latency_ms, domain, ts) FROM STDIN") as copy:
            ids = []
            for row in samples:
                pid = new_id().hex
                ids.append(pid)
                copy.write_row((pid, "sentiment", served, "champion", row.text, "neutral",
                                json.dumps({"negative": 0.2, "neutral": 0.6, "positive": 0.2}), 3.0, row.domain,
                                "2026-11-22T00:00:00Z"))
        with cur.copy("COPY feedback (feedback_id, content_key, prediction_id, label, source, ts, status, model, "
                      "model_version, variant, predicted_label, resolved_at) FROM STDIN") as copy:
            for pid, row in zip(ids, samples, strict=True):
                label = FLIP[row.label] if flip else row.label
                copy.write_row((new_id().hex, new_id(), pid, label, "test", "2026-11-22T00:00:01Z",
                                "joined", "sentiment", served, "champion", "neutral", "2026-11-22T00:00:02Z"))
        conn.commit()
    curate(db_url)


def curate(db_url: str, config: CurationConfig | None = None) -> int:
    """Curate every joined feedback row without a sample (what the curation service's pass does on a
    Landed signal); the number of rows curated."""
    cfg = config or CurationConfig()
    curator, total = Curator(cfg, LABELS), 0
    with db.connect(db_url, autocommit=True) as conn:
        store = PostgresCurationStore(conn, cfg.annotators, model="sentiment")
        while (batch := curator.curate_batch(store, sweep=True)) is not None:
            total += sum(batch.new.values())
    return total


def count_runs(db_url: str, status: str | None = None) -> int:
    with db.connect(db_url) as conn:
        if status is None:
            row = conn.execute("SELECT count(*) FROM training_runs WHERE mode <> 'bootstrap'").fetchone()
        else:
            row = conn.execute("SELECT count(*) FROM training_runs WHERE mode <> 'bootstrap' AND status = %s",
                               (status,)).fetchone()
    assert row is not None
    return int(row[0])
