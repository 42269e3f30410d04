"""The shipped deployment files, checked against the code without a Docker engine or a cluster.

Dockerfile, docker-compose.yml, deploy/prometheus and deploy/k8s are parsed and compared with what the code
really has: ``FlywheelSettings`` fields, the ``flywheel`` CLI commands (every ``flywheel process X`` has a
compose service and a Kubernetes Deployment), the metrics the code exports (tests/deploy/exported.py), the
serving API's routes. Renaming a setting, a command, a route or a metric without updating the deployment
fails here. The Grafana files are checked in test_grafana.py.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shlex
import shutil
import subprocess
import tomllib
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import typer
import yaml
from typer.testing import CliRunner

import registry
from core.settings import FlywheelSettings
from flywheel.cli import app
from registry._offline import go_offline
from serving.app import ROUTES
from tests.deploy.exported import SYNTHETIC, exported, promql, unknown_references

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
PROMETHEUS = ROOT / "deploy" / "prometheus" / "prometheus.yml"
K8S = ROOT / "deploy" / "k8s"

PREFIX = str(FlywheelSettings.model_config.get("env_prefix", ""))
SETTINGS_ENV = {f"{PREFIX}{name}".upper() for name in FlywheelSettings.model_fields}
SECRET_ENV = {f"{PREFIX}{name}".upper() for name, field in FlywheelSettings.model_fields.items()
              if "SecretStr" in str(field.annotation)}
# The click that typer runs on (recent typer vendors its own copy): its base exception.
CLICK_EXCEPTION = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")


def _process_commands() -> list[str]:
    """The X of every ``flywheel process X``."""
    group: Any = typer.main.get_command(app)
    process = group.get_command(group.context_class(group), "process")
    return sorted(process.list_commands(process.context_class(process)))


PROCESS_COMMANDS = _process_commands()
# processes that act under a Postgres advisory lock: a second replica would only idle on it
SINGLE_FLIGHT = {"trainer", "curation", "canary"}


# -- parsing helpers ---------------------------------------------------------------------------------------
@cache
def _yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def _compose() -> dict[str, Any]:
    data: dict[str, Any] = _yaml(COMPOSE)
    return data


def _services() -> dict[str, dict[str, Any]]:
    services: dict[str, dict[str, Any]] = _compose()["services"]
    return services


def _dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuations joined and comments dropped."""
    lines, current = [], ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not current and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        current += line
        lines.append(current)
        current = ""
    return [(ln.split(None, 1)[0].upper(), ln.split(None, 1)[1] if " " in ln else "") for ln in lines]


def _dockerfile_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for instr, args in _dockerfile():
        if instr == "ENV":
            parts = shlex.split(args)
            if "=" in parts[0]:
                env.update(p.split("=", 1) for p in parts)
            else:  # legacy `ENV KEY value`
                env[parts[0]] = " ".join(parts[1:])
    return env


def _argv(args: str) -> list[str]:
    return list(json.loads(args)) if args.startswith("[") else shlex.split(args)


def _interpolate(value: object) -> str:
    """Compose ``${VAR:-default}`` / ``${VAR-default}`` / ``${VAR}`` with an empty environment."""
    text = str(value)
    text = re.sub(r"\$\{(\w+)(?::?-([^}]*))?\}", lambda m: m.group(2) or "", text)
    return text.replace("$$", "$")


def _env(service: dict[str, Any]) -> dict[str, str]:
    raw = service.get("environment") or {}
    if isinstance(raw, list):
        raw = dict(item.split("=", 1) if "=" in item else (item, "") for item in raw)
    return {str(k): _interpolate(v) for k, v in raw.items() if v is not None}


def _flywheel_services() -> dict[str, dict[str, Any]]:
    """Compose services running the image built from this repository's Dockerfile."""
    built = {}
    for name, svc in _services().items():
        build = svc.get("build")
        if build is None:
            continue
        context = build if isinstance(build, str) else build.get("context", ".")
        dockerfile = "Dockerfile" if isinstance(build, str) else build.get("dockerfile", "Dockerfile")
        if ((COMPOSE.parent / context / dockerfile).resolve()) == DOCKERFILE:
            built[name] = svc
    images = {svc.get("image") for svc in built.values()} - {None}
    return {n: s for n, s in _services().items() if n in built or s.get("image") in images}


def _effective_env(env: dict[str, str]) -> dict[str, str]:
    return {**{k: v for k, v in _dockerfile_env().items() if k.startswith(PREFIX)}, **env}


