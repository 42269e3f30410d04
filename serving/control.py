"""What a pod's admin routes act through. A pod never trains: work (retrain, bootstrap, evaluate) is a
``RetrainRequest`` on the retrain topic, recorded ``queued`` in ``admin_requests`` first, worked on by
whichever trainer takes it; its status is read back from Postgres, so any pod answers for it. Alias moves
(promote, rollback) need no trainer: the pod does them through :class:`registry.actions.ModelActions`."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import psycopg

from core import db
from core.exceptions import DatabaseUnavailable
from core.kafka import KafkaConnection
from core.settings import FlywheelSettings
from registry import InvalidRequest, ModelRegistry, NoSuchVersion, RegistryError, TamperedArtifact
from registry.actions import ModelActions
from registry.announce import ModelAnnouncer
from registry.requests import AdminRequests
from schemas import RetrainRequest
from serving.exceptions import Conflict, NotFound, Unavailable
from serving.models import EvaluationPublic, TrainingPublic
from serving.views import without_paths
from streams.exceptions import StreamError
from streams.kafka import CheckedProducer, create_topics, producer_config
from streams.kafka import admin as kafka_admin

log = logging.getLogger(__name__)


class Admin:
    """The model actions on the pod's registry, the record of admin requests, and the platform
    database (``connect``, for the review queue)."""

    def __init__(self, settings: FlywheelSettings, actions: ModelActions, requests: AdminRequests,
                 connect: db.Connector, producer: CheckedProducer | None = None) -> None:
        self.settings = settings
        self.actions = actions
        self.requests = requests
        self.connect = connect
        self._producer = producer  # flushed on close when the pod owns it

    @property
    def registry(self) -> ModelRegistry:
        return self.actions.registry

    @classmethod
    def open(cls, settings: FlywheelSettings, kafka: KafkaConnection, database_url: str,
             registry: ModelRegistry) -> Admin:
        """On the pod's registry, with a producer of its own; the topics it publishes to are created."""
        topics = settings.topics
        create_topics(kafka_admin(kafka), [topics.models, topics.retrain], settings.topic_partitions)
        producer = CheckedProducer(producer_config(kafka))
        actions = ModelActions(registry, ModelAnnouncer(producer, topics.models), settings.model_name, topics.retrain)
        connect = db.Connector(database_url)
        return cls(settings, actions, AdminRequests(connect, settings.model_name), connect, producer)

    def for_model(self, settings: FlywheelSettings, registry: ModelRegistry) -> Admin:
        """The same actions for another hosted model (``settings`` are its own: name, labels), on its
        registry; it shares this one's producer and database, which this one flushes and closes."""
        announcer = self.actions.announcer
        actions = ModelActions(registry, announcer, settings.model_name, settings.topics.retrain)
        return Admin(settings, actions, AdminRequests(self.connect, settings.model_name), self.connect)

    def close(self) -> None:
        if self._producer is not None:
            self._producer.flush(5.0)

    def submit(self, request: RetrainRequest, params: Mapping[str, Any] | None = None) -> None:
        """Record ``request`` as ``queued``, then publish it for the trainers. A request the broker did not
        take is recorded ``failed`` and the error raised (a 503)."""
        with translated():
            self.requests.create(request.request_id, request.action, params)
        try:
            self.actions.request_retrain(request)
        except StreamError as exc:
            with translated():
                self.requests.finish(request.request_id, "failed", outcome="unpublished", error=str(exc))
            raise

    def training(self, ref: str) -> TrainingPublic:
        """An admin request (by the id its route returned) or a training run (by its run id)."""
        with translated():
            request, run = self.requests.find(ref)
        if request is None and run is None:
            raise NotFound(f"no admin request or training run {ref!r} of {self.settings.model_name!r}")
        return training_public(ref, request, run)


def training_public(ref: str, request: dict[str, Any] | None, run: dict[str, Any] | None) -> TrainingPublic:
    """The run's fields when there is a run (its status: running, promoted, refused, ...), else the
    request's (queued, running, done, failed); the request's outcome, error and evaluation report."""
    out: dict[str, Any] = {"id": ref}
    if request is not None:
        result = request["result"] or {}
        action = request["action"]
        out.update(status=request["status"], request_id=request["id"], action=action, outcome=request["outcome"],
                   error=request["error"], reason=result.get("reason", request["error"] or ""),
                   trigger="bootstrap" if action == "bootstrap" else "admin",
                   mode="bootstrap" if action == "bootstrap" else None, version=result.get("version"),
                   requested_at=request["created_at"], started_at=request["started_at"],
                   finished_at=request["finished_at"])
        if request["run_id"] is not None:
            out["run_id"] = str(request["run_id"])
        if action == "evaluate" and request["status"] == "done" and result:
            out["evaluation"] = EvaluationPublic.model_validate(result)
    if run is not None:
        out.update(status=run["status"], run_id=str(run["run_id"]), request_id=run["request_id"],
                   trigger=run["trigger"], mode=run["mode"], version=run["version"], kind=run["kind"],
                   reason=run["reason"], started_at=run["started_at"], finished_at=run["finished_at"],
                   duration_s=run["duration_s"], candidates=list(run["candidates"] or []))
    for field in ("error", "reason"):  # a trainer's error quotes its files and URLs: not for the client
        if out.get(field):
            out[field] = without_paths(out[field])
    return TrainingPublic(**out)


@contextmanager
def translated() -> Iterator[None]:
    """Registry and database errors as the HTTP errors they mean."""
    try:
        yield
    except NoSuchVersion as exc:
        raise NotFound(str(exc)) from exc
    except InvalidRequest as exc:
        raise Conflict(str(exc)) from exc
    except TamperedArtifact as exc:  # the alias stays where it was; the pod's paths stay out of the answer
        log.error("refused: %s", exc)
        raise Conflict(f"{exc.path.name}: {without_paths(exc.detail)}: the artifact fails verification, "
                       "no alias was moved") from exc
    except RegistryError as exc:  # the detail (SQL, parameters, URLs) goes to the log, not to the client
        log.warning("the model registry failed: %s", exc)
        raise Unavailable("the model registry is unavailable; try again later") from exc
    except DatabaseUnavailable as exc:
        log.warning("the database is unavailable: %s", exc)
        raise Unavailable("the database is unavailable; try again later") from exc
    except psycopg.Error as exc:
        log.warning("the database failed: %s: %s", type(exc).__name__, exc)
        raise Unavailable("the database failed; try again later") from exc
