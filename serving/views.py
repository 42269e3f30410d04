"""``*Public`` views of the runtime and the registry (what GET /models shows)."""

from __future__ import annotations

from registry import ModelRegistry, RegistryError
from serving.models import DeploymentPublic, LoadedPublic, LoadErrorPublic, ModelsPublic, VersionPublic
from serving.runtime import LoadedModel, Runtime


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
        last_error=None if err is None else LoadErrorPublic(version=err.version, detail=err.detail, at=err.at))


def models_public(model: str, registry: ModelRegistry, runtime: Runtime) -> ModelsPublic:
    versions: list[VersionPublic] = []
    aliases: dict[str, str] = {}
    problem = None
    try:
        versions = [VersionPublic(version=v.version, semver=v.semver, kind=v.kind, aliases=list(v.aliases),
                                  created_at=v.created_at) for v in registry.versions()]
        aliases = registry.aliases()
    except RegistryError as exc:
        problem = str(exc)
    return ModelsPublic(model=model, versions=versions, aliases=aliases, registry_error=problem,
                        deployment=deployment_public(runtime))
