"""A small S3-compatible object store on a local directory: the durable storage of the embedded broker.

Tansu's S3 storage engine keeps each partition's high watermark, the producer sequences and the group
state in JSON objects that it updates with conditional writes (``If-Match`` on the ETag, ``If-None-Match:
*`` to create), and writes every produced batch as an object named by its base offset. A store that ignores
those conditions loses acknowledged records: a restarted broker starts with an empty cache, its first
"create" of a watermark silently replaces the stored one, and the next batches overwrite the objects at the
old offsets. (``s3rver`` 3.7.1 does exactly that: measured in docs/benchmarks.md.) This store honours them.

Each object is a file under ``<root>/<bucket>/<key>``, written to a temporary file, optionally fsynced, and
renamed into place before the response, so a PUT that returned survives a crash of this process or of the
broker (and, with ``fsync``, of the machine). ETags are the MD5 of the content, as S3's. The subset served
is what the broker's client (the Rust ``object_store`` crate) uses: GET (``If-None-Match``), HEAD, PUT
(``If-Match``, ``If-None-Match: *``), DELETE, bucket creation and ListObjectsV2 (one page, every key).
Requests are not authenticated: it listens on 127.0.0.1 for the broker that ``flywheel up`` starts.

    python -m flywheel.objectstore --root DIR --port PORT [--fsync]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import threading
import time
import uuid
from datetime import UTC, datetime
from email.utils import formatdate
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit
from xml.sax.saxutils import escape

from flywheel.signals import stop_on_signals

_LOCK_STRIPES = 64
_MAX_ENTRIES = 200_000  # listing entries kept (~250 bytes each); past it they are dropped and made again as listed


class ObjectStore:
    """The objects of every bucket under ``root``, with atomic, conditional writes."""

    def __init__(self, root: Path, *, fsync: bool = False) -> None:
        self.root = root
        self.fsync = fsync
        self._tmp = root / ".tmp"
        self._tmp.mkdir(parents=True, exist_ok=True)
        self._locks = [threading.Lock() for _ in range(_LOCK_STRIPES)]
        self.last_request = time.monotonic()
        # each listed object's <Contents> entry, by (bucket, key): the broker lists a partition's every batch
        # object on each fetch that finds new records (measured in the demo: ~20 lists a second, each of up to
        # ~1,500 objects), and a stat and a formatted date per object per list were most of this process's
        # CPU. Which keys exist still comes from the directory walk; an entry is dropped before its file is
        # replaced or deleted and made again from the new file's stat, so a list never serves a stale one.
        self._entries: dict[tuple[str, str], str] = {}

    def path(self, bucket: str, key: str) -> Path:
        parts = key.split("/")
        if not key or any(part in ("", ".", "..") for part in parts) or bucket.startswith("."):
            raise ValueError(f"unsupported key {key!r}")
        return self.root / bucket / key

    def read(self, bucket: str, key: str) -> bytes | None:
        try:
            return self.path(bucket, key).read_bytes()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            return None

    def put(self, bucket: str, key: str, body: bytes, if_match: str | None, if_none_match: str | None) -> str | None:
        """Write ``body``; None when a condition fails (412). Conditions and write are atomic per key."""
        target = self.path(bucket, key)
        with self._locks[hash(key) % _LOCK_STRIPES]:
            if if_match is not None or if_none_match is not None:
                current = self.read(bucket, key)
                if if_none_match == "*" and current is not None:
                    return None
                if if_match is not None and (current is None or etag(current) not in _tags(if_match)):
                    return None
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = self._tmp / uuid.uuid4().hex
            with tmp.open("wb") as out:
                out.write(body)
                if self.fsync:
                    out.flush()
                    os.fsync(out.fileno())
            self._entries.pop((bucket, key), None)
            os.replace(tmp, target)
            if self.fsync:
                _fsync_dir(target.parent)
        return etag(body)

    def delete(self, bucket: str, key: str) -> None:
        with self._locks[hash(key) % _LOCK_STRIPES]:
            self._entries.pop((bucket, key), None)
            self.path(bucket, key).unlink(missing_ok=True)

    def list(self, bucket: str, prefix: str, delimiter: str) -> tuple[list[tuple[str, str]], list[str]]:
        """(key, its ListObjectsV2 ``<Contents>`` entry) of the objects under ``prefix`` in key order, and the
        common prefixes."""
        base = self.root / bucket
        start = base / prefix.rsplit("/", 1)[0] if "/" in prefix else base
        keys: list[tuple[str, str]] = []
        entries = self._entries
        for folder, _dirs, files in os.walk(start):
            rel = Path(folder).relative_to(base).as_posix()
            for name in files:
                key = name if rel == "." else f"{rel}/{name}"
                if key.startswith(prefix):
                    entry = entries.get((bucket, key)) or self._entry(bucket, key, os.path.join(folder, name))
                    if entry is not None:
                        keys.append((key, entry))
        keys.sort()
        if not delimiter:
            return keys, []
        objects, prefixes = [], set()
        for key, stat in keys:
            cut = key.find(delimiter, len(prefix))
            if cut < 0:
                objects.append((key, stat))
            else:
                prefixes.add(key[: cut + len(delimiter)])
        return objects, sorted(prefixes)

    def _entry(self, bucket: str, key: str, path: str) -> str | None:
        """The key's listing entry from its file's stat, kept; None when it was deleted since the walk. Under
        the key's lock, so no put replaces the file between the stat and keeping what it read."""
        with self._locks[hash(key) % _LOCK_STRIPES]:
            try:
                entry = _contents(key, os.stat(path))
            except FileNotFoundError:
                return None
            if len(self._entries) >= _MAX_ENTRIES:
                self._entries.clear()
            self._entries[(bucket, key)] = entry
            return entry


