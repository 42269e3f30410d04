"""The embedded broker's object store (flywheel.objectstore): the S3 subset the broker's client uses, with
the conditional writes its storage engine relies on, served over real HTTP; and the storage repair
(flywheel.durable) that a broker start runs on a log a killed broker left half-written."""

from __future__ import annotations

import http.client
import json
import struct
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from flywheel import durable
from flywheel.objectstore import ObjectStore, etag, server


@pytest.fixture
def s3(tmp_path: Path) -> Iterator[http.client.HTTPConnection]:
    httpd = server(ObjectStore(tmp_path / "objects"), "127.0.0.1", 0)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    conn = http.client.HTTPConnection("127.0.0.1", httpd.server_address[1], timeout=5)
    try:
        yield conn
    finally:
        conn.close()
        httpd.shutdown()
        httpd.server_close()


def _call(conn: http.client.HTTPConnection, method: str, path: str, body: bytes | None = None,
          **headers: str) -> tuple[int, dict[str, str], bytes]:
    conn.request(method, path, body=body, headers={k.replace("_", "-"): v for k, v in headers.items()})
    answer = conn.getresponse()
    return answer.status, dict(answer.getheaders()), answer.read()


def test_put_and_get_round_trip_with_md5_etags(s3: http.client.HTTPConnection) -> None:
    status, headers, _ = _call(s3, "PUT", "/b/topics/t/watermark.json", b'{"high": 3}')
    assert status == 200 and headers["ETag"] == etag(b'{"high": 3}')
    status, headers, body = _call(s3, "GET", "/b/topics/t/watermark.json")
    assert status == 200 and body == b'{"high": 3}' and headers["ETag"] == etag(body)
    assert "GMT" in headers["Last-Modified"]
    status, headers, body = _call(s3, "HEAD", "/b/topics/t/watermark.json")
    assert status == 200 and body == b"" and headers["Content-Length"] == "11"
    assert _call(s3, "GET", "/b/topics/t/nothing.json")[0] == 404


def test_create_refuses_an_existing_object(s3: http.client.HTTPConnection) -> None:
    """The write s3rver 3.7.1 accepts: a restarted broker's "create" of a watermark that exists."""
    assert _call(s3, "PUT", "/b/w.json", b"1", If_None_Match="*")[0] == 200
    assert _call(s3, "PUT", "/b/w.json", b"0", If_None_Match="*")[0] == 412
    assert _call(s3, "GET", "/b/w.json")[2] == b"1"


def test_update_needs_the_current_etag(s3: http.client.HTTPConnection) -> None:
    first = _call(s3, "PUT", "/b/meta.json", b"v1")[1]["ETag"]
    second = _call(s3, "PUT", "/b/meta.json", b"v2", If_Match=first)[1]["ETag"]
    assert _call(s3, "PUT", "/b/meta.json", b"v3", If_Match=first)[0] == 412  # a stale writer
    assert _call(s3, "PUT", "/b/missing.json", b"v1", If_Match=first)[0] == 412
    assert _call(s3, "GET", "/b/meta.json", If_None_Match=second)[0] == 304
    assert _call(s3, "GET", "/b/meta.json", If_None_Match=first)[2] == b"v2"


def test_list_with_prefix_and_delimiter(s3: http.client.HTTPConnection) -> None:
    for key in ("c/topics/a/records/00.batch", "c/topics/a/records/05.batch", "c/topics/b/w.json", "c/meta.json"):
        _call(s3, "PUT", f"/b/{key}", b"x")
    body = _call(s3, "GET", "/b?list-type=2&prefix=c/topics/a/records/")[2].decode()
    assert body.count("<Key>") == 2 and body.index("00.batch") < body.index("05.batch")
    body = _call(s3, "GET", "/b?list-type=2&prefix=c/topics/&delimiter=/")[2].decode()
    assert "<Key>" not in body and "<Prefix>c/topics/a/</Prefix>" in body and "<Prefix>c/topics/b/</Prefix>" in body
    body = _call(s3, "GET", "/b?list-type=2&prefix=c/")[2].decode()
    assert body.count("<Key>") == 4 and "<IsTruncated>false</IsTruncated>" in body
    assert _call(s3, "DELETE", "/b/c/meta.json")[0] == 204
    assert _call(s3, "GET", "/b/c/meta.json")[0] == 404


