"""Large artifact files stored once by content.

A ``minilm-head`` artifact at fp32 ships its encoder's ONNX graph (~87 MB), the same bytes in every version
trained on that encoder. :class:`BlobStore` keeps each such file once, at ``<root>/sha256/<hex>``, and a
version's stored directory holds a hard link to it in the file's place (one inode, one copy of the
bytes; not a symlink: MLflow refuses to download a path that resolves outside the run's artifacts).
Readers see an ordinary directory, and verification is unchanged: :func:`kinds.base.read_manifest`
hashes every file it lists, so a changed shared blob is refused for every version that holds it. Blobs
are written read-only, moved into place whole, and only once their bytes hash to their name.

Only files the manifest pins (name -> sha256) and of at least ``min_bytes`` are shared; the rest are
copied as before.

Garbage collection (:meth:`BlobStore.collect`, ``flywheel models gc``): a blob is kept while a registered
version's stored directory links to it (same inode). Otherwise it is removed together with its other links
under the artifact root (the stored copies of deleted versions and failed runs, which nothing can load), so
its bytes are freed. Deleting a blob's path never changes a version's bytes (a hard link holds them).
What must not happen is a registration losing the blob between :meth:`~BlobStore.put` and
:meth:`~BlobStore.link`, or its new stored copy being taken for a stray one before its version exists.
So a registration holds :meth:`BlobStore.lock` shared from ``put`` until its version is created, and a
collection holds it exclusively while it lists the registered versions and removes files; and, for a file
system where ``flock`` is not honoured (some network mounts), a blob whose inode changed within the grace
period (``put`` of an existing blob refreshes it; ``link`` changes it) is kept.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path

from registry.exceptions import RegistryStoreError
from registry.types import BlobCollection

MIN_BYTES = 1 << 20  # smaller files are copied into each version: a link would save next to nothing
GRACE_S = 3600.0  # a collection keeps an unreferenced blob whose inode changed this recently
_INCOMING = ".incoming-"


class BlobStore:
    """Content-addressed files under ``root`` (see the module docstring)."""

    def __init__(self, root: Path, min_bytes: int = MIN_BYTES) -> None:
        self.root, self.min_bytes = Path(root), min_bytes

    def __repr__(self) -> str:
        return f"BlobStore({str(self.root)!r})"

    def path(self, digest: str) -> Path:
        return self.root / "sha256" / digest

    def shared(self, directory: Path, files: Mapping[str, str]) -> dict[str, str]:
        """The files of ``directory`` (``files``: name -> sha256, from its manifest) to store as blobs."""
        return {
            name: digest
            for name, digest in files.items()
            if (directory / name).is_file() and (directory / name).stat().st_size >= self.min_bytes
        }

    def put(self, source: Path, digest: str) -> Path:
        """The blob of ``digest``, copied from ``source`` unless stored already. The copy is hashed as it is
        written and moved into place only when it matches, so a blob never holds other bytes than its name."""
        target = self.path(digest)
        if target.is_file():
            with contextlib.suppress(OSError):  # young again: a collection's grace period covers the link to come
                os.utime(target)
            return target
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, temp = tempfile.mkstemp(dir=target.parent, prefix=_INCOMING)
        try:
            hasher = hashlib.sha256()
            with source.open("rb") as src, os.fdopen(fd, "wb") as dst:
                for chunk in iter(lambda: src.read(1 << 20), b""):
                    hasher.update(chunk)
                    dst.write(chunk)
            if hasher.hexdigest() != digest:
                raise RegistryStoreError(f"{source}: sha256 {hasher.hexdigest()} differs from its manifest's {digest}")
            os.chmod(temp, 0o444)
            os.replace(temp, target)  # atomic: two registrations of one blob leave one whole file
        finally:
            if os.path.exists(temp):
                os.unlink(temp)
        return target

    def link(self, digest: str, at: Path) -> None:
        """``at`` becomes a hard link to the blob; a copy where the file system cannot link (another
        device): the version still holds the right bytes, only not shared."""
        at.parent.mkdir(parents=True, exist_ok=True)
        at.unlink(missing_ok=True)
        try:
            os.link(self.path(digest), at)
        except OSError:
            shutil.copyfile(self.path(digest), at)

    def copy_without(self, directory: Path, skip: Mapping[str, str]) -> Path:
        """A temporary copy of ``directory`` without the files named in ``skip`` (the caller removes it)."""
        staging = Path(tempfile.mkdtemp(prefix="flywheel-artifact-"))
        for path in directory.rglob("*"):
            relative = path.relative_to(directory)
            if path.is_file() and relative.as_posix() not in skip:
                (staging / relative).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, staging / relative)
        return staging

    @contextlib.contextmanager
    def lock(self, *, shared: bool, timeout_s: float = 600.0) -> Iterator[None]:
        """``flock`` on ``<root>/.lock``: shared by registrations (from ``put`` to their version's creation),
        exclusive for a collection. :class:`RegistryStoreError` after ``timeout_s`` of waiting."""
        self.root.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.root / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            deadline = time.monotonic() + timeout_s
            mode = (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB
            while True:
                try:
                    fcntl.flock(fd, mode)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        what = "a blob collection" if shared else "registrations"
                        raise RegistryStoreError(
                            f"{self.root}: {what} held the blob lock for {timeout_s:g} s") from None
                    time.sleep(0.05)
            yield
        finally:
            os.close(fd)  # releases the lock

    def collect(self, live: Callable[[], Iterable[Path]], artifacts: Path, *, grace_s: float = GRACE_S,
                dry_run: bool = False, timeout_s: float = 600.0) -> BlobCollection:
        """Remove the blobs no directory of ``live()`` (the stored copies of every registered version) links
        to, unless changed within ``grace_s``, with their other links under ``artifacts``; and incoming files
        older than ``grace_s`` (a crashed ``put``). ``live`` is called under the exclusive lock, so no
        registration runs between listing the versions and removing files."""
        with self.lock(shared=False, timeout_s=timeout_s):
            linked = {inode for directory in live() for _path, inode in _files(directory)}
            now = time.time()
            garbage: dict[tuple[int, int], Path] = {}
            kept = young = 0
            for blob, (dev, ino) in sorted(_files(self.root / "sha256")):
                stat = blob.stat()
                if blob.name.startswith(_INCOMING):
                    if now - stat.st_ctime >= grace_s and not dry_run:
                        blob.unlink(missing_ok=True)
                elif (dev, ino) in linked:
                    kept += 1
                elif now - max(stat.st_ctime, stat.st_mtime) < grace_s:
                    young += 1
                else:
                    garbage[(dev, ino)] = blob
            strays = [path for path, inode in _files(artifacts, skip=self.root) if inode in garbage] if garbage else []
            freed = sum(blob.stat().st_size for blob in garbage.values())
            if not dry_run:
                for path in [*strays, *garbage.values()]:
                    path.unlink(missing_ok=True)
        return BlobCollection(removed=tuple(sorted(blob.name for blob in garbage.values())), stray_links=len(strays),
                              freed_bytes=freed, kept=kept, kept_young=young, dry_run=dry_run)


def _files(directory: Path, skip: Path | None = None) -> Iterator[tuple[Path, tuple[int, int]]]:
    """Regular files under ``directory`` (none when it does not exist) with their inode (device, number),
    not descending into ``skip``. A file removed meanwhile (a run writing its reports) is passed over."""
    for base, dirs, names in os.walk(directory):
        if skip is not None:
            dirs[:] = [d for d in dirs if Path(base, d) != skip]
        for name in names:
            path = Path(base, name)
            with contextlib.suppress(OSError):
                stat = path.lstat()
                if os.path.isfile(path) and not path.is_symlink():
                    yield path, (stat.st_dev, stat.st_ino)
