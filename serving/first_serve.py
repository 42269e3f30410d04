"""The pod's half of data-to-deploy (:mod:`registry.deploys`): on the first prediction it serves of a
version, record the serve time once, off the request path; the pod whose row wins observes
``flywheel_feedback_to_serving_seconds{model}`` once per feedback event the version was first to deploy.

A request only checks a set (the versions this process recorded already); the write runs on one
background thread. If Postgres cannot be reached the version stays unrecorded and the next prediction
of it, at least ``retry_s`` later, tries again: a database outage delays the figure, it never fails a
request."""

from __future__ import annotations

import logging
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

from core.db import Connector
from core.exceptions import FlywheelError
from registry import deploys
from serving.metrics import ServingMetrics

log = logging.getLogger(__name__)


class FirstServes:
    """First-serve records of every model a pod hosts (shared by its :class:`~serving.services.Services`)."""

    def __init__(self, connect: Connector, metrics: ServingMetrics, *, pod: str | None = None,
                 retry_s: float = 5.0) -> None:
        self.connect = connect
        self.metrics = metrics
        self.pod = pod or socket.gethostname()
        self.retry_s = retry_s
        self._done: set[tuple[str, str]] = set()
        self._busy: dict[tuple[str, str], float] = {}  # in flight, or failed: monotonic time of a retry
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="first-serve")

    def served(self, model: str, version: str) -> None:
        """A prediction of ``version`` of ``model`` was served now (cheap once recorded)."""
        key = (model, version)
        if key in self._done:
            return
        now = time.monotonic()
        with self._lock:
            if key in self._done or self._busy.get(key, 0.0) > now:
                return
            self._busy[key] = float("inf")
        try:
            self._pool.submit(self._record, key, datetime.now(UTC))
        except RuntimeError:  # closed: the pod is stopping
            with self._lock:
                self._busy.pop(key, None)

    def _record(self, key: tuple[str, str], served_at: datetime) -> None:
        model, version = key
        try:
            with self.connect() as conn:
                seconds = deploys.record_first_serve(conn, model, version, served_at, self.pod)
        except FlywheelError as exc:  # DatabaseUnavailable, DeployRecordError: a metric never breaks serving
            log.warning("cannot record the first serve of %s %s (retried on a later prediction): %s",
                        model, version, exc)
            with self._lock:
                self._busy[key] = time.monotonic() + self.retry_s
            return
        for s in seconds or ():
            self.metrics.feedback_to_serving.labels(model).observe(s)
        if seconds:
            log.info("%s %s first served: deployed %d feedback events", model, version, len(seconds))
        with self._lock:
            self._done.add(key)
            self._busy.pop(key, None)

    def wait(self, timeout: float = 10.0) -> None:
        """Wait for the records in flight (tests, shutdown)."""
        self._pool.submit(lambda: None).result(timeout)

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=False)
