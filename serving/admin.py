"""The admin routes, behind a bearer token (``FLYWHEEL_ADMIN_TOKEN``): the CLI's lifecycle commands over
HTTP. ``/retrain`` asks the trainers on the retrain topic (single flight holds across every trainer);
``/bootstrap`` trains in a background job of this pod; ``/evaluate``, promote and rollback answer at
once. ``GET /training/{id}`` follows any of them by the id they returned.

A pod without a token refuses every admin route with 403; a wrong or missing token is a 401."""

from __future__ import annotations

import hmac
import logging
import threading
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any, cast

import psycopg
from fastapi import APIRouter, Depends, FastAPI, Path, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from core import db
from core.exceptions import DatabaseUnavailable
from core.kafka import KafkaConnection
from core.settings import FlywheelSettings
from kinds.catalog import KINDS
from registry import InvalidRequest, ModelRegistry, NoSuchVersion, RegistryError
from schemas import ModelEvent, RetrainRequest
from schemas.exceptions import InvalidEvent
from serving.exceptions import AdminDisabled, Conflict, InvalidInput, NotFound, Unauthorized, Unavailable
from serving.models import (
    NO_NUL,
    BootstrapCreate,
    ErrorPublic,
    EvaluateCreate,
    EvaluationPublic,
    FeedbackPublic,
    ModelEventPublic,
    PromoteCreate,
    RetrainCreate,
    RetrainPublic,
    ReviewItemPublic,
    ReviewLabelCreate,
    ReviewPublic,
    RollbackCreate,
    TrainingPublic,
    VerdictPublic,
)
from streams.kafka import CheckedProducer, producer_config
from trainer.exceptions import TrainerError

if TYPE_CHECKING:  # the lifecycle pulls in the trainer's pipeline and gates (pandas, sklearn): imported
    # when an admin route first needs it, so that a pod's import path stays lean
    from flywheel.lifecycle import Lifecycle
    from trainer.pipeline import RunResult

log = logging.getLogger(__name__)
KEEP_JOBS = 200  # jobs (and retrain request ids) a pod remembers for GET /training/{id}
ADMIN_ERRORS: dict[int | str, dict[str, object]] = {
    code: {"model": ErrorPublic} for code in (401, 403, 404, 409, 422, 503)}


@dataclass
class Job:
    id: str
    kind: str  # bootstrap | retrain
    status: str = "queued"
    result: RunResult | None = None
    queued_at: datetime = field(default_factory=lambda: datetime.now(UTC))


class Admin:
    """What the admin routes act through: a :class:`Lifecycle` on the pod's registry, one background
    worker for bootstrap jobs, and the jobs and retrain requests this pod started."""

    def __init__(self, lifecycle: Lifecycle, producer: CheckedProducer) -> None:
        self.lifecycle = lifecycle
        self._producer = producer
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="flywheel-admin-job")
        self._jobs: OrderedDict[str, Job] = OrderedDict()
        self._lock = threading.Lock()

    @classmethod
    def open(cls, settings: FlywheelSettings, kafka: KafkaConnection, database_url: str,
             registry: ModelRegistry) -> Admin:
        from flywheel.lifecycle import assemble

        producer = CheckedProducer(producer_config(kafka))
        return cls(assemble(settings, kafka, database_url, registry, producer), producer)

    def close(self) -> None:
        self._worker.shutdown(wait=False, cancel_futures=True)
        self._producer.flush(5.0)

    # -- jobs ------------------------------------------------------------------------------------------
    def remember(self, job: Job) -> Job:
        with self._lock:
            self._jobs[job.id] = job
            while len(self._jobs) > KEEP_JOBS:
                self._jobs.popitem(last=False)
        return job

    def job(self, job_id: str) -> Job | None:
        with self._lock:
            return self._jobs.get(job_id)

    def submit(self, kind: str, work: Callable[[], RunResult]) -> Job:
        job = self.remember(Job(uuid.uuid4().hex, kind))

        def run() -> None:
            job.status = "running"
            try:
                job.result = work()
                job.status = job.result.status
            except Exception as exc:  # the job's failure is its status; the pod goes on
                from trainer.pipeline import RunResult

                log.exception("admin %s job %s failed", kind, job.id)
                job.result, job.status = RunResult("failed", f"{type(exc).__name__}: {exc}"), "failed"

        self._worker.submit(run)
        return job

    def training(self, ref: str) -> TrainingPublic:
        """A job of this pod, a retrain request (by its id) or a run (by its run id), freshest first."""
        job = self.job(ref)
        run_ref = str(job.result.run_id) if job and job.result and job.result.run_id else ref
        with _translated():
            row = self.lifecycle.trainer.find_run(run_ref)
        if row is not None:
            return _training(ref, row)
        if job is not None:
            return TrainingPublic(id=ref, status=job.status, trigger="admin" if job.kind == "retrain" else job.kind,
                                  reason=job.result.reason if job.result else "",
                                  request_id=ref if job.kind == "retrain" else None)
        raise NotFound(f"no training run or job {ref!r} (a job of another pod, or one forgotten after "
                       f"{KEEP_JOBS} newer ones, is found by its run id)")


