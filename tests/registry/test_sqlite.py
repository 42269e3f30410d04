"""The single-file setup: the same registry on sqlite (MLflow creates its tables in the file)."""

from __future__ import annotations

from pathlib import Path

import pytest

from registry import Lineage, TamperedArtifact, open_registry, sqlite_backend
from tests.registry.conftest import MODEL, Saved


def test_sqlite_registry_registers_promotes_rolls_back_and_verifies(tmp_path: Path,
                                                                    saved: dict[str, Saved]) -> None:
    backend = sqlite_backend(tmp_path / "state" / "registry.db")
    registry = open_registry(backend, tmp_path / "artifacts", MODEL)
    lineage = Lineage(data_hash="h", watermark=10, sample_count=36)
    first = registry.register(saved["a"].path, mode="bootstrap", metrics={"accuracy": 0.5}, lineage=lineage)
    registry.promote(first.version, "bootstrap")
    second = registry.register(saved["b"].path, mode="incremental", metrics={"accuracy": 0.6}, lineage=lineage)
    assert (first.semver, second.semver, second.parent_version) == ("1.0.0", "1.0.1", "1.0.0")
    registry.promote("1.0.1", "better")
    registry.rollback(reason="worse online")

    reopened = open_registry(backend, tmp_path / "artifacts", MODEL)  # a second client on the same file
    assert reopened.aliases() == {"champion": first.version}
    assert reopened.get(second.version).rolled_back
    assert reopened.load("champion").predict(["a waste of time"]) == saved["a"].model.predict(["a waste of time"])
    (Path(reopened.get("1.0.1").artifact_uri.removeprefix("file://")) / "manifest.json").write_text("{}")
    with pytest.raises(TamperedArtifact):
        reopened.fetch("1.0.1")
