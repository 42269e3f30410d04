"""Traffic routing: champion, or the canary for a stable share of users. A user's bucket is the
sha256 of ``<canary version>:<user id>`` (the prediction id when there is no user) mapped to [0, 1):
sticky for one user while a canary runs, and a fresh sample of users for each new canary."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Literal

from serving.exceptions import NotReady
from serving.runtime import Deployment, LoadedModel

Served = Literal["champion", "canary"]


def bucket(key: str, salt: str = "") -> float:
    """A stable number in [0, 1) for ``key``."""
    digest = hashlib.sha256(f"{salt}:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


@dataclass(frozen=True)
class Route:
    model: LoadedModel
    variant: Served


def route(deployment: Deployment, user_id: str | None, prediction_id: str) -> Route:
    champion = deployment.champion
    if champion is None:
        raise NotReady("no champion model is loaded yet")
    canary = deployment.canary
    if canary is not None and bucket(user_id or prediction_id, canary.version) < deployment.canary_traffic:
        return Route(canary, "canary")
    return Route(champion, "champion")
