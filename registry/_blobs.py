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
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path

from registry.exceptions import RegistryStoreError

MIN_BYTES = 1 << 20  # smaller files are copied into each version: a link would save next to nothing


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
            return target
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, temp = tempfile.mkstemp(dir=target.parent, prefix=".incoming-")
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
