"""Errors of the ``registry`` package. MLflow's exceptions are translated at the boundary
(:mod:`registry.mlflow_registry`) into these; each carries the model and version it is about. A
version whose bytes changed raises :class:`kinds.TamperedArtifact` (one class for every finder of it),
with its model and version filled in; it is re-exported here."""


from __future__ import annotations

from core.exceptions import FlywheelError
from kinds.exceptions import TamperedArtifact

__all__ = ["ChampionChanged", "DeployRecordError", "InvalidRequest", "NoChampion", "NoPrevious", "NoSuchVersion",
           "RegistryError", "RegistryStoreError", "TamperedArtifact"]


class RegistryError(FlywheelError):
    """Base of the registry package's errors."""


class RegistryStoreError(RegistryError):
    """The MLflow store failed or refused a request; ``code`` is MLflow's error code when it gave one
    (``TEMPORARILY_UNAVAILABLE`` means trying again later makes sense)."""

    def __init__(self, detail: str, code: str | None = None) -> None:
        super().__init__(detail if code is None else f"{detail} [{code}]")
        self.code = code


class DeployRecordError(RegistryError):
    """The data-to-deploy tables (:mod:`registry.deploys`) could not be read or written; ``model`` and
    ``version`` say whose record."""

    def __init__(self, model: str, version: str | None, detail: str) -> None:
        super().__init__(f"model {model!r}{f' version {version}' if version else ''}: {detail}")
        self.model = model
        self.version = version


class NoSuchVersion(RegistryError):
    """``ref`` (an MLflow version number, a semver or an alias) names no version of ``model``."""

    def __init__(self, model: str, ref: object, detail: str = "no such version") -> None:
        super().__init__(f"model {model!r}: {detail}: {ref!r}")
        self.model = model
        self.ref = ref


class NoChampion(NoSuchVersion):
    """The model has no ``champion`` alias yet (nothing was ever promoted)."""

    def __init__(self, model: str) -> None:
        super().__init__(model, "champion", "no champion")


class NoPrevious(NoSuchVersion):
    """A rollback without a target, but no ``previous`` alias to roll back to."""

    def __init__(self, model: str) -> None:
        super().__init__(model, "previous", "no previous champion to roll back to")


class InvalidRequest(RegistryError):
    """A request the registry's rules refuse: the champion as its own challenger, a rollback to the
    champion, editing an identity tag, deleting an aliased version, a manifest that contradicts the
    ``kind``/``labels`` given."""

    def __init__(self, model: str, detail: str) -> None:
        super().__init__(f"model {model!r}: {detail}")
        self.model = model


class ChampionChanged(InvalidRequest):
    """A promotion or rollback decided about one champion found another in its place (an alias moved in
    between): refused, so that a version is never rolled back for what its predecessor did, nor replaced by a
    candidate that was never compared with it."""

    def __init__(self, model: str, expected: str | None, current: str | None, action: str) -> None:
        now = "there is no champion now" if current is None else f"the champion is now version {current}"
        was = (f"but there was none when the {action} was decided" if expected is None
               else f"not version {expected} that the {action} was decided on")
        super().__init__(model, f"{now}, {was}")
        self.expected = expected
        self.current = current