def _settings(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> FlywheelSettings:
    with monkeypatch.context() as m:
        for key in os.environ:
            if key.upper().startswith(PREFIX):
                m.delenv(key)
        for key, value in env.items():
            m.setenv(key, value)
        return FlywheelSettings()


def _k8s_docs() -> list[tuple[str, dict[str, Any]]]:
    return [(p.name, doc) for p in sorted(K8S.glob("*.yaml")) for doc in yaml.safe_load_all(p.read_text()) if doc]


def _k8s(kind: str) -> list[dict[str, Any]]:
    return [doc for _, doc in _k8s_docs() if doc.get("kind") == kind]


def _pod_specs() -> Iterator[dict[str, Any]]:
    for kind in ("Deployment", "Job", "StatefulSet", "DaemonSet"):
        for doc in _k8s(kind):
            yield doc["spec"]["template"]["spec"]


def _flywheel_containers() -> Iterator[dict[str, Any]]:
    names = {"flywheel"} | {i["name"] for i in _yaml(K8S / "kustomization.yaml").get("images", [])}
    for spec in _pod_specs():
        for container in spec.get("initContainers", []) + spec["containers"]:
            if container["image"].split("@")[0].rsplit(":", 1)[0] in names:
                yield container


def _configmap_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for cm in _k8s("ConfigMap"):
        env.update({k: str(v) for k, v in cm.get("data", {}).items()})
    return env


def _secret_env() -> dict[str, str]:
    return {k: str(v) for s in _k8s("Secret") for k, v in (s.get("stringData") or {}).items()}


def _k8s_deployment(component: str) -> dict[str, Any]:
    (deployment,) = [d for d in _k8s("Deployment")
                     if d["metadata"]["labels"]["app.kubernetes.io/component"] == component]
    return deployment


def _is_serve(argv: list[str]) -> bool:
    return argv[1:2] == ["serve"]


def _quantity(value: str) -> float:
    """A Kubernetes memory quantity in bytes (enough of the syntax for resource limits)."""
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "k": 10**3, "M": 10**6, "G": 10**9}
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([KMG]i?|k)?", str(value))
    assert match, f"not a memory quantity: {value!r}"
    return float(match.group(1)) * units.get(match.group(2) or "", 1)


# -- Dockerfile --------------------------------------------------------------------------------------------
def _dockerignored(rel: str, patterns: list[str]) -> bool:
    parts = rel.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    ignored = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        p = pattern.lstrip("!").strip("/")
        alternatives = [p, p[3:]] if p.startswith("**/") else [p]
        if any(fnmatch.fnmatchcase(c, a) for c in candidates for a in alternatives):
            ignored = not negate
    return ignored


def test_dockerfile_installs_the_project_as_non_root_with_flywheel_entrypoint() -> None:
    steps = _dockerfile()
    args = {k: v for instr, a in steps if instr == "ARG" and "=" in a for k, v in [a.split("=", 1)]}
    bases = [re.sub(r"\$\{?(\w+)\}?", lambda m: args.get(m.group(1), m.group(0)), a.split()[0])
             for instr, a in steps if instr == "FROM"]
    stages = {a.split()[-1] for instr, a in steps if instr == "FROM" and " as " in a.lower()}
    assert bases and all(b.startswith("python:3.11-slim") or b in stages for b in bases), bases
    assert any(instr == "RUN" and re.search(r"pip install[^&;]*\s\.(\s|$)", a) for instr, a in steps)

    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    entrypoint = [_argv(a) for instr, a in steps if instr == "ENTRYPOINT"][-1]
    assert entrypoint == ["flywheel"] and "flywheel" in pyproject["project"]["scripts"]
    user = [a.split(":")[0] for instr, a in steps if instr == "USER"]
    assert user and user[-1] not in ("root", "0"), "the image must run as a non-root user"

    patterns = [ln.strip() for ln in (ROOT / ".dockerignore").read_text().splitlines()
                if ln.strip() and not ln.strip().startswith("#")]
    copied = set()
    for instr, a in steps:
        if instr not in ("COPY", "ADD") or "--from" in a:
            continue
        for src in [s for s in _argv(a) if not s.startswith("--")][:-1]:
            matches = list(ROOT.glob(src))
            assert matches or any(ch in src for ch in "*?["), f"COPY {src}: no such file"
            for path in matches:
                files = [path] if path.is_file() else [f for f in path.rglob("*") if "__pycache__" not in f.parts]
                for f in files:
                    rel = f.relative_to(ROOT).as_posix()
                    assert not _dockerignored(rel, patterns), f"{rel} is copied but excluded by .dockerignore"
                copied.add(path.relative_to(ROOT).as_posix())
    packages = {p.rstrip("*").rstrip(".") for p in pyproject["tool"]["setuptools"]["packages"]["find"]["include"]}
    assert {"pyproject.toml", *packages} <= copied, "the image build must copy every package pip installs"


# -- docker-compose.yml ------------------------------------------------------------------------------------
def test_compose_references_existing_files_and_volumes() -> None:
    checked = []
    declared = set(_compose().get("volumes") or {})
    for name, svc in _services().items():
        build = svc.get("build")
        if build is not None:
            context = COMPOSE.parent / (build if isinstance(build, str) else build.get("context", "."))
            dockerfile = "Dockerfile" if isinstance(build, str) else build.get("dockerfile", "Dockerfile")
            assert context.is_dir() and (context / dockerfile).is_file(), f"{name}: build {context}/{dockerfile}"
            checked.append(context / dockerfile)
        for volume in svc.get("volumes", []):
            if isinstance(volume, dict):
                kind, source = volume.get("type", "volume"), str(volume.get("source", ""))
            else:
                source = volume.split(":")[0]
                kind = "bind" if source.startswith((".", "/", "~")) else "volume"
            if kind == "bind":
                assert (COMPOSE.parent / source).exists(), f"{name}: mounts missing {source}"
                checked.append(COMPOSE.parent / source)
            elif source:
                assert source in declared, f"{name}: volume {source!r} not declared under top-level volumes"
        for env_file in [svc["env_file"]] if isinstance(svc.get("env_file"), str) else svc.get("env_file", []):
            assert (COMPOSE.parent / str(env_file)).exists(), f"{name}: env_file {env_file} missing"
    assert DOCKERFILE in {p.resolve() for p in checked} and PROMETHEUS in {p.resolve() for p in checked}


