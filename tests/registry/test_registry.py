"""The MLflow registry on the real Postgres (a fresh database per test, MLflow's tables in schema
``mlflow``): registration with semver and lineage tags, the alias policy, verified artifacts, runs."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

import psycopg
import pytest

import core
import kinds
from flywheel import migrate
from registry import (
    IDENTITY_TAGS,
    InvalidRequest,
    Lineage,
    Mode,
    ModelRegistry,
    NoChampion,
    NoPrevious,
    NoSuchVersion,
    TamperedArtifact,
    open_registry,
    postgres_backend,
)
from tests.registry.conftest import MODEL, THREE, Saved, corpus

if TYPE_CHECKING:
    from mlflow import MlflowClient


def mlflow_client(backend: str) -> MlflowClient:
    """A plain MLflow client to check what the registry wrote (imported late: only after the registry
    switched telemetry off, so importing MLflow here neither builds a telemetry client nor writes its id)."""
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=backend, registry_uri=backend)


LINEAGE = Lineage(data_hash="d" * 64, watermark=120, sample_count=36, sample_range=(7, 120), training_run_id="r-1")


def _register(registry: ModelRegistry, saved: Saved, mode: Mode = "full", parent_version: str | None = None) -> str:
    lineage = Lineage(data_hash="h", watermark=1, sample_count=1, parent_version=parent_version)
    return registry.register(saved.path, mode=mode, metrics={"accuracy": 0.5}, lineage=lineage).semver


def test_register_creates_1_0_0_with_lineage_tags_metrics_and_the_artifact(
        registry: ModelRegistry, backend: str, tmp_path: Path, saved: dict[str, Saved]) -> None:
    info = registry.register(saved["a"].path, mode="bootstrap", metrics={"accuracy": 0.81, "macro_f1": 0.7},
                             lineage=LINEAGE)

    assert (info.version, info.semver, info.kind, info.labels, info.mode) == ("1", "1.0.0", "tfidf-logreg", THREE,
                                                                              "bootstrap")
    assert info.sha256 == kinds.artifact_sha256(saved["a"].path)
    assert info.parent_version is None and info.aliases == ()
    assert (info.data_hash, info.watermark, info.sample_count) == ("d" * 64, 120, 36)
    assert info.code_version.startswith(core.__version__)
    assert json.loads(info.tags["labels"]) == list(THREE)
    assert (info.tags["sample_first_id"], info.tags["sample_last_id"], info.tags["training_run_id"]) == (
        "7", "120", "r-1")
    assert registry.get(1) == registry.get("1") == registry.get("1.0.0") == info

    run = mlflow_client(backend).get_run(info.run_id or "")
    assert run.info.status == "FINISHED"
    assert run.data.metrics == {"accuracy": 0.81, "macro_f1": 0.7}
    assert run.data.tags["registered_version"] == "1" and run.data.params["kind"] == "tfidf-logreg"
    stored = registry.fetch(info.version)
    assert stored.is_relative_to(tmp_path / "artifacts" / MODEL)  # the experiment's artifact location
    assert sorted(p.name for p in stored.iterdir()) == sorted(p.name for p in saved["a"].path.iterdir())


def test_semver_follows_the_parent_kind_labels_and_mode(registry: ModelRegistry, saved: dict[str, Saved]) -> None:
    assert _register(registry, saved["a"], "bootstrap") == "1.0.0"
    registry.promote("1.0.0", "first")
    assert _register(registry, saved["b"], "incremental") == "1.0.1"
    assert _register(registry, saved["b"], "incremental") == "1.0.2"  # next free patch
    assert _register(registry, saved["c"], "full") == "1.1.0"
    assert _register(registry, saved["c"], "bootstrap") == "1.2.0"
    assert _register(registry, saved["binary"], "incremental") == "2.0.0"  # label set changed
    assert _register(registry, saved["other"], "full") == "3.0.0"  # kind changed
    assert _register(registry, saved["b"], "incremental", parent_version="1.1.0") == "1.1.1"
    assert _register(registry, saved["b"], "incremental", parent_version="2.0.0") == "4.0.0"
    assert registry.get("1.1.1").parent_version == "1.1.0"
    assert [v.semver for v in registry.versions()] == ["1.0.0", "1.0.1", "1.0.2", "1.1.0", "1.2.0", "2.0.0", "3.0.0",
                                                       "1.1.1", "4.0.0"]


def test_promote_and_rollback_move_champion_challenger_and_previous(
        registry: ModelRegistry, saved: dict[str, Saved]) -> None:
    with pytest.raises(NoChampion):
        registry.rollback(reason="nothing to roll back")
    assert registry.champion() is None
    for name in ("a", "b", "c"):
        _register(registry, saved[name])

    first = registry.promote("1", "bootstrap")
    assert (first.action, first.from_version, first.to_version) == ("promote", None, "1")
    assert registry.aliases() == {"champion": "1"}
    with pytest.raises(InvalidRequest):
        registry.mark_challenger("champion")
    assert registry.mark_challenger("2", "canary 10%").to_version == "2"
    assert registry.aliases() == {"champion": "1", "challenger": "2"}

    second = registry.promote("2", "canary won")
    assert (second.from_version, second.to_version, second.info.aliases) == ("1", "2", ("champion",))
    assert registry.aliases() == {"champion": "2", "previous": "1"}
    assert registry.promote("2", "retry").from_version == "2"  # idempotent
    registry.promote("3", "full retrain")
    assert registry.aliases() == {"champion": "3", "previous": "2"}

    back = registry.rollback(reason="online accuracy fell")
    assert (back.action, back.from_version, back.to_version) == ("rollback", "3", "2")
    assert registry.aliases() == {"champion": "2", "previous": "1"}  # the champion before 2
    left = registry.get("3")
    assert left.rolled_back and left.tags["rollback_reason"] == "online accuracy fell"
    assert left.tags["rolled_back_to"] == "2"
    texts, _ = corpus(THREE, 5, offset=200)
    assert registry.load("champion").predict(texts) == saved["b"].model.predict(texts)

    registry.rollback(reason="again")
    assert registry.aliases() == {"champion": "1"}
    with pytest.raises(NoPrevious):
        registry.rollback(reason="no more")
    with pytest.raises(InvalidRequest):
        registry.rollback(to="1.0.0", reason="already there")
    registry.rollback(to="3", reason="explicit target")  # a rolled-back version may come back on purpose
    assert registry.aliases() == {"champion": "3"} and not registry.get("3").rolled_back
    assert registry.promote("2", "re-promote").info.tags.get("rolled_back") is None
    assert registry.aliases() == {"champion": "2", "previous": "3"}


def test_lookups_and_edits_refuse_what_does_not_exist_or_is_protected(
        registry: ModelRegistry, saved: dict[str, Saved]) -> None:
    for ref in (7, "7", "9.9.9", "staging"):
        with pytest.raises(NoSuchVersion):
            registry.get(ref)
    with pytest.raises(NoChampion):
        registry.get("champion")
    _register(registry, saved["a"])
    _register(registry, saved["b"])
    registry.promote(1, "first")
    with pytest.raises(InvalidRequest):
        registry.set_tag(1, "sha256", "0" * 64)
    assert "sha256" in IDENTITY_TAGS
    registry.set_tag("1.0.0", "flywheel_run_status", "promoted")
    assert registry.get(1).tags["flywheel_run_status"] == "promoted"
    with pytest.raises(InvalidRequest):
        registry.delete_version("champion")
    registry.delete_version("2")
    assert [v.version for v in registry.versions()] == ["1"]
    with pytest.raises(InvalidRequest):  # the manifest says tfidf-logreg
        registry.register(saved["a"].path, mode="full", metrics={}, lineage=LINEAGE, kind="minilm-head")
    with pytest.raises(InvalidRequest):
        registry.register(saved["a"].path, mode="full", metrics={}, lineage=LINEAGE, labels=["a", "b"])
    with pytest.raises(InvalidRequest):
        registry.set_alias("1.0.0", 1)


def _stored_file(registry: ModelRegistry, version: str, name: str) -> Path:
    return Path(registry.get(version).artifact_uri.removeprefix("file://")) / name


def test_a_tampered_artifact_is_refused_by_fetch_and_load(registry: ModelRegistry, saved: dict[str, Saved]) -> None:
    _register(registry, saved["a"])
    manifest = json.loads((saved["a"].path / "manifest.json").read_text())
    weights = _stored_file(registry, "1", sorted(manifest["files"])[0])
    original = weights.read_bytes()

    weights.write_bytes(bytes([original[0] ^ 0x01]) + original[1:])  # one bit of one file
    with pytest.raises(TamperedArtifact) as refused:
        registry.fetch("1")
    assert isinstance(refused.value, kinds.TamperedArtifact) and refused.value.version == "1"
    with pytest.raises(TamperedArtifact):
        registry.load("1.0.0")

    weights.write_bytes(original)
    assert registry.load("1").predict(["a fine film"]) == saved["a"].model.predict(["a fine film"])

    stored_manifest = _stored_file(registry, "1", "manifest.json")
    text = stored_manifest.read_text()
    stored_manifest.write_text(text.replace('"format_version": 1', '"format_version": 1 '))  # consistent files
    with pytest.raises(TamperedArtifact, match="differs from the registered"):
        registry.fetch("1")
    stored_manifest.unlink()
    with pytest.raises(TamperedArtifact):
        registry.fetch("1")


def test_no_alias_moves_to_a_version_whose_artifact_fails_verification(
        registry: ModelRegistry, saved: dict[str, Saved]) -> None:
    _register(registry, saved["a"])
    _register(registry, saved["b"])
    _register(registry, saved["c"])
    registry.promote("1", "first")
    registry.promote("2", "second")
    manifest = json.loads((saved["a"].path / "manifest.json").read_text())
    for version in ("1", "3"):  # one byte of version 1's and version 3's weights flipped
        weights = _stored_file(registry, version, sorted(manifest["files"])[0])
        data = weights.read_bytes()
        weights.write_bytes(data[:-1] + bytes([data[-1] ^ 0x01]))
    before = registry.aliases()

    with pytest.raises(TamperedArtifact) as refused:
        registry.rollback(None, "back to 1")
    assert refused.value.version == "1"
    with pytest.raises(TamperedArtifact):
        registry.rollback("1.0.0", "back to 1")
    with pytest.raises(TamperedArtifact):
        registry.promote("1", "again")
    with pytest.raises(TamperedArtifact):
        registry.mark_challenger("3", "canary")
    assert registry.aliases() == before == {"champion": "2", "previous": "1"}
    assert not registry.get("2").rolled_back and "rolled_back" not in registry.get("2").tags
    assert registry.promote("2", "the champion again").to_version == "2"  # no move: nothing to verify


def test_two_clients_on_one_store_see_the_same_state(backend: str, tmp_path: Path, saved: dict[str, Saved]) -> None:
    one = open_registry(backend, tmp_path / "artifacts", MODEL)
    # another URI string: MLflow caches stores and engines per URI, so this is a separate client/pool
    two = open_registry(backend + "&application_name=second", tmp_path / "artifacts", MODEL)
    _register(one, saved["a"])
    one.promote("1.0.0", "first")
    assert two.champion() == one.champion()
    _register(two, saved["b"])
    two.promote("1.1.0", "second")
    assert [(v.semver, v.aliases) for v in one.versions()] == [("1.0.0", ("previous",)), ("1.1.0", ("champion",))]
    assert one.load("champion").predict(["dull"]) == saved["b"].model.predict(["dull"])


def test_runs_record_params_metrics_artifacts_and_failures(registry: ModelRegistry, backend: str,
                                                           tmp_path: Path, saved: dict[str, Saved]) -> None:
    report = tmp_path / "report.html"
    report.write_text("<h1>gates</h1>")
    with registry.run("full-1", tags={"trigger": "admin"}) as run:
        run.log_params({"mode": "full", "sample_count": 36})
        run.log_metrics({"accuracy": 0.5})
        run.log_metrics({"accuracy": 0.75}, step=1)
        run.set_tags({"flywheel_run_status": "refused"})
        run.log_text(json.dumps({"passed": False}), "gates/evaluation.json")
        run.log_artifact(report, "gates")
        info = registry.register(saved["a"].path, mode="full", metrics={"macro_f1": 0.6}, lineage=LINEAGE,
                                 run_id=run.run_id)
    client = mlflow_client(backend)
    recorded = client.get_run(run.run_id)
    assert recorded.info.status == "FINISHED" and info.run_id == run.run_id
    assert recorded.data.params == {"mode": "full", "sample_count": "36"}
    assert recorded.data.metrics == {"accuracy": 0.75, "macro_f1": 0.6}
    assert recorded.data.tags["trigger"] == "admin" and recorded.data.tags["flywheel.model"] == MODEL
    assert sorted(a.path for a in client.list_artifacts(run.run_id, "gates")) == ["gates/evaluation.json",
                                                                                  "gates/report.html"]

    with pytest.raises(RuntimeError, match="boom"), registry.run("incremental-2") as failing:
        raise RuntimeError("boom")
    assert client.get_run(failing.run_id).info.status == "FAILED"


def test_open_is_idempotent_offline_and_apart_from_the_platform(registry_db_url: str, backend: str,
                                                                tmp_path: Path) -> None:
    for _ in range(2):
        open_registry(backend, tmp_path / "artifacts", MODEL)
    from mlflow.telemetry import get_telemetry_client

    assert os.environ["MLFLOW_DISABLE_TELEMETRY"] == "true" and os.environ["DO_NOT_TRACK"] == "true"
    assert get_telemetry_client() is None
    with psycopg.connect(registry_db_url) as conn:
        tables = dict(conn.execute("SELECT table_schema, count(*) FROM information_schema.tables "
                                   "WHERE table_name IN ('experiments', 'model_versions', 'alembic_version') "
                                   "GROUP BY 1").fetchall())
    assert tables == {"mlflow": 3, "public": 1}  # public holds only the platform's alembic_version
    assert migrate.current_revision(registry_db_url) == migrate.head_revision(registry_db_url)
    assert postgres_backend(registry_db_url, schema="mlflow") == backend