def test_a_listing_follows_every_replace_and_delete_of_a_listed_object(tmp_path: Path) -> None:
    """Listing entries are kept between lists (the broker lists a partition on every fetch): a replaced
    object is listed with its new size and date, a deleted one not at all, a new one as soon as it exists,
    and a store started again on the same directory lists what is there."""
    store = ObjectStore(tmp_path / "objects")

    def listed(s: ObjectStore) -> dict[str, str]:
        objects, _ = s.list("b", "p/", "")
        return {key: entry[entry.index("<Size>") + 6:entry.index("</Size>")] for key, entry in objects}

    assert store.put("b", "p/w.json", b"1", None, None) and store.put("b", "p/00.batch", b"abc", None, None)
    assert listed(store) == {"p/00.batch": "3", "p/w.json": "1"}
    store.put("b", "p/w.json", b"12345", None, None)  # replaced under a kept entry
    store.put("b", "p/05.batch", b"ab", None, None)
    assert listed(store) == {"p/00.batch": "3", "p/05.batch": "2", "p/w.json": "5"}
    store.delete("b", "p/00.batch")
    assert listed(store) == {"p/05.batch": "2", "p/w.json": "5"}
    (tmp_path / "objects" / "b" / "p" / "05.batch").unlink()  # gone behind its back: the walk decides
    assert listed(store) == {"p/w.json": "5"}
    assert listed(ObjectStore(tmp_path / "objects")) == {"p/w.json": "5"}


def test_lists_beside_replaces_never_keep_a_stale_entry(tmp_path: Path) -> None:
    """One thread replaces an object with ever longer bodies while another lists it: once the writer is
    done, the listing shows the last size (an entry read from the file before a replace must not outlive it)."""
    store = ObjectStore(tmp_path / "objects")
    store.put("b", "p/w.json", b"x", None, None)
    done = threading.Event()

    def write() -> None:
        for n in range(2, 400):
            store.put("b", "p/w.json", b"x" * n, None, None)
        done.set()

    writer = threading.Thread(target=write)
    writer.start()
    while not done.is_set():
        store.list("b", "p/", "")
    writer.join()
    (entry,) = [e for _k, e in store.list("b", "p/", "")[0]]
    assert "<Size>399</Size>" in entry


@pytest.mark.parametrize("key", ["a/../b", "a//b", "./a", "a/"])
def test_keys_that_would_leave_the_bucket_are_refused(s3: http.client.HTTPConnection, key: str) -> None:
    assert _call(s3, "PUT", f"/b/{key}", b"x")[0] == 400


def _batch(folder: Path, offset: int, records: int, producer: int = 7, epoch: int = 0, sequence: int = 0) -> None:
    header = struct.pack(">qiibIhiqqqhi", offset, 100, 0, 2, 0, 0, records - 1, 0, 0, producer, epoch, sequence)
    (folder / "records").mkdir(parents=True, exist_ok=True)
    (folder / "records" / f"{offset:020d}.batch").write_bytes(header + b"\0" * 40)


def _cluster(root: Path, high: int, sequence: int) -> Path:
    cluster = root / durable.BUCKET / "clusters" / "c1"
    part = cluster / "topics" / "t" / "partitions" / "0000000000"
    _batch(part, 0, 5, sequence=0)
    _batch(part, 5, 3, sequence=5)
    (part / "watermark.json").write_text(json.dumps({"low": None, "high": high, "timestamps": None}))
    (cluster / "meta.json").write_text(json.dumps(
        {"producers": {"7": {"sequences": {"0": {"t": {"0": sequence}}}}}, "topics": {}, "transactions": {}}))
    return cluster


def test_repair_moves_a_torn_produce_back_to_the_stored_batches(tmp_path: Path) -> None:
    """A broker killed after advancing the producer's sequence and the watermark, before the batch: the
    resent batch must be accepted (not answered DUPLICATE_SEQUENCE_NUMBER) at the offset after the last."""
    cluster = _cluster(tmp_path, high=12, sequence=12)
    done = durable.repair(tmp_path, "c1")
    assert done.watermarks == {"t/0": (12, 8)} and done.sequences == {"7/0/t/0": (12, 8)}
    part = cluster / "topics" / "t" / "partitions" / "0000000000"
    assert json.loads((part / "watermark.json").read_text())["high"] == 8
    assert json.loads((cluster / "meta.json").read_text())["producers"]["7"]["sequences"]["0"]["t"]["0"] == 8
    assert not durable.repair(tmp_path, "c1")  # idempotent


def test_repair_leaves_a_consistent_log_alone(tmp_path: Path) -> None:
    cluster = _cluster(tmp_path, high=8, sequence=8)
    before = (cluster / "meta.json").read_bytes()
    assert not durable.repair(tmp_path, "c1")
    assert (cluster / "meta.json").read_bytes() == before
    assert not durable.repair(tmp_path, "other-cluster")


def test_cluster_id_is_kept_across_starts(tmp_path: Path) -> None:
    first = durable.cluster_id_for(tmp_path / "broker")
    assert first.startswith("flywheel-") and durable.cluster_id_for(tmp_path / "broker") == first
