"""``*Public`` views of the runtime and the registry (what GET /models shows)."""

from __future__ import annotations

import re

from registry import ModelRegistry, RegistryError
from serving.models import (
    DeploymentPublic,
    LoadedPublic,
    LoadErrorPublic,
    ModelsPublic,
    ReadyPublic,
    VersionPublic,
)
from serving.runtime import LoadedModel, Runtime

_URL = re.compile(r"\b[a-z][a-z0-9+.-]*://\S+", re.IGNORECASE)
_ABSOLUTE = re.compile(r"(?<![\w.~-])/(?:[^\s/'\":,;)]+/)+([^\s/'\":,;)]+)")


def without_paths(text: str) -> str:
    """``text`` with URLs (file URIs, database URLs with their credentials) and absolute paths taken out:
    a path keeps its last component, so the file named stays recognisable."""
    return _ABSOLUTE.sub(r"\1", _URL.sub("<url>", text))


def loaded_public(model: LoadedModel | None) -> LoadedPublic | None:
    if model is None:
        return None
    served = model.served
    return LoadedPublic(version=served.version, semver=served.semver, kind=served.kind, loaded_at=model.loaded_at,
                        load_ms=round(model.load_ms, 2))


def deployment_public(runtime: Runtime) -> DeploymentPublic:
    d, err = runtime.deployment, runtime.last_error
    return DeploymentPublic(
        ready=d.ready, champion=loaded_public(d.champion), canary=loaded_public(d.canary),
        canary_traffic=d.canary_traffic, shadow=loaded_public(d.shadow), generation=d.generation,
        last_error=None if err is None else LoadErrorPublic(version=err.version, detail=without_paths(err.detail),
                                                            at=err.at),
        fallback_for=None if d.fallback is None else d.fallback.version)


def ready_public(runtime: Runtime) -> ReadyPublic | None:
    """``ready``, or ``degraded`` (with the reason) when a fallback answers for the announced champion;
    None when no champion is loaded."""
    d = runtime.deployment
    if d.champion is None:
        return None
    if d.fallback is None:
        return ReadyPublic(status="ready")
    return ReadyPublic(status="degraded", detail=f"serving version {d.champion.version} in place of the announced "
                        f"champion {d.fallback.version}: {without_paths(d.fallback.detail)}")


def models_public(model: str, registry: ModelRegistry, runtime: Runtime) -> ModelsPublic:
    versions: list[VersionPublic] = []
    aliases: dict[str, str] = {}
    problem = None
    try:
        versions = [VersionPublic(version=v.version, semver=v.semver, kind=v.kind, aliases=list(v.aliases),
                                  created_at=v.created_at) for v in registry.versions()]
        aliases = registry.aliases()
    except RegistryError as exc:
        problem = without_paths(str(exc))
    return ModelsPublic(model=model, versions=versions, aliases=aliases, registry_error=problem,
                        deployment=deployment_public(runtime))