def _admin(request: Request) -> Admin:
    admin = getattr(request.app.state, "admin", None)
    if admin is None:
        raise AdminDisabled("admin routes are off on this pod: no FLYWHEEL_ADMIN_TOKEN, or no database")
    return cast(Admin, admin)


AdminDep = Annotated[Admin, Depends(_admin)]
bearer = HTTPBearer(auto_error=False, description="FLYWHEEL_ADMIN_TOKEN")


def require_token(request: Request,
                  credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> None:
    settings = cast(FlywheelSettings, request.app.state.settings)
    if settings.admin_token is None:
        raise AdminDisabled("admin routes are off on this pod: FLYWHEEL_ADMIN_TOKEN is not set")
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise Unauthorized("this route needs `Authorization: Bearer <FLYWHEEL_ADMIN_TOKEN>`")
    if not hmac.compare_digest(credentials.credentials.encode(), settings.admin_token.get_secret_value().encode()):
        raise Unauthorized("the bearer token is not this pod's admin token")


def install_admin_routes(app: FastAPI) -> None:
    router = APIRouter(tags=["admin"], dependencies=[Depends(require_token)], responses=ADMIN_ERRORS)

    @router.post("/retrain", status_code=202, response_model=RetrainPublic)
    def retrain(body: RetrainCreate, admin: AdminDep) -> RetrainPublic:
        lc = admin.lifecycle
        request = RetrainRequest(ts=datetime.now(UTC), model=lc.settings.model_name, mode=body.mode,
                                 trigger="admin", reason=body.reason)
        lc.request_retrain(request)  # a Kafka failure is a 503 (the StreamError handler)
        admin.remember(Job(request.request_id, "retrain"))
        return RetrainPublic(request_id=request.request_id, status="queued")

    @router.post("/evaluate", response_model=EvaluationPublic)
    def evaluate(admin: AdminDep, body: EvaluateCreate | None = None) -> EvaluationPublic:
        trainer = admin.lifecycle.trainer
        with _translated():
            ref = body.version if body is not None else None
            verdicts = trainer.evaluate(ref)
            info = admin.lifecycle.registry.get(ref) if ref is not None else None
        version, semver = (info.version, info.semver) if info is not None else _evaluated(admin)
        return EvaluationPublic(version=version, semver=semver, passed=all(v.passed for v in verdicts),
                                verdicts=[VerdictPublic(gate=v.gate, passed=v.passed, reason=v.reason,
                                                        details=v.details) for v in verdicts])

    @router.post("/models/{version}/promote", response_model=ModelEventPublic)
    def promote(version: Annotated[str, Path(max_length=100, pattern=NO_NUL)], admin: AdminDep,
                body: PromoteCreate | None = None) -> ModelEventPublic:
        with _translated():
            event = admin.lifecycle.promote(version, (body or PromoteCreate()).reason)
        return _event(event)

    @router.post("/models/rollback", response_model=ModelEventPublic)
    def rollback(admin: AdminDep, body: RollbackCreate | None = None) -> ModelEventPublic:
        body = body or RollbackCreate()
        with _translated():
            event = admin.lifecycle.rollback(body.to, body.reason)
        return _event(event)

    @router.post("/bootstrap", status_code=202, response_model=TrainingPublic)
    async def bootstrap(body: BootstrapCreate, admin: AdminDep) -> TrainingPublic:
        lc = admin.lifecycle
        if body.kind not in KINDS:
            raise InvalidInput(f"kind: {body.kind!r} is not one of {sorted(KINDS)}")
        bad = [f"rows.{i}.label: {r.label!r}" for i, r in enumerate(body.rows) if r.label not in lc.settings.labels]
        if bad:
            raise InvalidInput(f"{len(bad)} rows with a label outside {list(lc.settings.labels)}: "
                               f"{'; '.join(bad[:5])}")
        limit = lc.settings.max_text_chars
        texts = [f"rows.{i}.text" for i, r in enumerate(body.rows) if not r.text.strip() or len(r.text) > limit]
        if texts:
            raise InvalidInput(f"{len(texts)} rows with an empty text or one over {limit} characters: "
                               f"{'; '.join(texts[:5])}")
        if not body.force:
            with _translated():
                champion = await run_in_threadpool(lc.registry.champion)
            if champion is not None:
                raise Conflict(f"{lc.settings.model_name} already has a champion ({champion.semver}); "
                               "retrain with POST /retrain, or bootstrap with force=true")
        from trainer.data import CorpusRow

        rows = [CorpusRow(r.text.strip(), r.label, r.domain) for r in body.rows]
        job = admin.submit("bootstrap", lambda: lc.trainer.bootstrap(
            rows, source=body.source, kind=body.kind, holdout_fraction=body.holdout, force=body.force))
        return TrainingPublic(id=job.id, status=job.status, trigger="bootstrap", mode="bootstrap")

    @router.get("/review/next", response_model=ReviewPublic)
    def review_next(admin: AdminDep, n: Annotated[int, Query(ge=1, le=500)] = 10,
                    reviewer: Annotated[str, Query(min_length=1, max_length=200, pattern=NO_NUL)] = "api",
                    ) -> ReviewPublic:
        """The unjudged predictions the model is least sure of (smallest top-two margin), claimed for
        ``reviewer`` for 10 minutes; answer each with ``POST /review/label`` (or ``POST /feedback``)."""
        from curation.review import ReviewQueue

        lc = admin.lifecycle
        with _translated(), db.connect(lc.trainer.db_url, autocommit=True) as conn:
            items = ReviewQueue(conn, lc.settings.model_name).next(n, reviewer)
        return ReviewPublic(items=[ReviewItemPublic(**item.to_dict()) for item in items])

    @router.post("/review/label", status_code=202, response_model=FeedbackPublic)
    def review_label(body: ReviewLabelCreate, request: Request, admin: AdminDep) -> FeedbackPublic:
        lc = admin.lifecycle
        if body.label not in lc.settings.labels:
            raise InvalidInput(f"label: {body.label!r} is not one of {list(lc.settings.labels)}")
        from curation.review import ReviewQueue

        with _translated(), db.connect(lc.trainer.db_url, autocommit=True) as conn:
            found = ReviewQueue(conn, lc.settings.model_name).find(body.prediction_id)
        if found is None:
            raise NotFound(f"no prediction {body.prediction_id!r} of {lc.settings.model_name!r} has landed")
        services = request.app.state.services
        try:
            event = services.feedback.feedback(body.prediction_id, label=body.label,
                                               user_id=f"review:{body.reviewer}", source="review")
        except InvalidEvent as exc:
            raise InvalidInput(str(exc)) from exc
        return FeedbackPublic(feedback_id=event.feedback_id)

    @router.get("/training/{job_id}", response_model=TrainingPublic)
    def training(job_id: Annotated[str, Path(max_length=200, pattern=NO_NUL)], admin: AdminDep) -> TrainingPublic:
        return admin.training(job_id)

    app.include_router(router)


def _evaluated(admin: Admin) -> tuple[str, str]:
    """What ``evaluate()`` without a version judged: the challenger, else the champion."""
    registry = admin.lifecycle.registry
    with _translated():
        info = registry.get("challenger" if "challenger" in registry.aliases() else "champion")
    return info.version, info.semver


def _event(event: ModelEvent) -> ModelEventPublic:
    return ModelEventPublic(action=event.action, model=event.model, version=event.version, semver=event.semver,
                            previous_version=event.previous_version, traffic=event.traffic, reason=event.reason)


def _training(ref: str, row: dict[str, Any]) -> TrainingPublic:
    return TrainingPublic(
        id=ref, status=row["status"], run_id=str(row["run_id"]), request_id=row["request_id"],
        trigger=row["trigger"], mode=row["mode"], version=row["version"], kind=row["kind"], reason=row["reason"],
        started_at=row["started_at"], finished_at=row["finished_at"], duration_s=row["duration_s"],
        candidates=list(row["candidates"] or []))


@contextmanager
def _translated() -> Iterator[None]:
    """Registry, trainer and database errors as the HTTP errors they mean."""
    try:
        yield
    except NoSuchVersion as exc:
        raise NotFound(str(exc)) from exc
    except InvalidRequest as exc:
        raise Conflict(str(exc)) from exc
    except RegistryError as exc:
        raise Unavailable(f"the model registry failed: {exc}") from exc
    except DatabaseUnavailable as exc:
        raise Unavailable(str(exc)) from exc
    except psycopg.Error as exc:
        raise Unavailable(f"the database failed: {type(exc).__name__}: {exc}") from exc
    except TrainerError as exc:
        raise Conflict(str(exc)) from exc