def etag(body: bytes) -> str:
    return f'"{hashlib.md5(body, usedforsecurity=False).hexdigest()}"'


def _tags(header: str) -> set[str]:
    return {tag.strip().removeprefix("W/") for tag in header.split(",")}


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: the broker's client pools connections
    disable_nagle_algorithm = True  # headers and body are two writes: Nagle + delayed ACK cost 40 ms each
    store: ObjectStore

    def log_message(self, format: str, *args: object) -> None:
        pass  # one line per request would be most of the broker's I/O

    def _target(self) -> tuple[str, str, dict[str, list[str]]]:
        self.store.last_request = time.monotonic()
        url = urlsplit(self.path)
        bucket, _, key = unquote(url.path).lstrip("/").partition("/")
        return bucket, key, parse_qs(url.query, keep_blank_values=True)

    def _send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if body and self.command != "HEAD":
            self.wfile.write(body)

    def _error(self, status: HTTPStatus, code: str) -> None:
        body = f"<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>{code}</Code></Error>".encode()
        self._send(status, body, {"Content-Type": "application/xml"})

    def do_GET(self) -> None:
        bucket, key, query = self._target()
        if not key:
            self._list(bucket, query)
            return
        try:
            body = self.store.read(bucket, key)
        except ValueError:
            self._error(HTTPStatus.BAD_REQUEST, "InvalidArgument")
            return
        if body is None:
            self._error(HTTPStatus.NOT_FOUND, "NoSuchKey")
            return
        tag = etag(body)
        stat = self.store.path(bucket, key).stat()
        headers = {"ETag": tag, "Last-Modified": formatdate(stat.st_mtime, usegmt=True),
                   "Content-Type": "application/octet-stream"}
        if tag in _tags(self.headers.get("If-None-Match", "")):
            self.send_response(HTTPStatus.NOT_MODIFIED)
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()
            return
        self._send(HTTPStatus.OK, body, headers)

    do_HEAD = do_GET

    def do_PUT(self) -> None:
        bucket, key, _query = self._target()
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        if not key:  # CreateBucket
            (self.store.root / bucket).mkdir(parents=True, exist_ok=True)
            self._send(HTTPStatus.OK)
            return
        try:
            tag = self.store.put(bucket, key, body, self.headers.get("If-Match"), self.headers.get("If-None-Match"))
        except ValueError:
            self._error(HTTPStatus.BAD_REQUEST, "InvalidArgument")
            return
        if tag is None:
            self._error(HTTPStatus.PRECONDITION_FAILED, "PreconditionFailed")
            return
        self._send(HTTPStatus.OK, headers={"ETag": tag})

    def do_DELETE(self) -> None:
        bucket, key, _query = self._target()
        try:
            self.store.delete(bucket, key)
        except ValueError:
            self._error(HTTPStatus.BAD_REQUEST, "InvalidArgument")
            return
        self._send(HTTPStatus.NO_CONTENT)

    def _list(self, bucket: str, query: dict[str, list[str]]) -> None:
        prefix = query.get("prefix", [""])[0]
        objects, prefixes = self.store.list(bucket, prefix, query.get("delimiter", [""])[0])
        contents = "".join(entry for _key, entry in objects)
        common = "".join(f"<CommonPrefixes><Prefix>{escape(p)}</Prefix></CommonPrefixes>" for p in prefixes)
        body = ("<?xml version=\"1.0\" encoding=\"UTF-8\"?>"
                "<ListBucketResult xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">"
                f"<Name>{escape(bucket)}</Name><Prefix>{escape(prefix)}</Prefix>"
                f"<KeyCount>{len(objects) + len(prefixes)}</KeyCount><MaxKeys>{len(objects) + len(prefixes)}</MaxKeys>"
                f"<IsTruncated>false</IsTruncated>{contents}{common}</ListBucketResult>").encode()
        self._send(HTTPStatus.OK, body, {"Content-Type": "application/xml"})