def test_compose_depends_on_existing_services_with_satisfiable_conditions() -> None:
    services = _services()
    for name, svc in services.items():
        deps = svc.get("depends_on") or {}
        deps = {d: {"condition": "service_started"} for d in deps} if isinstance(deps, list) else deps
        for target, spec in deps.items():
            assert target in services, f"{name} depends on unknown service {target!r}"
            condition = spec.get("condition", "service_started")
            if condition == "service_healthy":
                assert "healthcheck" in services[target], f"{name} waits for {target} healthy: no healthcheck"
            elif condition == "service_completed_successfully":
                assert services[target].get("restart", "no") == "no", f"{target} is one-shot: restart must be no"
    ingest = [n for n, s in _flywheel_services().items() if _argv_of(s)[1:3] == ["process", "ingest"]]
    assert ingest, "no compose service runs `flywheel process ingest`"
    deps = services[ingest[0]]["depends_on"]
    conditions = {t: deps[t]["condition"] for t in deps}
    one_shot = {n for n, s in _flywheel_services().items() if _argv_of(s)[1:] == ["db", "upgrade"]}
    assert {"service_healthy"} == {conditions[t] for t in ("kafka", "postgres")}
    assert one_shot and all(conditions.get(t) == "service_completed_successfully" for t in one_shot)


def _argv_of(svc: dict[str, Any]) -> list[str]:
    entrypoint = [_argv(a) for instr, a in _dockerfile() if instr == "ENTRYPOINT"][-1]
    if "entrypoint" in svc:
        e = svc["entrypoint"]
        entrypoint = e if isinstance(e, list) else shlex.split(e)
    command = svc.get("command", [])
    return [*entrypoint, *(command if isinstance(command, list) else shlex.split(command))]


def _process_services(command: str) -> list[str]:
    return [n for n, s in _flywheel_services().items() if _argv_of(s)[:3] == ["flywheel", "process", command]]


def _healthcheck_urls(svc: dict[str, Any]) -> list[Any]:
    test = svc["healthcheck"]["test"]
    command = " ".join(test[1:]) if test[0] in ("CMD", "CMD-SHELL") else str(test)
    return [urlsplit(u) for u in re.findall(r"https?://[^'\"\s]+", command)]


