"""What one demo replay does (its options), and the scenarios it can replay."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Scenario:
    """A stream the demo can replay: the model it feeds (``model`` None: the platform's default text
    model), its task, what the first champion is trained on (``source``) and what the stream replays."""

    name: str
    task: Literal["text-classification", "tabular-classification", "text-generation"]
    source: str
    target: str
    model: str | None = None
    defaults: tuple[tuple[str, Any], ...] = ()  # the scenario's own option defaults


TEXT_PACE = (("rate", 12.0), ("stream", 2000), ("feedback_rate", 1.0), ("incremental_threshold", 200))
"""At 40 texts/s the stream ended before the first full run on a few hundred labels finished (44 s on a
quiet machine, 2-4 min under load): the promotion came after the stream, and the live curve never moved.
At 12/s, 1,500 rows and 60% judged, the first significant candidate needed ~500 labels (242 were not
enough: +0.021, p 0.17) and came at step 1,480 (demo, 2026-12-05, load 15-20). Every prediction judged (and
tfidf-logreg at one corpus weight, word n-grams; the demo now also tries char n-grams and a target-only
recipe: :data:`~flywheel.demo.platform.KIND_PARAMS`): with 2,400 rows the
first promotion came at step 521 (218 labels, +0.083, p 0.001) and the last 150 served 0.707 vs the static
0.567 (load 12-30). 2,000 rows keep that story in less time. A first run at 100 labels was refused every
time (improvement -0.0006..-0.017) and held the single flight for a whole run (67 s at load 40) before the
run that could pass began: the text scenarios retrain every 200 labels (218 passed: +0.083, p 0.001)."""
QUIET_AFTER_S = 5.0
"""The demo models' ``quiet_after_s``: after 5 s without a Landed or Curated signal their trainer trains the
samples that came since its last threshold. A demo stream pauses only when it ends or a benchmark's checkpoint
holds it (between, its labels come 2-30 a second), and at the trainer's default of 30 s a checkpoint's
settle scored the model before that run: up to a threshold's worth of labels (50 in bench/efficacy.py) untrained
(``Replay.settle`` now waits past it)."""
SCENARIOS: dict[str, Scenario] = {
    "movies->tweets": Scenario("movies->tweets", "text-classification", "vader_movies", "vader_tweets",
                               defaults=TEXT_PACE),
    "movies->products": Scenario("movies->products", "text-classification", "vader_movies", "vader_products",
                                 defaults=TEXT_PACE),
    # daily weather, chronological, with a drift the package authors injected from row 12,000: the champion
    # learns the days before the stream; each day's outcome (rain or not) is observed and sent later
    "rainfall": Scenario("rainfall", "tabular-classification", "rainfall days 0..start", "rainfall days from start",
                         model="rainfall",
                         # one source of outcomes (users=1): curation's annotator trust is for people, and 60
                         # simulated "users" of one weather record looked untrustworthy after the drift (190 of
                         # 1,000 outcomes quarantined as low_trust in a first run)
                         defaults=(("stream", 1500), ("start", 11_800), ("feedback_rate", 1.0), ("noise", 0.0),
                                   ("users", 1), ("rate", 15.0), ("kind", "lightgbm"), ("feedback_delay", 25),
                                   ("incremental_threshold", 200), ("window", 200))),
    # an NPC bootstrapped on small talk about itself, asked about the world by its players (flywheel/demo/
    # dialogue.py); sized for the real SmolLM2-135M on a 2-core CPU: a 32-token answer costs ~2 s of one core
    # and a LoRA step of 8 pairs ~6 s, so 120 players' questions, an incremental run every 24 accepted pairs
    # (8 steps) and the gates on ~30 references keep a run in minutes. A candidate that passes the gates is
    # promoted at once: at the task's 5% a canary would see ~1 question in 20 and could not be decided in 120
    # (the sequential test on ratings needs tens of answers per arm). --promotion canary runs the task's
    # rollout (5%, or --canary-traffic; rollback on > 1% errors or ratings significantly below the champion's)
    "dialogue": Scenario("dialogue", "text-generation", "chatterbot-corpus small talk (60 pairs)",
                         "chatterbot-corpus knowledge topics",
                         model="npc",
                         defaults=(("stream", 120), ("feedback_rate", 1.0), ("noise", 0.1), ("users", 20),
                                   ("rate", 2.0), ("kind", "smollm2-lora"), ("incremental_threshold", 24),
                                   ("window", 30))),
}
DEFAULT_SCENARIOS = ("movies->tweets", "rainfall")
"""What ``flywheel demo`` replays without ``--scenario``: a text and a tabular model side by side."""


class DemoOptions(BaseModel):
    """What one replay does; the defaults finish in a few minutes on a 2-core machine."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    scenario: str = "movies->tweets"
    stream: int = Field(default=1500, ge=10, description="Rows replayed through the model's predict route.")
    start: int = Field(default=0, ge=0, description="A chronological stream's first row (tabular scenarios).")
    history: int | None = Field(default=None, ge=10, description="Rows before the stream (up to a known drift) "
                                "the first champion learns (tabular scenarios; default all), or the small-talk pairs "
                                "the first adapter learns (dialogue; default 60).")
    feedback_rate: float = Field(default=0.6, ge=0.0, le=1.0, description="Share of predictions judged.")
    feedback_delay: int = Field(default=0, ge=0, description="Predictions served before an answer is sent.")
    noise: float = Field(default=0.05, ge=0.0, le=1.0, description="An honest user's chance of a random label.")
    poison: float = Field(default=0.0, ge=0.0, lt=1.0, description="Share of users who flip every label.")
    users: int = Field(default=60, ge=1)
    rate: float = Field(default=40.0, gt=0.0, description="Requests per second, at most.")
    kind: str = "tfidf-logreg"
    kind_params: dict[str, Any] = Field(default_factory=dict, description="The kind's parameters over the demo's "
                                        "(KIND_PARAMS), e.g. {\"precision\": \"fp32\"} for minilm-head.")
    promotion: Literal["direct", "canary"] = "direct"
    canary_traffic: float | None = Field(default=None, gt=0.0, le=1.0, description="dialogue: the canary's share "
                                         "of requests (unset: the task's default, 5% for text-generation).")
    incremental_threshold: int = Field(default=100, ge=1)
    eval_fraction: float = Field(default=0.3, gt=0.0, lt=1.0, description="Target rows held out, never streamed.")
    window: int = Field(default=150, ge=10, description="Rolling-accuracy window (steps).")
    seed: int = 0
    order: int = Field(default=0, ge=0, description="A text scenario's stream in another order: its rows shuffled "
                       "with this seed after the held-out rows are split off (0: as split). The held-out rows, and "
                       "so the oracle, stay those of ``seed`` (bench/efficacy.py --orders).")
    # text-generation scenarios
    base: str = Field(default="smollm2-135m-instruct", description="The generator's base model (tiny-random: "
                      "a random 2-layer Llama for tests).")
    max_tokens: int = Field(default=32, ge=1, le=256, description="New tokens per answer (and per gate answer).")
    lora_steps: int = Field(default=0, ge=0, description="LoRA steps of a run (batch 8); 0: one epoch over the "
                            "run's pairs (the new ones and the replayed).")
    holdout_pairs: int = Field(default=24, ge=5, description="Target pairs held out from the stream to score on.")
    correction_rate: float = Field(default=0.7, ge=0.0, le=1.0,
                                   description="A player's chance of correcting an answer rated 3 or lower.")
    replay_pairs: int = Field(default=1000, ge=0, description="dialogue: earlier training pairs an incremental run "
                              "trains on beside the new ones (policy replay_size; the default: every one, up to "
                              "1,000). With one epoch a run, the champion's adapter goes over all its pairs again "
                              "at each run: 0.0947 held-out at 400 pairs (1.13 of the oracle mean) in one bench run, "
                              "where 16 replayed pairs and 8 steps reached 0.069-0.071 in three (docs/benchmarks.md).")
    gate_references: int = Field(default=64, ge=0, description="dialogue: the most recent reserved feedback pairs "
                                 "(players' corrections) the gates score candidates on, beside the bootstrap's "
                                 "held-out pairs (policy holdout_recent; 16 until 2026-12-06: a real gain of 0.02 is "
                                 "ranked right ~0.76 of the time on 28 references, ~0.88 on 76).")

    @classmethod
    def for_scenario(cls, scenario: str, **overrides: Any) -> DemoOptions:
        """The options of ``scenario``: its own defaults, then ``overrides`` (None values are ignored)."""
        found = SCENARIOS.get(scenario)
        defaults = dict(found.defaults) if found is not None else {}
        return cls.model_validate({**defaults, **{k: v for k, v in overrides.items() if v is not None},
                                   "scenario": scenario})

    @property
    def task(self) -> str:
        return SCENARIOS[self.scenario].task
