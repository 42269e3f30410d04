"""The lifecycle's commands that need no trainer: ``promote`` and ``rollback`` move an alias and announce
it (one command, one :class:`ModelEvent` on the models topic), ``request_retrain`` asks the trainers on
the retrain topic. Used by the CLI (through ``flywheel.lifecycle``), the serving pods' admin routes and
the canary controller alike."""

from __future__ import annotations

from dataclasses import dataclass

from registry.announce import ModelAnnouncer, model_event
from registry.base import ModelRegistry
from registry.types import UNCHECKED, Expected, Transition, VersionRef
from schemas import ModelAction, ModelEvent, RetrainRequest


@dataclass(frozen=True)
class ModelActions:
    """Alias moves announced by ``announcer``, and requests to the trainers on ``retrain_topic`` (sent
    through the announcer's producer: every send waits for the broker's acknowledgement)."""

    registry: ModelRegistry
    announcer: ModelAnnouncer
    model_name: str
    retrain_topic: str

    def promote(self, ref: VersionRef, reason: str, *, expected: Expected = UNCHECKED) -> ModelEvent:
        """Make ``ref`` the champion (the alias move is the commit point), then announce ``promote``;
        ``expected``: the champion it was judged against (:meth:`ModelRegistry.promote`)."""
        return self._announce(self.registry.promote(ref, reason, expected=expected), "promote", reason)

    def rollback(self, to: VersionRef | None, reason: str, *, expected: Expected = UNCHECKED) -> ModelEvent:
        """Restore ``to`` (default: ``previous``) as the champion, then announce ``rollback``; ``expected``: the
        champion it was decided on (:meth:`ModelRegistry.rollback`)."""
        return self._announce(self.registry.rollback(to, reason, expected=expected), "rollback", reason)

    def request_retrain(self, request: RetrainRequest) -> None:
        """Ask the trainers (one of them takes it, once, by ``request_id``) on the retrain topic."""
        self.announcer.producer.send_all(self.retrain_topic, [(request.model.encode(), request.to_json())])

    def _announce(self, transition: Transition, action: ModelAction, reason: str) -> ModelEvent:
        event = model_event(transition.info, self.model_name, action, 1.0, reason, transition.from_version)
        return self.announcer.publish(event)