def test_compose_connection_settings_point_at_the_kafka_and_postgres_services(
        monkeypatch: pytest.MonkeyPatch) -> None:
    services = _services()
    kafka = services["kafka"]
    kenv = _env(kafka)
    assert kenv["KAFKA_PROCESS_ROLES"] and "controller" in kenv["KAFKA_PROCESS_ROLES"] and kenv["CLUSTER_ID"]
    voters = [v.split("@")[0] for v in kenv["KAFKA_CONTROLLER_QUORUM_VOTERS"].split(",")]
    assert kenv["KAFKA_NODE_ID"] in voters
    protocol_map = dict(e.split(":") for e in kenv["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(","))
    listeners = {e.split("://")[0] for e in kenv["KAFKA_LISTENERS"].split(",")}
    advertised = {e.split("://")[1] for e in kenv["KAFKA_ADVERTISED_LISTENERS"].split(",")}
    assert listeners <= set(protocol_map) and kenv["KAFKA_CONTROLLER_LISTENER_NAMES"] in listeners

    pg = _env(services["postgres"])
    for name, svc in _flywheel_services().items():
        settings = _settings(_effective_env(_env(svc)), monkeypatch)
        assert settings.kafka_bootstrap, f"{name}: compose must use its Kafka, not the embedded broker"
        assert set(settings.kafka_bootstrap.split(",")) <= advertised, f"{name}: bootstrap not advertised"
        assert settings.database_url, f"{name}: FLYWHEEL_DATABASE_URL unset"
        url = urlsplit(settings.database_url.get_secret_value())
        assert url.hostname == "postgres" and (url.port or 5432) == 5432, name
        assert url.username == pg.get("POSTGRES_USER", "postgres") and url.password == pg["POSTGRES_PASSWORD"]
        assert url.path.lstrip("/") == pg.get("POSTGRES_DB", url.username), name


def test_compose_serving_publishes_its_api_reads_artifacts_read_only_and_checks_readiness(
        monkeypatch: pytest.MonkeyPatch) -> None:
    flywheel = _flywheel_services()
    serving = [n for n, s in flywheel.items() if _is_serve(_argv_of(s))]
    assert serving, "no compose service runs `flywheel serve`"
    (name,) = serving
    svc = flywheel[name]
    settings = _settings(_effective_env(_env(svc)), monkeypatch)
    assert settings.metrics_host == "0.0.0.0", "the API binds to FLYWHEEL_METRICS_HOST: unreachable from the host"
    published = [str(p).rsplit(":", 1) for p in svc.get("ports", [])]
    assert [str(settings.serving_port), str(settings.serving_port)] in published, published

    # the trainer's artifact volume, mounted where FLYWHEEL_DATA_DIR points in both, and read-only here
    (trainer,) = [s for s in flywheel.values() if _argv_of(s)[1:3] == ["process", "trainer"]]
    trainer_dir = _settings(_effective_env(_env(trainer)), monkeypatch).data_dir
    trainer_volumes = {v.split(":")[0] for v in trainer["volumes"] if Path(v.split(":")[1]) == trainer_dir}
    mounts = [v.split(":") for v in svc["volumes"]]
    data = [m for m in mounts if Path(m[1]) == settings.data_dir]
    assert data and settings.data_dir == trainer_dir, "serving must see artifacts at the trainer's path"
    assert {m[0] for m in data} <= trainer_volumes
    assert all(len(m) == 3 and "ro" in m[2].split(",") for m in mounts), f"{name}: mount read-only: {mounts}"

    urls = _healthcheck_urls(svc)
    assert urls, f"{name}: healthcheck requests no URL"
    for url in urls:
        assert url.path == "/ready" and url.path in ROUTES, url
        assert url.port == settings.serving_port, url

    deps = svc["depends_on"]
    one_shot = {n for n, s in flywheel.items() if _argv_of(s)[1:] == ["db", "upgrade"]}
    assert one_shot and all(deps[t]["condition"] == "service_completed_successfully" for t in one_shot)
    assert {deps[t]["condition"] for t in ("kafka", "postgres")} == {"service_healthy"}


def test_compose_and_k8s_run_the_schema_registry_for_wire_format_producers(monkeypatch: pytest.MonkeyPatch) -> None:
    """Ingest dead-letters wire-format records whose schema id is unknown: producers need the registry."""
    flywheel = _flywheel_services()
    running = [n for n, s in flywheel.items() if _argv_of(s)[1:] == ["schema-registry"]]
    assert len(running) == 1, f"compose services running `flywheel schema-registry`: {running}"
    svc = flywheel[running[0]]
    settings = _settings(_effective_env(_env(svc)), monkeypatch)
    assert settings.schema_registry_port and settings.metrics_host == "0.0.0.0", "binds to FLYWHEEL_METRICS_HOST"
    published = [str(p).rsplit(":", 1) for p in svc.get("ports", [])]
    assert [str(settings.schema_registry_port)] * 2 in published, published
    urls = _healthcheck_urls(svc)
    assert urls and all(u.port == settings.schema_registry_port and u.path == "/" for u in urls), urls
    deps = svc["depends_on"]
    one_shot = {n for n, s in flywheel.items() if _argv_of(s)[1:] == ["db", "upgrade"]}
    assert deps["postgres"]["condition"] == "service_healthy"
    assert one_shot and all(deps[t]["condition"] == "service_completed_successfully" for t in one_shot)
    assert svc.get("restart") == "unless-stopped"

    k8s_settings = _settings(_effective_env({**_configmap_env(), **_secret_env()}), monkeypatch)
    deployment = _k8s_deployment("schema-registry")
    pod = deployment["spec"]["template"]
    (container,) = pod["spec"]["containers"]
    assert container["args"] == ["schema-registry"] and "command" not in container
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"http": k8s_settings.schema_registry_port} and k8s_settings.metrics_host == "0.0.0.0"
    for probe in ("readinessProbe", "livenessProbe"):
        handler = container[probe].get("httpGet") or container[probe]["tcpSocket"]
        assert handler["port"] in ("http", k8s_settings.schema_registry_port), probe
    (service,) = [s for s in _k8s("Service") if s["spec"]["selector"].items() <= pod["metadata"]["labels"].items()]
    assert [p["targetPort"] for p in service["spec"]["ports"]] == ["http"]


@pytest.mark.parametrize("command", PROCESS_COMMANDS)
def test_compose_runs_each_process_once_with_a_metrics_healthcheck(monkeypatch: pytest.MonkeyPatch,
                                                                    command: str) -> None:
    services = _process_services(command)
    assert len(services) == 1, f"`flywheel process {command}`: compose services {services} (want exactly one)"
    (name,) = services
    svc = _services()[name]
    settings = _settings(_effective_env(_env(svc)), monkeypatch)
    assert settings.metrics_port and settings.metrics_host == "0.0.0.0", f"{name}: /metrics unreachable"
    assert str(settings.metrics_port) in [str(p) for p in svc.get("expose", [])], f"{name}: metrics port not exposed"
    urls = _healthcheck_urls(svc)
    assert urls, f"{name}: healthcheck requests no URL"
    assert all(u.path == "/metrics" and u.port == settings.metrics_port for u in urls), urls
    deps = svc["depends_on"]
    assert {t for t, d in deps.items() if d["condition"] == "service_healthy"} >= {"kafka", "postgres"}, name
    one_shot = {n for n, s in _flywheel_services().items() if _argv_of(s)[1:2] in (["db"], ["topics"])}
    assert one_shot and all(deps[t]["condition"] == "service_completed_successfully" for t in one_shot), name
    assert svc.get("restart") == "unless-stopped", name


def test_compose_mlflow_ui_serves_the_platform_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    """The MLflow UI runs the launcher in its command: it must open the registry every Flywheel process
    opens (same backend store) and serve the trainer's artifacts from the same absolute path."""
    flywheel = _flywheel_services()
    assert "mlflow" in flywheel, "the MLflow UI must run the Flywheel image: the MLflow version the platform pins"
    svc = flywheel["mlflow"]
    argv = _argv_of(svc)
    assert argv[:2] == ["python", "-c"] and len(argv) == 3, argv
    settings = _settings(_effective_env(_env(svc)), monkeypatch)
    (trainer,) = [flywheel[n] for n in _process_services("trainer")]
    trainer_settings = _settings(_effective_env(_env(trainer)), monkeypatch)
    assert settings.data_dir == trainer_settings.data_dir

    # run the launcher with the registry and exec stubbed: what would the server get?
    opened, execs = [], []
    with monkeypatch.context() as m:
        for key in os.environ:
            if key.upper().startswith(PREFIX) or key.startswith("MLFLOW_"):
                m.delenv(key)
        for key, value in _effective_env(_env(svc)).items():
            m.setenv(key, value)
        m.setenv("MLFLOW_BACKEND_STORE_URI", "")  # the launcher sets it: undone with the context
        m.setattr(registry, "open_from_settings", lambda s, db: opened.append((s, db)))
        m.setattr(os, "execvp", lambda file, args: execs.append((file, args, dict(os.environ))))
        exec(compile(argv[2], "docker-compose.yml:mlflow", "exec"), {})
    ((file, args, env),), ((_, database),) = execs, opened
    assert file == "mlflow" and args[:2] == ["mlflow", "server"], args
    trainer_db = trainer_settings.database_url.get_secret_value() if trainer_settings.database_url else None
    assert database == trainer_db
    backend = registry.registry_backend(trainer_settings, database)
    assert env["MLFLOW_BACKEND_STORE_URI"] == backend, "not the platform's registry store"
    assert not any("password" in a or "postgresql" in a for a in args), "credentials in argv"

    go_offline()  # before MLflow's first import: no telemetry client
    from mlflow.cli import server  # the exec'd command line is one mlflow accepts

    ctx = server.make_context("server", list(args[2:]))
    assert ctx.params["default_artifact_root"] == registry.artifact_root(trainer_settings).as_uri()
    assert ctx.params["serve_artifacts"] is False, "artifacts are file: URIs read from the mounted volume"
    port = ctx.params["port"]

    trainer_volumes = {v.split(":")[0] for v in trainer["volumes"]
                       if Path(v.split(":")[1]) == trainer_settings.data_dir}
    mounts = [v.split(":") for v in svc["volumes"]]
    assert [m[1] for m in mounts if m[0] in trainer_volumes] == [str(settings.data_dir)], mounts
    assert all(len(m) == 3 and "ro" in m[2].split(",") for m in mounts), f"mlflow: mount read-only: {mounts}"
    assert [str(port), str(port)] in [str(p).rsplit(":", 1) for p in svc.get("ports", [])]
    urls = _healthcheck_urls(svc)
    assert urls and all(u.path == "/health" and u.port == port for u in urls), urls
    deps = svc["depends_on"]
    assert deps["postgres"]["condition"] == "service_healthy"
    assert deps["migrate"]["condition"] == "service_completed_successfully"


# -- FLYWHEEL_* variables and commands ---------------------------------------------------------------------
def _env_sources() -> dict[str, set[str]]:
    k8s: set[str] = set()
    for _, doc in _k8s_docs():
        if doc.get("kind") in ("ConfigMap", "Secret"):
            k8s |= set(doc.get("data") or {}) | set(doc.get("stringData") or {})
    for spec in _pod_specs():
        for container in spec.get("initContainers", []) + spec["containers"]:
            k8s |= {e["name"] for e in container.get("env", [])}
    compose = {k for svc in _services().values() for k in _env(svc)}
    return {"docker-compose.yml": compose, "deploy/k8s": k8s, "Dockerfile": set(_dockerfile_env())}


@pytest.mark.parametrize("source", ["docker-compose.yml", "deploy/k8s", "Dockerfile"])
def test_every_flywheel_variable_is_a_settings_field(source: str) -> None:
    used = {k for k in _env_sources()[source] if k.upper().startswith(PREFIX)}
    assert used, f"{source} sets no {PREFIX}* variable"
    assert not used - SETTINGS_ENV, f"{source}: not fields of FlywheelSettings: {sorted(used - SETTINGS_ENV)}"
    if source == "docker-compose.yml":  # Flywheel containers are configured through FLYWHEEL_* only
        for name, svc in _flywheel_services().items():
            assert all(k.startswith(PREFIX) for k in _env(svc)), f"{name}: non-{PREFIX} variables"


def test_settings_accept_the_shipped_values(monkeypatch: pytest.MonkeyPatch) -> None:
    for svc in _flywheel_services().values():
        _settings(_effective_env(_env(svc)), monkeypatch)
    settings = _settings(_effective_env({**_configmap_env(), **_secret_env()}), monkeypatch)
    assert settings.kafka_bootstrap and settings.database_url and settings.admin_token


def test_secret_settings_live_in_the_secret_only() -> None:
    assert {"FLYWHEEL_DATABASE_URL", "FLYWHEEL_ADMIN_TOKEN"} <= SECRET_ENV
    in_configmaps = {k for cm in _k8s("ConfigMap") for k in cm.get("data") or {}}
    assert not SECRET_ENV & in_configmaps, f"secrets in a ConfigMap: {sorted(SECRET_ENV & in_configmaps)}"
    literal = {e["name"] for c in _flywheel_containers() for e in c.get("env", []) if "value" in e}
    assert not SECRET_ENV & literal, f"secrets as literal env values: {sorted(SECRET_ENV & literal)}"
    assert {"FLYWHEEL_DATABASE_URL", "FLYWHEEL_ADMIN_TOKEN"} <= set(_secret_env())


def _cli_error(argv: list[str]) -> str | None:
    if argv[:1] != ["flywheel"]:
        return f"{argv}: not the flywheel entrypoint"
    cmd: Any = typer.main.get_command(app)
    path, rest = ["flywheel"], argv[1:]
    while hasattr(cmd, "get_command"):  # a group
        if not rest:
            return f"{argv}: {' '.join(path)} is a command group, not a command"
        sub = cmd.get_command(cmd.context_class(cmd), rest[0])
        if sub is None:
            return f"{argv}: no command {rest[0]!r} in {' '.join(path)}"
        cmd, path, rest = sub, [*path, rest.pop(0)], rest
    try:
        cmd.make_context(" ".join(path), list(rest))
    except CLICK_EXCEPTION as exc:
        return f"{argv}: {exc.format_message()}"
    result = CliRunner().invoke(app, [*argv[1:], "--help"])
    return None if result.exit_code == 0 else f"{argv}: --help exited {result.exit_code}"


def test_every_flywheel_command_exists() -> None:
    entrypoint = [_argv(a) for instr, a in _dockerfile() if instr == "ENTRYPOINT"][-1]
    flywheel = _flywheel_services()
    # the image serves one thing besides the flywheel CLI: the MLflow UI (its own test)
    assert {n for n, s in flywheel.items() if _argv_of(s)[:1] != ["flywheel"]} <= {"mlflow"}
    commands = [_argv_of(svc) for svc in flywheel.values() if _argv_of(svc)[:1] == ["flywheel"]]
    commands += [[*(c.get("command") or entrypoint), *c.get("args", [])] for c in _flywheel_containers()]
    assert len(commands) >= 5, commands  # compose migrate/topics/ingest + k8s job/deployment
    errors = [e for argv in commands if (e := _cli_error(argv))]
    assert not errors, errors
    assert _cli_error(["flywheel", "process", "ingest", "--no-such-option"])  # the check can fail
    assert _cli_error(["flywheel", "db"])


# -- Prometheus --------------------------------------------------------------------------------------------
def _targets(scrape: dict[str, Any]) -> Iterator[tuple[str, int]]:
    for static in scrape.get("static_configs", []):
        for target in static["targets"]:
            host, port = target.rsplit(":", 1)
            yield host, int(port)
    for dns in scrape.get("dns_sd_configs", []):
        for name in dns["names"]:
            yield name, int(dns["port"])


def test_prometheus_scrapes_each_service_on_its_metrics_port(monkeypatch: pytest.MonkeyPatch) -> None:
    """Processes serve /metrics on FLYWHEEL_METRICS_PORT; `flywheel serve` on its API port (a route of the
    app). Both bind to FLYWHEEL_METRICS_HOST."""
    flywheel = _flywheel_services()
    scraped = set()
    for scrape in _yaml(PROMETHEUS)["scrape_configs"]:
        for host, port in _targets(scrape):
            if host in ("localhost", "127.0.0.1"):
                continue
            assert host in _services(), f"{scrape['job_name']}: {host} is not a compose service"
            if host in flywheel:
                settings = _settings(_effective_env(_env(flywheel[host])), monkeypatch)
                path = scrape.get("metrics_path", "/metrics")
                if _is_serve(_argv_of(flywheel[host])):
                    assert port == settings.serving_port, f"{host}: scraped on {port}, API on {settings.serving_port}"
                    assert path in ROUTES, f"{host}: {path} is not a route of the serving app"
                else:
                    assert settings.metrics_port == port, f"{host}: scraped on {port}, serves {settings.metrics_port}"
                    assert path == "/metrics", f"{host}: {path}"
                assert settings.metrics_host == "0.0.0.0", f"{host}: /metrics bound to {settings.metrics_host}"
                scraped.add(host)
    for command in PROCESS_COMMANDS:
        assert set(_process_services(command)) <= scraped, f"`flywheel process {command}` is not scraped"
    assert any(_is_serve(_argv_of(flywheel[h])) for h in scraped), "serving is not scraped"


def test_prometheus_rule_files_exist_and_are_mounted() -> None:
    prometheus = _services()["prometheus"]
    flags = dict(f.split("=", 1) for f in prometheus.get("command", []) if "=" in f)
    config_in_container = Path(flags.get("--config.file", "/etc/prometheus/prometheus.yml"))
    mounts = {(COMPOSE.parent / v.split(":")[0]).resolve(): Path(v.split(":")[1])
              for v in prometheus["volumes"] if isinstance(v, str) and v.startswith(".")}
    assert mounts.get(PROMETHEUS) == config_in_container
    rule_files = _yaml(PROMETHEUS).get("rule_files") or []
    assert rule_files
    for rule_file in rule_files:
        local = (PROMETHEUS.parent / rule_file).resolve()
        assert local.is_file(), f"rule file {rule_file} missing"
        assert mounts.get(local) == config_in_container.parent / rule_file, f"{rule_file} not mounted"


def test_promql_parser_finds_metrics_and_labels() -> None:
    metrics, labels = promql('sum by (group) (rate(a_total{reason!="x"}[5m])) / on (group) group_left '
                             'max(b) > 1e3 and c offset 5m')
    assert metrics == {"a_total", "b", "c"} and labels == {"group", "reason"}
    metrics, labels = promql('histogram_quantile(0.95, sum by (le) (rate(d_bucket{route=~"$route"}[$__rate_interval])))'
                             ' or vector(0)')
    assert metrics == {"d_bucket"} and labels == {"le", "route"}
    assert unknown_references("rate(flywheel_no_such_total[5m])", exported()) == ["metric flywheel_no_such_total"]


def _alert_rules() -> Iterator[dict[str, Any]]:
    prometheus = _yaml(PROMETHEUS)
    for rule_file in prometheus.get("rule_files") or []:
        for group in _yaml(PROMETHEUS.parent / rule_file)["groups"]:
            yield from group["rules"]


def test_alerts_use_only_exported_metrics_and_their_labels() -> None:
    series = {**exported(), **SYNTHETIC}
    rules = list(_alert_rules())
    names = [r.get("alert") or r.get("record") for r in rules]
    assert len(names) == len(set(names)), "alert names must be unique"
    used: set[str] = set()
    for rule in rules:
        name = rule.get("alert") or rule.get("record")
        assert name and rule.get("expr"), rule
        if "alert" in rule:
            assert rule["labels"]["severity"] in ("info", "warning", "critical"), name
            assert rule["annotations"]["summary"], name
            assert re.fullmatch(r"(\d+[smhdw])+", str(rule.get("for", "0s"))), name
        problems = unknown_references(str(rule["expr"]), series)
        assert not problems, f"{name}: not exported by the code: {problems}"
        used |= promql(str(rule["expr"]))[0]
    # the conditions operators are paged for (docs/operations.md lists the rules)
    assert used >= {
        "flywheel_stream_lag", "flywheel_stream_dead_letters_total", "flywheel_drift_alerts_total",
        "flywheel_drift_domain_auc", "flywheel_canary_actions_total", "flywheel_serving_ready",
        "flywheel_training_runs_total", "flywheel_serving_events_dropped_total", "up",
    }, "an alert family is missing"


def test_alert_expressions_filter_on_label_values_the_code_uses() -> None:
    """``route`` values are the serving app's routes; the other filters name values the code sets."""
    values = {"route": set(ROUTES) | {"other"}, "action": {"promote", "retire", "rollback", "retrain"},
              "result": {"done", "busy", "error"}, "outcome": {"curated", "idle", "busy", "failed"},
              "status": {"skipped", "busy", "promoted", "canary", "refused", "failed"}}
    for rule in _alert_rules():
        for label, op, value in re.findall(r'(\w+)\s*(=~|=)\s*"([^"]*)"', str(rule["expr"])):
            if label in values:
                wanted = set(value.split("|")) if op == "=~" else {value}
                assert wanted <= values[label], f"{rule.get('alert')}: {label}{op}{value!r}"


# -- Kubernetes --------------------------------------------------------------------------------------------
def test_kustomization_lists_every_manifest() -> None:
    kustomization = _yaml(K8S / "kustomization.yaml")
    listed = kustomization["resources"]
    manifests = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    examples = {m for m in manifests if m.endswith(".example.yaml")}
    assert sorted(listed) == sorted(manifests - examples), "kustomization resources out of date"
    assert all((K8S / f).is_file() for f in listed)
    # examples hold placeholders: `kubectl apply -k` must never overwrite a real Secret with them
    assert examples and not examples & set(listed)
    namespaces = {doc["metadata"]["name"] for doc in _k8s("Namespace")}
    assert namespaces == {kustomization["namespace"]}
    for file, doc in _k8s_docs():
        if doc["kind"] not in ("Namespace", "Kustomization"):
            assert doc["metadata"].get("namespace") in namespaces, f"{file}: {doc['kind']} namespace"


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl not installed")
def test_kustomization_renders() -> None:
    out = subprocess.run(["kubectl", "kustomize", str(K8S)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    kinds = {doc["kind"] for doc in yaml.safe_load_all(out.stdout) if doc}
    assert kinds == {"Namespace", "ConfigMap", "Job", "Deployment", "Service", "PersistentVolumeClaim"}


@pytest.mark.parametrize("component", PROCESS_COMMANDS)
def test_k8s_processor_metrics_port_probes_and_service_agree(monkeypatch: pytest.MonkeyPatch, component: str) -> None:
    """One Deployment per ``flywheel process X``; ingest scales out, the single-flight ones run one replica."""
    settings = _settings(_effective_env({**_configmap_env(), **_secret_env()}), monkeypatch)
    assert settings.metrics_port and settings.metrics_host == "0.0.0.0"
    running = [d for d in _k8s("Deployment")
               if [c.get("args") for c in d["spec"]["template"]["spec"]["containers"]] == [["process", component]]]
    assert len(running) == 1, f"`flywheel process {component}`: {len(running)} Deployments (want exactly one)"
    (deployment,) = running
    assert deployment["metadata"]["labels"]["app.kubernetes.io/component"] == component
    pod = deployment["spec"]["template"]
    (container,) = pod["spec"]["containers"]
    replicas = deployment["spec"]["replicas"]
    assert container["args"] == ["process", component] and "command" not in container
    assert replicas == 1 if component in SINGLE_FLIGHT else replicas >= 2, f"{component}: {replicas} replicas"
    ports = {p.get("name"): p["containerPort"] for p in container["ports"]}
    assert ports["metrics"] == settings.metrics_port
    for probe in ("readinessProbe", "livenessProbe"):
        handler = container[probe].get("httpGet") or container[probe]["tcpSocket"]
        assert handler["port"] in ("metrics", settings.metrics_port), probe
    assert pod["spec"]["terminationGracePeriodSeconds"] >= 30
    assert {"requests", "limits"} <= set(container["resources"])

    (service,) = [s for s in _k8s("Service") if s["spec"]["selector"].items() <= pod["metadata"]["labels"].items()]
    targets = [p["targetPort"] for p in service["spec"]["ports"]]
    assert any(t in ("metrics", settings.metrics_port) for t in targets)
    annotations = service["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert int(annotations["prometheus.io/port"]) == settings.metrics_port


def test_k8s_trainer_keeps_artifacts_on_the_shared_claim(monkeypatch: pytest.MonkeyPatch) -> None:
    claims = {d["metadata"]["name"]: d for d in _k8s("PersistentVolumeClaim")}
    (trainer,) = [d for d in _k8s("Deployment") if d["metadata"]["labels"]["app.kubernetes.io/component"] == "trainer"]
    spec = trainer["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in spec["volumes"]}
    (container,) = spec["containers"]
    data_dir = _settings(_effective_env(_configmap_env()), monkeypatch).data_dir
    mount = next(m for m in container["volumeMounts"] if Path(m["mountPath"]) == data_dir)
    claim = volumes[mount["name"]]["persistentVolumeClaim"]["claimName"]
    assert claim in claims and "ReadWriteMany" in claims[claim]["spec"]["accessModes"]


def test_k8s_serving_probes_routes_ports_and_mounts_artifacts_read_only(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = _settings(_effective_env({**_configmap_env(), **_secret_env()}), monkeypatch)
    assert settings.metrics_host == "0.0.0.0", "`flywheel serve` binds the API to FLYWHEEL_METRICS_HOST"
    deployment = _k8s_deployment("serving")
    pod = deployment["spec"]["template"]
    spec = pod["spec"]
    (container,) = spec["containers"]
    assert container["args"] == ["serve"] and deployment["spec"]["replicas"] >= 2
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"http": settings.serving_port}
    for probe, route in (("readinessProbe", "/ready"), ("livenessProbe", "/health")):
        handler = container[probe]["httpGet"]
        assert handler["path"] == route and route in ROUTES, f"{probe}: {handler['path']}"
        assert handler["port"] in ("http", settings.serving_port), probe
    limits, requests = container["resources"]["limits"], container["resources"]["requests"]
    assert _quantity(requests["memory"]) <= _quantity(limits["memory"]) <= 2 * 2**30
    assert _quantity(limits["memory"]) >= 2**29, "MiniLM needs room: at least 512Mi"
    assert spec["terminationGracePeriodSeconds"] >= 10

    # the trainer's claim at the trainer's path (FLYWHEEL_DATA_DIR), read-only in the container and the volume
    volumes = {v["name"]: v for v in spec["volumes"]}
    claims = {d["metadata"]["name"]: d for d in _k8s("PersistentVolumeClaim")}
    trainer = _k8s_deployment("trainer")["spec"]["template"]["spec"]
    trainer_claims = {v["persistentVolumeClaim"]["claimName"] for v in trainer["volumes"]
                      if "persistentVolumeClaim" in v}
    mounts = [m for m in container["volumeMounts"] if "persistentVolumeClaim" in volumes[m["name"]]]
    assert [Path(m["mountPath"]) for m in mounts] == [settings.data_dir]
    for mount in mounts:
        source = volumes[mount["name"]]["persistentVolumeClaim"]
        assert mount.get("readOnly") is True and source.get("readOnly") is True, "artifacts must be mounted read-only"
        assert source["claimName"] in trainer_claims and source["claimName"] in claims
        # replicas land on several nodes: only a ReadWriteMany (or ReadOnlyMany) claim can follow them
        assert {"ReadWriteMany", "ReadOnlyMany"} & set(claims[source["claimName"]]["spec"]["accessModes"])
    if container["securityContext"].get("readOnlyRootFilesystem"):
        assert any(m["mountPath"] == "/tmp" and "emptyDir" in volumes[m["name"]] for m in container["volumeMounts"])

    (service,) = [s for s in _k8s("Service") if s["spec"]["selector"].items() <= pod["metadata"]["labels"].items()]
    assert service["spec"].get("type", "ClusterIP") == "ClusterIP" and service["spec"].get("clusterIP") != "None"
    assert [(p["port"], p["targetPort"]) for p in service["spec"]["ports"]] == [(80, "http")]
    annotations = service["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true" and annotations["prometheus.io/path"] in ROUTES
    assert int(annotations["prometheus.io/port"]) == settings.serving_port


def test_k8s_pods_reference_existing_config_and_run_as_the_image_user() -> None:
    configmaps = {d["metadata"]["name"] for d in _k8s("ConfigMap")}
    secrets = {d["metadata"]["name"] for d in _k8s("Secret")}
    image_user = [a.split(":")[0] for instr, a in _dockerfile() if instr == "USER"][-1]
    containers = list(_flywheel_containers())
    assert containers
    for container in containers:
        for source in container.get("envFrom", []):
            if "configMapRef" in source:
                assert source["configMapRef"]["name"] in configmaps
            if "secretRef" in source:
                assert source["secretRef"]["name"] in secrets
    for spec in _pod_specs():
        context = spec.get("securityContext", {})
        assert context.get("runAsNonRoot") is True and str(context.get("runAsUser")) == image_user
