"""The retrain decision, a pure function of counts: easy to test, the same in every trainer instance.

``new`` counts accepted samples that arrived since the last training attempt (whatever its outcome, so
a refused candidate does not trigger a retrain on every following sample). Counting by rows rather
than by id range keeps late joins and out-of-order commits counted.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from trainer.config import PolicyConfig

Mode = Literal["bootstrap", "incremental", "full"]
Trigger = Literal["signal", "reconcile", "quiet", "schedule", "drift", "admin", "bootstrap"]


@dataclass(frozen=True)
class Decision:
    mode: Mode | None
    reason: str

    @property
    def train(self) -> bool:
        return self.mode is not None


def decide(policy: PolicyConfig, *, trigger: Trigger, new_since_attempt: int, new_since_champion: int,
           has_champion: bool, new_since_full: int | None = None, requested: Mode | None = None) -> Decision:
    """What to train now. ``new_since_full`` counts since the last full (or bootstrap) attempt, so that
    incremental runs every ``incremental_threshold`` samples do not keep the full threshold out of
    reach. ``requested`` comes with admin, drift and schedule triggers. A drift alert with fewer than
    ``drift_min_new`` samples since the last run of its mode is skipped (that run saw the same data); a
    ``quiet`` trigger (no signal for ``quiet_after_s``) trains ``quiet_min_samples`` or more below the
    threshold."""
    if not has_champion:
        return Decision(None, "no champion yet: run `flywheel bootstrap --data CSV` first")
    if trigger in ("admin", "schedule", "drift"):
        if trigger == "drift" and policy.drift_action == "ignore":
            return Decision(None, "drift alert ignored by policy (drift_action=ignore)")
        mode: Mode = requested or ("incremental" if trigger == "drift" and policy.drift_action == "incremental"
                                   else "full")
        if mode == "incremental" and new_since_champion == 0:
            return Decision(None, f"{trigger}: no new samples since the champion for an incremental run")
        since_full = new_since_attempt if new_since_full is None else new_since_full
        fresh = since_full if mode == "full" else new_since_attempt
        if trigger == "drift" and fresh < policy.drift_min_new:
            return Decision(None, f"drift: {fresh} samples since the last {mode} run < drift_min_new "
                                  f"{policy.drift_min_new}: that run trained on this data already")
        return Decision(mode, f"{trigger} requested a {mode} retrain")
    since_full = new_since_attempt if new_since_full is None else new_since_full
    if since_full >= policy.full_threshold:
        return Decision("full", f"{since_full} samples since the last full run >= full threshold "
                                f"{policy.full_threshold}")
    if new_since_attempt >= policy.incremental_threshold:
        return Decision("incremental",
                        f"{new_since_attempt} new samples >= incremental threshold {policy.incremental_threshold}")
    if trigger == "quiet" and new_since_attempt >= policy.quiet_min_samples:
        # what a threshold crossing would train: a full run where every retrain is one
        quiet: Mode = "full" if policy.full_threshold <= policy.incremental_threshold else "incremental"
        return Decision(quiet, f"the stream went quiet ({policy.quiet_after_s:g} s without new data) with "
                               f"{new_since_attempt} new samples >= quiet_min_samples {policy.quiet_min_samples}")
    return Decision(None, f"{new_since_attempt} new samples < incremental threshold {policy.incremental_threshold}")
