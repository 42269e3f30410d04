"""The embedded broker's durable storage: the object store process, and the repair run before each start.

Tansu writes one produce request to its S3 storage in three steps: the producer's next sequence number
(``meta.json``), the partition's high watermark (``watermark.json``), then the batch itself
(``records/<base offset>.batch``). A broker stopped between the steps leaves a sequence or watermark that runs
ahead of the stored records. The producer resends the batch it was not acknowledged for; the restarted
broker would answer DUPLICATE_SEQUENCE_NUMBER, which librdkafka takes as delivered, and the batch would be
lost (measured: one record in 10,000 across one broker kill). The watermark alone would leave an offset gap
that the ingest fence refuses for ever. So before the broker starts, :func:`repair` moves both back to what
the stored batches show: the watermark to the end of the last batch, each producer's sequence to the one
after its last stored batch. The resent batch is then accepted and written exactly once. It reads only
the 61-byte header of every batch file.

The object store must outlive its broker: if the store went first, the broker would go on answering from its
cached sequences while its writes failed. It therefore exits on SIGTERM only once the broker has been quiet
for a moment (``flywheel.objectstore``), and ``up`` stops the broker before it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from flywheel.exceptions import StackError

log = logging.getLogger(__name__)

BUCKET = "flywheel"
# Kafka RecordBatch v2: baseOffset int64, batchLength int32, partitionLeaderEpoch int32, magic int8, crc uint32,
# attributes int16, lastOffsetDelta int32, baseTimestamp int64, maxTimestamp int64, producerId int64,
# producerEpoch int16, baseSequence int32
_HEADER = struct.Struct(">qiibIhiqqqhi")


@dataclass
class Repair:
    """What :func:`repair` moved back, per partition (``topic/partition``)."""

    watermarks: dict[str, tuple[int, int]] = field(default_factory=dict)  # partition: (was, now)
    sequences: dict[str, tuple[int, int]] = field(default_factory=dict)  # producer/epoch/partition: (was, now)

    def __bool__(self) -> bool:
        return bool(self.watermarks or self.sequences)


def _partition_state(folder: Path) -> tuple[int, dict[tuple[int, int], int]]:
    """(end offset of the stored batches, next sequence per (producer id, epoch)) of one partition."""
    end = 0
    sequences: dict[tuple[int, int], int] = {}
    records = folder / "records"
    names = sorted(os.listdir(records)) if records.is_dir() else []
    for name in names:
        if not name.endswith(".batch"):
            continue
        with (records / name).open("rb") as batch:
            head = batch.read(_HEADER.size)
        if len(head) < _HEADER.size:
            raise StackError(f"broker storage: truncated batch {records / name}")
        *_, last_delta, _t0, _t1, producer, epoch, base_sequence = _HEADER.unpack(head)
        end = max(end, int(name[:20]) + last_delta + 1)
        if producer >= 0 and base_sequence >= 0:
            key = (producer, epoch)
            sequences[key] = max(sequences.get(key, 0), base_sequence + last_delta + 1)
    return end, sequences


def _write_json(path: Path, data: Any) -> None:
    tmp = path.with_name(path.name + ".repair")
    tmp.write_text(json.dumps(data, separators=(",", ":")))
    os.replace(tmp, path)


def repair(root: Path, cluster_id: str) -> Repair:
    """Bring the stored watermarks and producer sequences of ``cluster_id`` back to its stored batches.
    Call it only while no broker uses ``root``."""
    cluster = root / BUCKET / "clusters" / cluster_id
    done = Repair()
    meta_path = cluster / "meta.json"
    meta: dict[str, Any] = json.loads(meta_path.read_text()) if meta_path.exists() else {}
    meta_changed = False
    for folder in sorted((cluster / "topics").glob("*/partitions/*")):
        if not folder.is_dir():
            continue
        topic, partition = folder.parent.parent.name, int(folder.name)
        end, stored = _partition_state(folder)
        mark_path = folder / "watermark.json"
        mark = json.loads(mark_path.read_text()) if mark_path.exists() else {}
        if (mark.get("high") or 0) > end:
            done.watermarks[f"{topic}/{partition}"] = (mark["high"], end)
            _write_json(mark_path, {**mark, "high": end})
        for producer, detail in meta.get("producers", {}).items():
            for epoch, by_topic in detail.get("sequences", {}).items():
                sequences = by_topic.get(topic, {})
                truth = stored.get((int(producer), int(epoch)), 0)
                if sequences.get(str(partition), 0) > truth:
                    done.sequences[f"{producer}/{epoch}/{topic}/{partition}"] = (sequences[str(partition)], truth)
                    sequences[str(partition)] = truth
                    meta_changed = True
    if meta_changed:
        _write_json(meta_path, meta)
    return done


def cluster_id_for(folder: Path) -> str:
    """The broker's cluster id kept in ``folder`` (created once): offsets stored in Postgres refer to it."""
    path = folder / "cluster-id"
    with contextlib.suppress(FileNotFoundError):
        return path.read_text().strip()
    import uuid

    folder.mkdir(parents=True, exist_ok=True)
    value = f"flywheel-{uuid.uuid4().hex[:12]}"
    tmp = path.with_name("cluster-id.new")
    tmp.write_text(value)
    os.replace(tmp, path)
    return value


def wait_for_port(host: str, port: int, timeout: float, alive: Callable[[], bool]) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive():
            raise StackError(f"the process meant to listen on {host}:{port} exited")
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
            return
        time.sleep(0.05)
    raise StackError(f"nothing listens on {host}:{port} after {timeout:.0f} s")


class ObjectStoreProcess:
    """``python -m flywheel.objectstore`` on ``root``, a child that dies with its parent."""

    def __init__(self, root: Path, port: int, *, fsync: bool, log_file: IO[bytes] | None,
                 preexec: Callable[[], None] | None, lock_fd: int | None) -> None:
        self.root, self.port, self.fsync = root, port, fsync
        self._log, self._preexec, self._lock_fd = log_file, preexec, lock_fd
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 20.0) -> None:
        cmd = [sys.executable, "-m", "flywheel.objectstore", "--root", str(self.root), "--port", str(self.port)]
        self._proc = subprocess.Popen(
            cmd + (["--fsync"] if self.fsync else []), stdout=self._log or subprocess.DEVNULL,
            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True, preexec_fn=self._preexec,
            pass_fds=() if self._lock_fd is None else (self._lock_fd,),
            # the same modules as this process (a checkout run with PYTHONPATH, or the installed package)
            env={**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)})
        proc = self._proc
        wait_for_port("127.0.0.1", self.port, timeout, lambda: proc.poll() is None)

    def stop(self, timeout: float = 10.0) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()  # it exits once its broker has been quiet for a moment
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout)

    def broker_env(self) -> dict[str, str]:
        """The environment of a Tansu broker on this store: nothing of the caller's AWS settings."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        return {**env, "AWS_ENDPOINT": self.endpoint, "AWS_ALLOW_HTTP": "true", "AWS_DEFAULT_REGION": "us-east-1",
                "AWS_ACCESS_KEY_ID": "flywheel", "AWS_SECRET_ACCESS_KEY": "flywheel"}
