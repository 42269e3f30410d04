"""The one error root of Flywheel, and the errors every layer shares.

Every error Flywheel raises on purpose derives from :class:`FlywheelError`; each package adds its own
subtree in its ``exceptions.py`` and translates third-party errors (confluent-kafka, psycopg, MLflow,
SQLAlchemy) at its boundary (``raise OurError(...) from exc``). The whole tree (``tests/test_exceptions.py``
checks that it names every class, and each name once)::

    FlywheelError
    ├── ConfigError                      settings or a YAML config are inconsistent (core)
    ├── ServiceUnavailable               a service did not answer; ``retry_after`` (core)
    │   ├── DatabaseUnavailable          Postgres
    │   └── KafkaUnavailable             the Kafka-protocol broker; ``bootstrap``
    ├── StackError                       a local service could not be started or stopped (flywheel)
    ├── SchemaError                      (schemas)
    │   ├── DecodeError                  a record is not a valid event; ``reason`` names why
    │   ├── InvalidEvent                 an event cannot be built from the given fields (also a ValueError)
    │   └── SchemaRegistryError          the schema registry refuses a request; Confluent ``error_code``
    │       ├── SubjectNotFound, VersionNotFound, SchemaNotFound, SubjectConfigNotFound
    │       ├── SubjectSoftDeleted, SubjectNotSoftDeleted, VersionSoftDeleted, VersionNotSoftDeleted
    │       ├── IncompatibleSchema, InvalidSchema, InvalidVersion, InvalidCompatibilityLevel, InvalidSubject
    │       └── SchemaStoreError, ServerStartError
    ├── TaskError                        (tasks: model specs and task contracts)
    │   ├── SpecError                    a model spec is invalid or names what does not exist
    │   ├── UnknownModel                 no model of that name is declared; ``name``
    │   └── InputRejected                an input breaks its model's contract; ``reason``, ``detail``
    ├── StreamError                      (streams)
    │   ├── DeliveryError                a produced record was not acknowledged; ``topic``, ``permanent``
    │   ├── OffsetGap                    a batch would skip records; ``topic``, ``partition``
    │   └── TopicAdminError              ``topic``
    ├── KindError                        (kinds: the model-kind contract)
    │   ├── NotFitted, UnknownLabel, EncoderError, EmbeddingCacheError
    │   ├── BaseModelError               a generator's base model cannot be prepared or loaded; ``name``
    │   └── ArtifactError                a saved model cannot be loaded; ``path``
    │       ├── TamperedArtifact         its bytes differ from the sha256 recorded; ``model``, ``version``
    │       └── EncoderMismatch
    ├── CurationError                    (curation)
    │   └── CurationStoreError, ToxicityError
    ├── RegistryError                    (registry)
    │   ├── RegistryStoreError           MLflow's store failed; ``code``
    │   ├── DeployRecordError            the data-to-deploy tables could not be read or written
    │   ├── NoSuchVersion                ``model``, ``ref``
    │   │   ├── NoChampion
    │   │   └── NoPrevious
    │   └── InvalidRequest
    │       └── ChampionChanged          a promotion or rollback decided on a champion since replaced
    ├── TrainerError                     (trainer)
    │   ├── DialogueDataError            (trainer.dialogue_data)
    │   ├── FitWorkerError               (trainer.fitpool: a fit worker died or hung; the run fails)
    │   └── GateError                    (trainer.gates)
    │       └── GateConfigError, BehaviourSuiteError, ArtifactWriteError
    └── ServingError                     (serving: each carries its HTTP ``status`` and ``code``)
        ├── InvalidInput, NotReady, QueueFull, Unauthorized, AdminDisabled, NotFound, Conflict, Unavailable
        ├── WrongTask, Overloaded, GenerationTimeout, GenerationFailed   (text generation)
        ├── ModelLoadError
        │   └── ChecksumMismatch
        └── BatcherClosed                (serving.batching)

A tampered artifact is always :class:`kinds.TamperedArtifact`, whoever finds it; the registry fills in
the model and version it belongs to.
"""

from __future__ import annotations


class FlywheelError(Exception):
    """Base of every error Flywheel raises on purpose."""


class ConfigError(FlywheelError):
    """The settings are inconsistent or point at something that does not exist."""


class ServiceUnavailable(FlywheelError):
    """A service Flywheel depends on did not answer; ``retry_after`` says when trying again makes sense."""

    def __init__(self, message: str, retry_after: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class DatabaseUnavailable(ServiceUnavailable):
    """Postgres could not be reached."""

    def __init__(self, detail: str, retry_after: float = 1.0) -> None:
        super().__init__(f"Postgres is unreachable: {detail}", retry_after)
        self.detail = detail


class KafkaUnavailable(ServiceUnavailable):
    """The Kafka-protocol broker did not answer (``bootstrap`` names it when known)."""

    def __init__(self, detail: str, retry_after: float = 1.0, *, bootstrap: str | None = None) -> None:
        where = f" at {bootstrap}" if bootstrap else ""
        super().__init__(f"Kafka{where} is unavailable: {detail}", retry_after)
        self.detail = detail
        self.bootstrap = bootstrap
