"""Large artifact files stored once by content (``registry._blobs``): two fp32 ``minilm-head`` versions
trained on the same encoder keep one copy of its ONNX graph, both load and verify through it, and a
changed shared graph is refused for both."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from kinds import Embedder, Encoder, MemoryEmbeddingCache, MiniLMHead, Resources
from kinds.encoder import shared_encoder
from kinds.onnx_encoder import GRAPH, OnnxEncoder
from registry import Lineage, ModelRegistry, TamperedArtifact
from tests.trainer.lifecycle_helpers import rows

LINEAGE = Lineage(data_hash="h", watermark=1, sample_count=1)


def saved_head(at: Path, first: int) -> MiniLMHead:
    train = rows("vader_movies")[first : first + 120]
    head = MiniLMHead(epochs=2, precision="fp32").use(Embedder(shared_encoder(), MemoryEmbeddingCache()))
    head.fit([r.text for r in train], [r.label for r in train]).save(at)
    return head


def disk_bytes(root: Path) -> int:
    """Bytes the files under ``root`` take (each inode once: hard links share theirs)."""
    inodes = {(p.stat().st_dev, p.stat().st_ino): p.stat().st_size for p in root.rglob("*") if p.is_file()}
    return sum(inodes.values())


def test_versions_with_one_encoder_store_its_graph_once(registry: ModelRegistry, tmp_path: Path) -> None:
    heads = [saved_head(tmp_path / "a", 0), saved_head(tmp_path / "b", 200)]
    one, two = (registry.register(tmp_path / name, mode="full", metrics={}, lineage=LINEAGE) for name in "ab")
    assert one.sha256 != two.sha256  # two different heads ...
    stored = [registry.fetch(v.version) for v in (one, two)]
    graphs = [directory / GRAPH for directory in stored]
    assert graphs[0].samefile(graphs[1])  # ... one graph (one inode)
    size = (tmp_path / "a" / GRAPH).stat().st_size
    assert size > 50_000_000
    assert disk_bytes(tmp_path / "artifacts") < 1.2 * size  # stored once, not once per version

    texts = [r.text for r in rows("vader_products")[:40]]
    for head, version in zip(heads, (one, two), strict=True):  # each loads, runs the shared graph, answers as saved
        pod_side = Embedder(Encoder(use_graph=True), MemoryEmbeddingCache())
        served = registry.load(version.version, resources=Resources(embedder=pod_side))
        assert isinstance(served, MiniLMHead) and isinstance(served.embedder.encoder, OnnxEncoder)
        assert served.predict(texts) == head.predict(texts)
        assert np.abs(served.predict_proba(texts) - head.predict_proba(texts)).max() < 1e-5

    (tmp_path / "download").mkdir()
    copy = registry.fetch(one.version, dst=tmp_path / "download")  # a download is a copy of its own
    assert (copy / GRAPH).is_file() and not (copy / GRAPH).samefile(graphs[0])


def test_a_changed_shared_graph_is_refused_for_every_version(registry: ModelRegistry, tmp_path: Path) -> None:
    for name, first in (("a", 0), ("b", 200)):
        saved_head(tmp_path / name, first)
    versions = [registry.register(tmp_path / name, mode="full", metrics={}, lineage=LINEAGE) for name in "ab"]
    blob = registry.fetch(versions[0].version) / GRAPH  # a link to the one stored graph
    os.chmod(blob, 0o644)  # stored read-only; someone with write access changes one byte
    raw = bytearray(blob.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    blob.write_bytes(bytes(raw))
    for version in versions:
        with pytest.raises(TamperedArtifact):
            registry.fetch(version.version)
        with pytest.raises(TamperedArtifact):
            registry.load(version.version)
    with pytest.raises(TamperedArtifact):  # nor does a new version link to the changed blob
        registry.register(tmp_path / "a", mode="full", metrics={}, lineage=LINEAGE)
