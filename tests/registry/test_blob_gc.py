"""Garbage collection of the blobs versions share by content (``registry._blobs``), on the real store
(MLflow on Postgres, artifacts on the file system): what no registered version links to goes, with the
stored copies' links that held its bytes; what a version links to, what changed within the grace period and
what a registration is linking right now stays."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from kinds.base import read_manifest
from registry import Lineage, ModelRegistry, open_registry, postgres_backend
from registry._blobs import BlobStore
from registry.mlflow_registry import MlflowRegistry
from tests.registry.conftest import MODEL, Saved

LINEAGE = Lineage(data_hash="h", watermark=1, sample_count=1)


def sharing(registry: ModelRegistry) -> MlflowRegistry:
    """The registry storing every manifest file as a blob (a tfidf artifact has none of 1 MB)."""
    assert isinstance(registry, MlflowRegistry) and registry.blobs is not None
    registry.blobs = BlobStore(registry.blobs.root, min_bytes=1)
    return registry


def blobs(registry: MlflowRegistry) -> set[str]:
    assert registry.blobs is not None
    return {p.name for p in (registry.blobs.root / "sha256").iterdir()}


def digests(saved: Saved) -> set[str]:
    return set(read_manifest(saved.path)["files"].values())


def disk_bytes(root: Path) -> int:
    inodes = {(p.stat().st_dev, p.stat().st_ino): p.stat().st_size for p in root.rglob("*") if p.is_file()}
    return sum(inodes.values())


def test_blobs_of_a_deleted_version_are_collected_and_the_kept_version_still_loads(
        registry: ModelRegistry, saved: dict[str, Saved], tmp_path: Path) -> None:
    reg = sharing(registry)
    a = reg.register(saved["a"].path, mode="full", metrics={}, lineage=LINEAGE)
    b = reg.register(saved["b"].path, mode="full", metrics={}, lineage=LINEAGE)
    assert blobs(reg) == digests(saved["a"]) | digests(saved["b"])
    only_b = digests(saved["b"]) - digests(saved["a"])
    assert only_b
    before = disk_bytes(tmp_path / "artifacts")

    reg.delete_version(b.version)
    assert reg.collect_blobs(grace_s=3600).removed == ()  # just unlinked by a registration: young, kept
    dry = reg.collect_blobs(grace_s=0, dry_run=True)
    assert set(dry.removed) == only_b and blobs(reg) == digests(saved["a"]) | digests(saved["b"])  # nothing removed

    found = reg.collect_blobs(grace_s=0)
    assert set(found.removed) == only_b and found.kept == len(digests(saved["a"]))
    assert found.stray_links == len(only_b)  # the deleted version's stored copy held them too
    assert blobs(reg) == digests(saved["a"])
    assert disk_bytes(tmp_path / "artifacts") == before - found.freed_bytes and found.freed_bytes > 0
    texts = ["what a great film", "dull and far too long"]
    assert reg.load(a.version).predict(texts) == saved["a"].model.predict(texts)  # verified, loads
    assert reg.collect_blobs(grace_s=0).removed == ()

    again = reg.register(saved["b"].path, mode="full", metrics={}, lineage=LINEAGE)  # stored again from its source
    assert blobs(reg) == digests(saved["a"]) | digests(saved["b"])
    assert reg.load(again.version).predict(texts) == saved["b"].model.predict(texts)


def test_blobs_of_a_failed_run_are_collected(registry: ModelRegistry, saved: dict[str, Saved]) -> None:
    reg = sharing(registry)
    reg.register(saved["a"].path, mode="full", metrics={}, lineage=LINEAGE)
    with pytest.raises(RuntimeError), reg.run("crashed") as run:  # stored, then the run died before registering
        reg._store(run, saved["c"].path, "model-c", read_manifest(saved["c"].path)["files"])
        raise RuntimeError("killed")
    only_c = digests(saved["c"]) - digests(saved["a"])
    assert only_c <= blobs(reg)
    found = reg.collect_blobs(grace_s=0)
    assert set(found.removed) == only_c and found.stray_links == len(only_c)
    assert blobs(reg) == digests(saved["a"])


class PausingBlobs(BlobStore):
    """The real store, pausing a registration between ``put`` and ``link`` until released."""

    def __init__(self, root: Path, min_bytes: int) -> None:
        super().__init__(root, min_bytes)
        self.linking, self.release = threading.Event(), threading.Event()

    def link(self, digest: str, at: Path) -> None:
        self.linking.set()
        assert self.release.wait(60)
        super().link(digest, at)


def test_a_blob_being_linked_by_a_registration_is_not_collected(
        registry: ModelRegistry, saved: dict[str, Saved]) -> None:
    reg = sharing(registry)
    b = reg.register(saved["b"].path, mode="full", metrics={}, lineage=LINEAGE)
    reg.delete_version(b.version)  # its blobs are garbage now (grace 0) ...
    assert reg.blobs is not None
    pausing = PausingBlobs(reg.blobs.root, min_bytes=1)
    reg.blobs = pausing
    registered: list[str] = []
    registering = threading.Thread(target=lambda: registered.append(
        reg.register(saved["b"].path, mode="full", metrics={}, lineage=LINEAGE).version))
    registering.start()
    assert pausing.linking.wait(60)  # ... and a registration has just found them stored (put) and will link them
    collected = []
    collecting = threading.Thread(target=lambda: collected.append(reg.collect_blobs(grace_s=0)))
    collecting.start()
    collecting.join(1.0)
    assert collecting.is_alive()  # waits for the registration
    pausing.release.set()
    registering.join(60)
    collecting.join(60)
    assert registered and collected
    assert collected[0].removed == () and blobs(reg) == digests(saved["b"])
    texts = ["what a great film"]
    assert reg.load(registered[0]).predict(texts) == saved["b"].model.predict(texts)


def test_a_collection_waits_for_a_registration_holding_the_lock_and_times_out(registry: ModelRegistry) -> None:
    reg = sharing(registry)
    assert reg.blobs is not None
    with reg.blobs.lock(shared=True), pytest.raises(Exception, match="held the blob lock"):
        reg.blobs.collect(lambda: [], reg.blobs.root.parent, grace_s=0, timeout_s=0.3)
    with reg.blobs.lock(shared=True), reg.blobs.lock(shared=True):  # registrations do not wait for each other
        pass


def test_flywheel_models_gc_from_the_command_line(registry_db_url: str, saved: dict[str, Saved],
                                                  tmp_path: Path) -> None:
    data = tmp_path / "data"
    reg = sharing(open_registry(postgres_backend(registry_db_url), data / "mlartifacts", MODEL))
    reg.register(saved["a"].path, mode="full", metrics={}, lineage=LINEAGE)
    b = reg.register(saved["b"].path, mode="full", metrics={}, lineage=LINEAGE)
    reg.delete_version(b.version)
    only_b = digests(saved["b"]) - digests(saved["a"])
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLYWHEEL_")} | {
        "FLYWHEEL_DATABASE_URL": registry_db_url, "FLYWHEEL_DATA_DIR": str(data), "FLYWHEEL_MODEL_NAME": MODEL,
        "COLUMNS": "200"}

    def gc(*args: str) -> str:
        done = subprocess.run([sys.executable, "-m", "flywheel", "models", "gc", *args], env=env,
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout

    dry = gc("--dry-run", "--grace-s", "0")
    assert f"would remove {len(only_b)} blobs" in dry and all(d in dry for d in only_b)
    assert blobs(reg) == digests(saved["a"]) | digests(saved["b"])
    assert f"removed {len(only_b)} blobs and {len(only_b)} links" in gc("--grace-s", "0")
    assert blobs(reg) == digests(saved["a"])
