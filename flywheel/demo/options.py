"""What one demo replay does (its options), and the scenarios it can replay."""

from __future__ import annotations

import logging
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

log = logging.getLogger(__name__)


SCENARIOS: dict[str, tuple[str, str]] = {
    "movies->tweets": ("vader_movies", "vader_tweets"),
    "movies->products": ("vader_movies", "vader_products"),
}




class DemoOptions(BaseModel):
    """What one replay does; the defaults finish in a few minutes on a 2-core machine."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    scenario: str = "movies->tweets"
    stream: int = Field(default=1500, ge=10, description="Target-domain texts replayed through /predict.")
    feedback_rate: float = Field(default=0.6, ge=0.0, le=1.0, description="Share of predictions judged.")
    noise: float = Field(default=0.05, ge=0.0, le=1.0, description="An honest user's chance of a random label.")
    poison: float = Field(default=0.0, ge=0.0, lt=1.0, description="Share of users who flip every label.")
    users: int = Field(default=60, ge=1)
    rate: float = Field(default=40.0, gt=0.0, description="Requests per second, at most.")
    kind: str = "tfidf-logreg"
    promotion: Literal["direct", "canary"] = "direct"
    incremental_threshold: int = Field(default=100, ge=1)
    eval_fraction: float = Field(default=0.3, gt=0.0, lt=1.0, description="Target rows held out, never streamed.")
    window: int = Field(default=150, ge=10, description="Rolling-accuracy window (steps).")
    seed: int = 0


# -- data -------------------------------------------------------------------------------------------------