def _contents(key: str, stat: os.stat_result) -> str:
    """One object's entry in a ListObjectsV2 answer."""
    return (f"<Contents><Key>{escape(key)}</Key><LastModified>{_iso(stat.st_mtime)}</LastModified>"
            f"<ETag>&quot;{stat.st_size:x}-{stat.st_mtime_ns:x}&quot;</ETag><Size>{stat.st_size}</Size>"
            "<StorageClass>STANDARD</StorageClass></Contents>")


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def server(store: ObjectStore, host: str, port: int) -> ThreadingHTTPServer:
    """An HTTP server for ``store`` bound to ``host:port`` (not yet serving)."""
    handler = type("Handler", (_Handler,), {"store": store})
    httpd = ThreadingHTTPServer((host, port), handler)
    httpd.daemon_threads = True
    return httpd


def serve_until_quiet(httpd: ThreadingHTTPServer, store: ObjectStore, quiet_s: float, most_s: float) -> None:
    """Serve; on SIGTERM or SIGINT go on until no request came for ``quiet_s`` (the broker, stopped at the
    same moment, finishes what it is writing) or ``most_s`` passed, then return."""
    stopping = threading.Event()

    def linger() -> None:
        stopping.wait()
        deadline = time.monotonic() + most_s
        while time.monotonic() - store.last_request < quiet_s and time.monotonic() < deadline:
            time.sleep(0.05)
        httpd.shutdown()

    stop_on_signals(stopping)  # SIGTERM comes once per thread of a killed parent: no lock in the handler
    threading.Thread(target=linger, daemon=True).start()
    httpd.serve_forever(poll_interval=0.1)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="S3-compatible object store on a local directory")
    parser.add_argument("--root", type=Path, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--fsync", action="store_true", help="fsync every object before acknowledging it")
    parser.add_argument("--quiet-s", type=float, default=1.0, help="on SIGTERM: exit after this long without a request")
    parser.add_argument("--most-s", type=float, default=20.0, help="on SIGTERM: exit after this long in any case")
    args = parser.parse_args(argv)
    store = ObjectStore(args.root, fsync=args.fsync)
    serve_until_quiet(server(store, args.host, args.port), store, args.quiet_s, args.most_s)


if __name__ == "__main__":
    main()
