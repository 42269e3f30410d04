"""The model registry on MLflow 3, in-process: an explicit ``MlflowClient`` on a SQLAlchemy backend
(:mod:`registry.backend`) with artifacts under a local directory. No global MLflow state is used
(no tracking URI, no active run), and :func:`registry._offline.go_offline` runs before MLflow is
touched. MLflow's exceptions become :mod:`registry.exceptions` here.

Import through :func:`registry.open_registry` (this module imports MLflow, ~2-3 s).
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from datetime import UTC, datetime
from pathlib import Path

import mlflow.artifacts
import sqlalchemy.exc
from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunStatus, RunTag
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

import core
from core.exceptions import ConfigError
from kinds.base import artifact_sha256, read_manifest
from registry import backend as backends
from registry._blobs import GRACE_S, BlobStore
from registry._offline import go_offline
from registry.base import ModelRegistry, RunHandle
from registry.exceptions import InvalidRequest, NoSuchVersion, RegistryStoreError, TamperedArtifact
from registry.semver import Mode, Parent, Semver, next_semver
from registry.types import CHAMPION, BlobCollection, Lineage, ModelVersionInfo, VersionRef

_MODEL_NAME = re.compile(r"^[A-Za-z0-9._-]{1,100}$")  # as FlywheelSettings.model_name; quote-free filters
_ALIAS = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")
_MISSING = "RESOURCE_DOES_NOT_EXIST"


@contextmanager
def _mlflow_errors(what: str) -> Iterator[None]:
    try:
        yield
    except MlflowException as exc:
        raise RegistryStoreError(f"{what}: {exc.message}", exc.error_code) from exc
    except sqlalchemy.exc.SQLAlchemyError as exc:  # raised outside MLflow's sessions (store creation)
        raise RegistryStoreError(f"{what}: {' '.join(str(exc).split())}", "DATABASE_ERROR") from exc


class MlflowRunHandle(RunHandle):
    def __init__(self, client: MlflowClient, run_id: str, artifact_uri: str) -> None:
        self._client = client
        self.run_id = run_id
        self.artifact_uri = artifact_uri

    def log_params(self, params: Mapping[str, object]) -> None:
        with _mlflow_errors(f"run {self.run_id}: log_params"):
            self._client.log_batch(self.run_id, params=[Param(k, str(v)) for k, v in params.items()])

    def log_metrics(self, metrics: Mapping[str, float], step: int = 0) -> None:
        now = int(time.time() * 1000)
        with _mlflow_errors(f"run {self.run_id}: log_metrics"):
            self._client.log_batch(self.run_id, metrics=[Metric(k, float(v), now, step) for k, v in metrics.items()])

    def set_tags(self, tags: Mapping[str, str]) -> None:
        with _mlflow_errors(f"run {self.run_id}: set_tags"):
            self._client.log_batch(self.run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        with _mlflow_errors(f"run {self.run_id}: log_artifact"):
            self._client.log_artifact(self.run_id, str(path), artifact_path)

    def log_artifacts(self, directory: Path, artifact_path: str | None = None) -> None:
        with _mlflow_errors(f"run {self.run_id}: log_artifacts"):
            self._client.log_artifacts(self.run_id, str(directory), artifact_path)

    def log_text(self, text: str, artifact_file: str) -> None:
        with _mlflow_errors(f"run {self.run_id}: log_text"):
            self._client.log_text(self.run_id, text, artifact_file)


class MlflowRegistry(ModelRegistry):
    """Use :meth:`open`; the constructor takes an already initialised store. ``blobs``: where large
    artifact files are kept once by content (:mod:`registry._blobs`; None: every version copies them)."""

    def __init__(self, client: MlflowClient, backend: str, model_name: str, experiment_id: str,
                 blobs: BlobStore | None = None) -> None:
        self._client = client
        self._backend = backend
        self.model_name = model_name
        self.experiment_id = experiment_id
        self.blobs = blobs

    def __repr__(self) -> str:
        return f"MlflowRegistry(model_name={self.model_name!r}, experiment_id={self.experiment_id!r})"

    @classmethod
    def open(cls, backend: str, artifact_root: Path, model_name: str, *,
             experiment: str | None = None) -> MlflowRegistry:
        """Create the schema, MLflow's tables, the experiment (artifacts under ``artifact_root``) and
        the registered model when missing. Idempotent, and serialised across processes. An existing
        experiment keeps the artifact location it was created with. Large files shared by versions (an
        encoder graph) are stored once under ``artifact_root/.blobs``."""
        if not _MODEL_NAME.match(model_name):
            raise ConfigError(f"model name {model_name!r} must match {_MODEL_NAME.pattern}")
        go_offline()
        experiment = experiment or model_name
        with backends.exclusive(backend, "init"):
            backends.create_schema(backend)
            with _mlflow_errors(f"opening the MLflow store for {model_name!r}"):
                client = MlflowClient(tracking_uri=backend, registry_uri=backend)  # creates/migrates tables
                found = client.get_experiment_by_name(experiment)
                if found is None:
                    location = (artifact_root.resolve() / experiment).as_uri()
                    experiment_id = client.create_experiment(experiment, artifact_location=location)
                else:
                    experiment_id = found.experiment_id
                    if found.lifecycle_stage == "deleted":
                        client.restore_experiment(experiment_id)
                try:
                    client.get_registered_model(model_name)
                except MlflowException as exc:
                    if exc.error_code != _MISSING:
                        raise
                    client.create_registered_model(model_name)
        return cls(client, backend, model_name, experiment_id, BlobStore(artifact_root.resolve() / ".blobs"))

    def _exclusive(self) -> AbstractContextManager[object]:
        return backends.exclusive(self._backend, f"model:{self.model_name}")

    # -- runs ------------------------------------------------------------------------------------
    @contextmanager
    def run(self, name: str, tags: Mapping[str, str] | None = None) -> Iterator[RunHandle]:
        with _mlflow_errors(f"starting run {name!r}"):
            run = self._client.create_run(self.experiment_id, run_name=name,
                                          tags={"flywheel.model": self.model_name, **(tags or {})})
        handle = MlflowRunHandle(self._client, run.info.run_id, run.info.artifact_uri or "")
        status = RunStatus.to_string(RunStatus.FAILED)
        try:
            yield handle
            status = RunStatus.to_string(RunStatus.FINISHED)
        except BaseException as exc:
            if not isinstance(exc, Exception):  # KeyboardInterrupt, SystemExit
                status = RunStatus.to_string(RunStatus.KILLED)
            raise
        finally:
            with _mlflow_errors(f"ending run {handle.run_id}"):
                self._client.set_terminated(handle.run_id, status)

    def _attach(self, run_id: str) -> MlflowRunHandle:
        with _mlflow_errors(f"run {run_id}"):
            run = self._client.get_run(run_id)
        return MlflowRunHandle(self._client, run_id, run.info.artifact_uri or "")

    # -- versions --------------------------------------------------------------------------------
    def register(self, artifact_dir: Path, *, mode: Mode, metrics: Mapping[str, float], lineage: Lineage,
                 run_id: str | None = None, kind: str | None = None, labels: Sequence[str] | None = None,
                 code_version: str | None = None) -> ModelVersionInfo:
        manifest = read_manifest(artifact_dir)  # refuses an artifact that is already inconsistent
        sha256 = artifact_sha256(artifact_dir)
        if (kind is not None and kind != manifest["kind"]) or (labels is not None and
                                                               list(labels) != manifest["labels"]):
            raise InvalidRequest(self.model_name, f"{artifact_dir} is a {manifest['kind']} model with labels "
                                                     f"{manifest['labels']}, not {kind} with {labels}")
        kind, labels = str(manifest["kind"]), tuple(manifest["labels"])
        runs: AbstractContextManager[RunHandle] = (
            self.run(f"register {self.model_name}", {"mode": mode}) if run_id is None
            else contextlib.nullcontext(self._attach(run_id)))
        # shared blob lock from storing to the version's creation: a collection never sees the new stored
        # copy before its version exists, nor removes a blob between put and link (registry._blobs)
        linking = self.blobs.lock(shared=True) if self.blobs is not None else contextlib.nullcontext()
        with runs as run, linking:
            path = f"model-{sha256[:12]}"  # content-addressed: two registrations in one run never collide
            self._store(run, artifact_dir, path, manifest["files"])
            run.log_metrics(metrics)
            if run_id is None:
                run.log_params({"kind": kind, **manifest["params"]})
            source = f"{run.artifact_uri}/{path}"
            stored = Path(mlflow.artifacts.download_artifacts(artifact_uri=source, tracking_uri=self._backend))
            if artifact_sha256(stored) != sha256 or read_manifest(stored) != manifest:
                raise RegistryStoreError(f"the stored copy at {source} differs from {artifact_dir}")
            with self._exclusive():
                semver, parent = self._next_semver(kind, labels, mode, lineage.parent_version)
                tags = {"semver": str(semver), "kind": kind, "labels": json.dumps(labels), "sha256": sha256,
                        "mode": mode, "data_hash": lineage.data_hash, "watermark": str(lineage.watermark),
                        "sample_count": str(lineage.sample_count), "code_version": code_version or _code_version()}
                if parent is not None:
                    tags["parent_version"] = parent.semver
                if lineage.sample_range is not None:
                    tags["sample_first_id"], tags["sample_last_id"] = map(str, lineage.sample_range)
                if lineage.corpus_weight is not None:
                    tags["corpus_weight"] = f"{lineage.corpus_weight:g}"
                if lineage.training_run_id is not None:
                    tags["training_run_id"] = lineage.training_run_id
                if lineage.searched_params:
                    tags["searched_params"] = json.dumps(dict(lineage.searched_params), sort_keys=True)
                with _mlflow_errors(f"registering {artifact_dir} as {self.model_name} {semver}"):
                    created = self._client.create_model_version(self.model_name, source, run_id=run.run_id,
                                                                tags=tags)
            run.set_tags({"registered_model": self.model_name, "registered_version": str(created.version),
                          "semver": str(semver)})
        return self._by_number(str(created.version))

    def collect_blobs(self, *, grace_s: float = GRACE_S, dry_run: bool = False) -> BlobCollection:
        """Remove the shared blobs no registered version of any model in this store links to (see
        :meth:`registry._blobs.BlobStore.collect`)."""
        if self.blobs is None:
            return super().collect_blobs(grace_s=grace_s, dry_run=dry_run)
        return self.blobs.collect(self._stored_directories, self.blobs.root.parent, grace_s=grace_s,
                                  dry_run=dry_run)

    def _stored_directories(self) -> list[Path]:
        """The local stored copy of every registered version of every model in the backend."""
        found: list[ModelVersion] = []
        token: str | None = None
        with _mlflow_errors("listing the versions of every model"):
            while True:
                page = self._client.search_model_versions(max_results=1000, page_token=token)
                found.extend(page)
                token = page.token
                if not token:
                    break
        return [path for path in (_local_path(mv.source or "") for mv in found) if path is not None]

    def _store(self, run: RunHandle, artifact_dir: Path, path: str, files: Mapping[str, str]) -> None:
        """Log ``artifact_dir`` to ``run`` at ``path``; with a blob store and a local artifact location, its
        large files go to the blob store once (by sha256) and the stored copy links to them."""
        local = _local_path(run.artifact_uri)
        shared = self.blobs.shared(artifact_dir, files) if self.blobs is not None and local is not None else {}
        if not shared or self.blobs is None or local is None:
            run.log_artifacts(artifact_dir, path)
            return
        for name, digest in shared.items():
            self.blobs.put(artifact_dir / name, digest)
        staging = self.blobs.copy_without(artifact_dir, shared)
        try:
            run.log_artifacts(staging, path)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        for name, digest in shared.items():
            self.blobs.link(digest, local / path / name)

    def _next_semver(self, kind: str, labels: Sequence[str], mode: Mode,
                     parent_ref: VersionRef | None) -> tuple[Semver, ModelVersionInfo | None]:
        versions = self.versions()
        if parent_ref is None:
            parent = next((v for v in versions if CHAMPION in v.aliases), None)
        else:
            parent = self.get(parent_ref)
        taken = [Semver.parse(v.semver) for v in versions if Semver.is_semver(v.semver)]
        if parent is None or not Semver.is_semver(parent.semver):
            return next_semver(None, kind, labels, mode, taken), parent
        bump_from = Parent(Semver.parse(parent.semver), parent.kind, parent.labels)
        return next_semver(bump_from, kind, labels, mode, taken), parent

    def versions(self) -> list[ModelVersionInfo]:
        found: list[ModelVersion] = []
        token: str | None = None
        with _mlflow_errors(f"listing versions of {self.model_name!r}"):
            while True:
                page = self._client.search_model_versions(f"name='{self.model_name}'", max_results=1000,
                                                          page_token=token)
                found.extend(page)
                token = page.token
                if not token:
                    break
        aliases = self.aliases()  # search results carry aliases=[] on the SQL store (mlflow#9783)
        return sorted((self._info(mv, aliases) for mv in found), key=lambda info: int(info.version))

    def aliases(self) -> dict[str, str]:
        with _mlflow_errors(f"reading aliases of {self.model_name!r}"):
            model = self._client.get_registered_model(self.model_name)
        return {alias: str(version) for alias, version in model.aliases.items()}

    def set_alias(self, alias: str, ref: VersionRef) -> None:
        if not _ALIAS.match(alias) or Semver.is_semver(alias):
            raise InvalidRequest(self.model_name, f"alias {alias!r} must match {_ALIAS.pattern}")
        version = self.get(ref).version
        with _mlflow_errors(f"setting alias {alias!r} of {self.model_name!r}"):
            self._client.set_registered_model_alias(self.model_name, alias, version)

    def delete_alias(self, alias: str) -> None:
        with _mlflow_errors(f"deleting alias {alias!r} of {self.model_name!r}"):
            self._client.delete_registered_model_alias(self.model_name, alias)

    def _by_number(self, version: str) -> ModelVersionInfo:
        try:
            mv = self._client.get_model_version(self.model_name, version)
        except MlflowException as exc:
            if exc.error_code == _MISSING:
                raise NoSuchVersion(self.model_name, version) from exc
            raise RegistryStoreError(f"reading version {version} of {self.model_name!r}: {exc.message}",
                             exc.error_code) from exc
        return self._info(mv, self.aliases())

    def _by_semver(self, semver: str) -> ModelVersionInfo:
        with _mlflow_errors(f"finding {self.model_name!r} {semver}"):
            found = self._client.search_model_versions(f"name='{self.model_name}' and tags.semver='{semver}'")
        if not found:
            raise NoSuchVersion(self.model_name, semver)
        return self._info(min(found, key=lambda mv: int(mv.version)), self.aliases())

    def _set_tags(self, version: str, tags: Mapping[str, str]) -> None:
        with _mlflow_errors(f"tagging version {version} of {self.model_name!r}"):
            for key, value in tags.items():
                self._client.set_model_version_tag(self.model_name, version, key, value)

    def _delete_tags(self, version: str, keys: Sequence[str]) -> None:
        with _mlflow_errors(f"untagging version {version} of {self.model_name!r}"):
            for key in keys:
                self._client.delete_model_version_tag(self.model_name, version, key)

    def _delete_version(self, version: str) -> None:
        with _mlflow_errors(f"deleting version {version} of {self.model_name!r}"):
            self._client.delete_model_version(self.model_name, version)

    def _artifact_dir(self, info: ModelVersionInfo, dst: Path | None) -> Path:
        try:
            path = mlflow.artifacts.download_artifacts(artifact_uri=info.artifact_uri, tracking_uri=self._backend,
                                                       dst_path=None if dst is None else str(dst))
        except (MlflowException, OSError) as exc:
            raise TamperedArtifact(Path(info.artifact_uri.removeprefix("file://")),
                                   f"the stored artifact cannot be read: {exc}", model=self.model_name,
                                   version=info.version) from exc
        return Path(path)

    def _info(self, mv: ModelVersion, aliases: Mapping[str, str]) -> ModelVersionInfo:
        tags = dict(mv.tags)
        version = str(mv.version)
        return ModelVersionInfo(
            model=self.model_name, version=version, semver=tags.get("semver", ""), kind=tags.get("kind", ""),
            labels=tuple(json.loads(tags.get("labels", "[]"))), mode=tags.get("mode", ""),
            sha256=tags.get("sha256", ""), artifact_uri=mv.source or "", run_id=mv.run_id,
            created_at=datetime.fromtimestamp(mv.creation_timestamp / 1000, UTC),
            parent_version=tags.get("parent_version"), data_hash=tags.get("data_hash", ""),
            watermark=_int(tags.get("watermark")), sample_count=_int(tags.get("sample_count")),
            code_version=tags.get("code_version", ""),
            aliases=tuple(sorted(a for a, v in aliases.items() if v == version)), tags=tags,
        )


def _local_path(uri: str) -> Path | None:
    """The directory of a ``file:`` artifact URI (None for any other scheme)."""
    parsed = urllib.parse.urlparse(uri)
    if parsed.scheme != "file":
        return None
    return Path(urllib.request.url2pathname(parsed.path))


def _int(text: str | None) -> int | None:
    return int(text) if text and text.lstrip("-").isdigit() else None


@functools.cache
def _code_version() -> str:
    """``core.__version__``, plus ``+g<commit>[.dirty]`` when running from a git checkout."""
    checkout = Path(core.__file__).resolve().parents[1]
    if not (checkout / ".git").exists():
        return core.__version__
    try:
        described = subprocess.run(
            ["git", "-C", str(checkout), "describe", "--always", "--dirty=.dirty", "--abbrev=12",
             "--exclude", "*"], capture_output=True, text=True, timeout=5, check=True,
            env={**os.environ, "GIT_OPTIONAL_LOCKS": "0"}).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return core.__version__
    return f"{core.__version__}+g{described}" if described else core.__version__
