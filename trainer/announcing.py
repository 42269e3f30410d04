"""A registered version's last steps: move the aliases, publish the event, finish the run row; and
re-announcing what the registry says but the models topic does not."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from core.exceptions import FlywheelError
from registry import CHALLENGER, CHAMPION, ChampionChanged, ModelRegistry, ModelVersionInfo, deploys
from registry.announce import ModelAnnouncer, ModelState, model_event
from schemas import ModelEvent
from trainer.config import PromotionConfig
from trainer.policy import Mode
from trainer.runs import RunLog, RunResult
from trainer.selection import Candidate

__all__ = ["Announcing", "Registered"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Registered:
    """A run's registered version and what its run row records."""

    run_id: uuid.UUID
    mode: Mode
    info: ModelVersionInfo
    best: Candidate
    summaries: list[dict[str, Any]]
    data_hash: str
    trained: int
    mlflow_run_id: str
    why: str  # the run's decision
    parent: str | None  # the champion the candidates were evaluated against


class Announcing:
    """Alias moves and their events for one model name; ``clock`` stamps the events."""

    def __init__(self, model_name: str, registry: ModelRegistry, announcer: ModelAnnouncer,
                 promotion: PromotionConfig, clock: Callable[[], datetime]) -> None:
        self.model_name = model_name
        self.registry = registry
        self.announcer = announcer
        self.promotion = promotion
        self.clock = clock

    def announce(self, runs: RunLog, r: Registered) -> RunResult:
        """Move the aliases, publish, then finish the run row. A champion that changed while this run
        trained (an operator's promote or rollback) was never compared with: the candidate is refused."""
        status = "promoted" if self.promotion.mode == "direct" or r.mode == "bootstrap" else "canary"
        current = self.registry.champion()
        if (current.version if current else None) != r.parent:
            return self._refuse(runs, r, current.version if current else None)
        reason = f"{r.why}; {r.best.name} passed every gate ({r.best.verdicts[0].reason})"
        if status == "promoted":
            try:  # checked again where the alias moves: an operator's move in between stands
                transition = self.registry.promote(r.info.version, reason, expected=r.parent)
            except ChampionChanged as exc:
                return self._refuse(runs, r, exc.current)
            event = model_event(transition.info, self.model_name, "promote", 1.0, reason, transition.from_version,
                                ts=self.clock())
        else:
            self.registry.mark_challenger(r.info.version, reason)
            event = model_event(r.info, self.model_name, "canary", self.promotion.canary_traffic, reason,
                                ts=self.clock())
        try:
            self.announcer.publish(event)
        except FlywheelError as exc:  # the alias moved: the run succeeded; reconcile re-announces
            log.warning("run %s: %s %s but the announcement failed (reconcile re-sends it): %s", r.run_id, status,
                        r.info.semver, exc)
            reason += f"; announcement pending: {exc}"
        runs.finish(r.run_id, status=status, reason=reason, data_hash=r.data_hash, trained_count=r.trained,
                    version=r.info.version, kind=r.best.kind, candidates=r.summaries, mlflow_run_id=r.mlflow_run_id)
        log.info("run %s: %s %s (%s)", r.run_id, status, r.info.semver, reason)
        return RunResult(status, reason, r.run_id, r.mode, r.info, event, tuple(r.summaries))

    def _refuse(self, runs: RunLog, r: Registered, current: str | None) -> RunResult:
        reason = (f"the champion changed during the run ({r.parent} -> {current}); "
                  "the candidate was not evaluated against it")
        self.registry.delete_version(r.info.version)
        deploys.forget_version(runs.conn, self.model_name, r.info.version)
        runs.finish(r.run_id, status="refused", reason=reason, data_hash=r.data_hash, trained_count=r.trained,
                    candidates=r.summaries, mlflow_run_id=r.mlflow_run_id)
        return RunResult("refused", reason, r.run_id, r.mode, candidates=tuple(r.summaries))

    def reconcile(self, announced: dict[str, ModelState]) -> list[ModelEvent]:
        """Re-announce what the registry says but the models topic (folded into ``announced``) does not:
        a crash between an alias move and its event, or a broker that lost its memory storage."""
        state = announced.get(self.model_name, ModelState())
        aliases = self.registry.aliases()
        sent: list[ModelEvent] = []
        if CHAMPION in aliases:
            champion = self.registry.get(CHAMPION)
            if state.champion is None or state.champion.version != champion.version:
                sent.append(model_event(champion, self.model_name, "promote", 1.0,
                                        "re-announced: the registry's champion was not on the models topic",
                                        ts=self.clock()))
        if CHALLENGER in aliases and self.promotion.mode == "canary":
            challenger = self.registry.get(CHALLENGER)
            announced_before = f"canary:{challenger.version}" in state.history
            if not announced_before and (state.canary is None or state.canary.version != challenger.version):
                sent.append(model_event(challenger, self.model_name, "canary", self.promotion.canary_traffic,
                                        "re-announced: the registry's challenger was not on the models topic",
                                        ts=self.clock()))
        for event in sent:
            log.warning("%s %s", event.reason, event.semver)
            self.announcer.publish(event)
        return sent
