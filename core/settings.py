"""The one settings object. Only entry points build it (from the environment); code receives it."""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from core.exceptions import ConfigError
from core.kafka import KafkaConnection


class Topics:
    """Topic names derived from the configured prefix; ``.v1`` is the schema major version."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.feedback = f"{prefix}.feedback.v1"
        self.predictions = f"{prefix}.predictions.v1"
        self.dlq = f"{prefix}.dlq.v1"
        self.landed = f"{prefix}.landed.v1"
        self.curated = f"{prefix}.curated.v1"
        self.models = f"{prefix}.models.v1"
        self.retrain = f"{prefix}.retrain.v1"

    def all(self) -> list[str]:
        return [self.feedback, self.predictions, self.dlq, self.landed, self.curated, self.models,
                self.retrain]

    def __repr__(self) -> str:
        return f"Topics(prefix={self.prefix!r})"


class FlywheelSettings(BaseSettings):
    """Frozen configuration, read from ``FLYWHEEL_*`` variables by entry points only."""

    model_config = SettingsConfigDict(env_prefix="FLYWHEEL_", frozen=True, extra="ignore")

    kafka_bootstrap: str | None = Field(
        default=None, description="Kafka bootstrap servers; unset = start the embedded broker."
    )
    kafka_port: int = Field(
        default=9092, ge=0, le=65535,
        description="Port of the embedded broker, the same across restarts; 0 = a free port at each start.")
    broker_storage: Literal["durable", "memory"] = Field(
        default="durable",
        description="Embedded broker log: `durable` (in the data dir, survives stops and crashes) or `memory`.")
    broker_fsync: bool = Field(
        default=False,
        description="Durable broker: fsync every write before acknowledging it (survives a machine crash too).")
    drain_timeout_s: float = Field(
        default=10.0, ge=0,
        description="On stop, how long `flywheel up` lets ingest land what the broker holds before stopping it.")
    kafka_security_protocol: str = Field(
        default="PLAINTEXT",
        description="PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL (never applied to the embedded broker).")
    kafka_sasl_mechanism: str | None = Field(
        default=None, description="PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512; needed by the SASL protocols.")
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    kafka_ssl_ca_location: Path | None = Field(
        default=None, description="CA bundle (PEM) to verify the brokers; unset = the system's CA store.")
    kafka_ssl_certificate_location: Path | None = Field(
        default=None, description="Client certificate (PEM) for mutual TLS; with the key.")
    kafka_ssl_key_location: Path | None = Field(default=None, description="Client private key (PEM) for mutual TLS.")
    kafka_ssl_key_password: SecretStr | None = None
    database_url: SecretStr | None = Field(
        default=None, description="Postgres URL; unset = the pgserver wheel in the data dir."
    )
    topic_prefix: str = Field(default="flywheel", pattern=r"^[A-Za-z0-9._-]{1,100}$")
    topic_partitions: int = Field(default=4, ge=1, le=1024)
    data_dir: Path = Field(default=Path(".flywheel"))

    batch_max_records: int = Field(default=5000, ge=1, le=1_000_000)
    batch_max_wait_ms: int = Field(default=200, ge=1, le=60_000)
    session_timeout_ms: int = Field(default=6000, ge=1000)
    sink_writers: int = Field(default=4, ge=1, le=32, description="Parallel Postgres writers per processor.")

    labels: Annotated[tuple[str, ...], NoDecode] = ("negative", "neutral", "positive")
    max_text_chars: int = Field(default=5000, ge=1)
    max_future_skew_s: float = Field(default=300.0, ge=0)
    orphan_timeout_s: float = Field(default=300.0, ge=0)
    orphan_sweep_interval_s: float = Field(default=5.0, gt=0)

    db_retry_initial_s: float = Field(default=0.2, gt=0)
    db_retry_max_s: float = Field(default=5.0, gt=0)

    model_name: str = Field(default="sentiment", pattern=r"^[A-Za-z0-9._-]{1,100}$",
                            description="Registered model name; key of its promotion events.")
    registry_uri: SecretStr | None = Field(
        default=None, description="MLflow backend store; unset = the platform Postgres (schema mlflow).")
    bootstrap_data: Path | None = Field(
        default=None, description="Labelled CSV `flywheel up` trains the first champion from when there is none.")
    run_trainer: bool = Field(default=True, description="`flywheel up` runs the trainer consumer too.")
    trainer_config: Path | None = Field(
        default=None, description="YAML with the default model's training policy and gates; unset = built-in defaults.")
    models_config: Path | None = Field(
        default=None, description="YAML declaring more models (`models: [spec, ...]`: name, task, labels, features, "
                                  "kinds, training); stored in Postgres at start. docs/models.md.")
    serve_models: Annotated[tuple[str, ...], NoDecode] = Field(
        default=(), description="Models a serving pod hosts (comma-separated); unset = every declared model.")
    models_refresh_s: float = Field(
        default=10.0, ge=0, description="How often a serving pod looks for models declared since it started, "
                                        "to host them without a restart (0: only at start).")

    curation_config: Path | None = Field(
        default=None, description="YAML of the curation thresholds (near-duplicates, label quality, trust).")
    drift_config: Path | None = Field(
        default=None, description="YAML of the drift monitor (window, thresholds, alerting signals).")
    canary_config: Path | None = Field(
        default=None, description="YAML of the canary controller and champion watchdog; unset = defaults.")
    serving_port: int = Field(default=8000, ge=0, le=65535, description="HTTP port of `flywheel serve`.")
    admin_token: SecretStr | None = Field(
        default=None, description="Bearer token of the serving API's admin routes; unset = admin routes off.")
    predict_batch_max: int = Field(default=32, ge=1, le=1024,
                                   description="Most texts one micro-batch of a batching kind (minilm) encodes.")
    predict_batch_wait_ms: float = Field(default=2.0, ge=0, le=1000,
                                         description="How long a micro-batch waits for more requests.")
    predict_batch_workers: int = Field(default=2, ge=1, le=64,
                                       description="Micro-batches (minilm) a pod encodes at the same time.")
    embedding_cache_entries: int = Field(default=50_000, ge=0, description="LRU embeddings kept per pod.")
    predict_fast_path: bool = Field(default=True, description=(
        "Answer well-formed single-item predict requests before FastAPI's middleware and router (the same "
        "answer, less CPU a request); false sends every request through FastAPI."))
    generate_max_tokens: int = Field(default=256, ge=1, le=4096,
                                     description="Most new tokens one /generate request may ask for.")
    generate_workers: int = Field(default=1, ge=1, le=16, description=(
        "Generations a pod runs at once (they share one base model whose forward passes are serialised)."))
    generate_queue: int = Field(default=8, ge=0, le=10_000, description=(
        "Generation requests that may wait for a worker; one more is refused with 429 and Retry-After."))
    generate_timeout_s: float = Field(default=30.0, gt=0, le=3600, description=(
        "Deadline of one /generate request from arrival (queue wait included)."))
    generate_threads: int = Field(default=0, ge=0, le=64, description=(
        "Intra-op torch threads of one generation's forward passes in a pod: 0 = every core the pod may run on, "
        "fewer when other processes kept cores busy since its last generation; N = N (at most its cores). "
        "Training and the trainer's gates keep one."))
    encoder_runtime: Literal["onnx", "torch"] = Field(
        default="onnx", description="How a pod runs the MiniLM encoder: the ONNX graph an fp32 minilm-head "
                                    "artifact ships (onnxruntime, no torch import) or torch.")
    encoder_threads: int = Field(default=1, ge=1, le=64,
                                 description="Intra-op threads of each encoder call in a pod (per batch worker).")

    metrics_port: int = Field(default=9400, ge=0, le=65535, description="0 = do not serve /metrics.")
    metrics_host: str = Field(default="127.0.0.1", description="Address /metrics binds to; 0.0.0.0 in containers.")
    schema_registry_port: int = Field(default=8081, ge=0, le=65535)

    @field_validator("labels", "serve_models", mode="before")
    @classmethod
    def _split_labels(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    @field_validator("labels")
    @classmethod
    def _labels_not_empty(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if len(value) < 2 or len(set(value)) != len(value):
            raise ValueError("labels needs at least two distinct labels")
        return value

    def kafka_connection(self, bootstrap: str | None = None) -> KafkaConnection:
        """The connection these settings describe, towards ``bootstrap`` (default ``kafka_bootstrap``: the
        embedded broker's address is only known once it runs). Raises :class:`ConfigError` when the
        security settings are inconsistent or a TLS file does not exist. Entry points call it once."""
        servers = bootstrap or self.kafka_bootstrap
        if not servers:
            raise ConfigError("no Kafka bootstrap servers: set FLYWHEEL_KAFKA_BOOTSTRAP")
        return KafkaConnection(
            bootstrap_servers=servers, security_protocol=self.kafka_security_protocol,
            sasl_mechanism=self.kafka_sasl_mechanism, sasl_username=self.kafka_sasl_username,
            sasl_password=self.kafka_sasl_password, ssl_ca_location=self.kafka_ssl_ca_location,
            ssl_certificate_location=self.kafka_ssl_certificate_location,
            ssl_key_location=self.kafka_ssl_key_location, ssl_key_password=self.kafka_ssl_key_password)

    @property
    def kafka_secured(self) -> bool:
        """Whether any Kafka security setting is given (they never apply to the embedded broker)."""
        return self.kafka_security_protocol.strip().upper() != "PLAINTEXT" or any(
            v is not None for v in (self.kafka_sasl_mechanism, self.kafka_sasl_username, self.kafka_sasl_password,
                                    self.kafka_ssl_ca_location, self.kafka_ssl_certificate_location,
                                    self.kafka_ssl_key_location, self.kafka_ssl_key_password))

    @cached_property
    def topics(self) -> Topics:
        return Topics(self.topic_prefix)
