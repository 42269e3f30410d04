"""How to reach a Kafka cluster: servers, security protocol, SASL credentials, TLS files.

:class:`KafkaConnection` is a frozen value built once at an entry point (from the settings, see
:meth:`core.settings.FlywheelSettings.kafka_connection`) and passed down to everything that makes a
Kafka client. It becomes librdkafka configuration in one place, :meth:`KafkaConnection.client_config`.
Secrets (SASL password, TLS key password) are :class:`pydantic.SecretStr`: ``repr``/``str`` of a
connection never show them; only ``client_config()`` holds them in clear (hand it to a client, never log it).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import SecretStr

from core.exceptions import ConfigError

SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]
SECURITY_PROTOCOLS: tuple[SecurityProtocol, ...] = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
SASL_MECHANISMS: tuple[SaslMechanism, ...] = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")

# (field, librdkafka property) of the TLS files, in the order they are checked and emitted
_TLS_FILES = (("ssl_ca_location", "ssl.ca.location"), ("ssl_certificate_location", "ssl.certificate.location"),
              ("ssl_key_location", "ssl.key.location"))


@dataclass(frozen=True, kw_only=True)
class KafkaConnection:
    """Where the brokers are and how to authenticate to them; validated on construction
    (:class:`ConfigError` names the inconsistent field). ``PLAINTEXT`` with only ``bootstrap_servers`` is
    the embedded broker's (and a plain local cluster's) connection."""

    bootstrap_servers: str
    security_protocol: str = "PLAINTEXT"  # one of SECURITY_PROTOCOLS (any case)
    sasl_mechanism: str | None = None  # one of SASL_MECHANISMS (any case)
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_ca_location: Path | None = None
    ssl_certificate_location: Path | None = None
    ssl_key_location: Path | None = None
    ssl_key_password: SecretStr | None = None
    client_id: str | None = None

    def __post_init__(self) -> None:
        servers = [s.strip() for s in self.bootstrap_servers.split(",") if s.strip()]
        if not servers:
            raise ConfigError("Kafka bootstrap servers are empty (FLYWHEEL_KAFKA_BOOTSTRAP)")
        bad = [s for s in servers if not _host_port(s)]
        if bad:
            raise ConfigError(f"Kafka bootstrap servers must be host:port, comma-separated; got {', '.join(bad)}")
        object.__setattr__(self, "bootstrap_servers", ",".join(servers))
        protocol = _choice("security protocol (FLYWHEEL_KAFKA_SECURITY_PROTOCOL)", self.security_protocol,
                           SECURITY_PROTOCOLS, dash=False)
        object.__setattr__(self, "security_protocol", protocol)
        if self.sasl_mechanism is not None:
            mechanism = _choice("SASL mechanism (FLYWHEEL_KAFKA_SASL_MECHANISM)", self.sasl_mechanism,
                                SASL_MECHANISMS, dash=True)
            object.__setattr__(self, "sasl_mechanism", mechanism)
        self._check_sasl()
        self._check_tls()

    def _check_sasl(self) -> None:
        given = [name for name, value in (("FLYWHEEL_KAFKA_SASL_MECHANISM", self.sasl_mechanism),
                                          ("FLYWHEEL_KAFKA_SASL_USERNAME", self.sasl_username),
                                          ("FLYWHEEL_KAFKA_SASL_PASSWORD", self.sasl_password)) if value is not None]
        if not self.uses_sasl:
            if given:
                raise ConfigError(f"{' / '.join(given)} set but the security protocol is {self.security_protocol}: "
                                  "use SASL_SSL (or SASL_PLAINTEXT) to authenticate with SASL")
            return
        missing = [name for name, value in (
            ("FLYWHEEL_KAFKA_SASL_MECHANISM", self.sasl_mechanism),
            ("FLYWHEEL_KAFKA_SASL_USERNAME", self.sasl_username),
            ("FLYWHEEL_KAFKA_SASL_PASSWORD", self.sasl_password.get_secret_value() if self.sasl_password else None),
        ) if not value]
        if missing:
            raise ConfigError(f"security protocol {self.security_protocol} needs {' / '.join(missing)}")

    def _check_tls(self) -> None:
        given = [name for name, _prop in _TLS_FILES if getattr(self, name) is not None]
        if self.ssl_key_password is not None:
            given.append("ssl_key_password")
        if not self.uses_tls:
            if given:
                names = " / ".join(f"FLYWHEEL_KAFKA_{n.upper()}" for n in given)
                raise ConfigError(f"{names} set but the security protocol is {self.security_protocol} (no TLS): "
                                  "use SSL or SASL_SSL")
            return
        for name, _prop in _TLS_FILES:
            path: Path | None = getattr(self, name)
            if path is not None and not path.is_file():
                raise ConfigError(f"FLYWHEEL_KAFKA_{name.upper()}: no such file: {path}")
        if (self.ssl_certificate_location is None) != (self.ssl_key_location is None):
            raise ConfigError("a TLS client certificate needs its key and the other way round "
                              "(FLYWHEEL_KAFKA_SSL_CERTIFICATE_LOCATION and FLYWHEEL_KAFKA_SSL_KEY_LOCATION)")
        if self.ssl_key_password is not None and self.ssl_key_location is None:
            raise ConfigError("FLYWHEEL_KAFKA_SSL_KEY_PASSWORD set without FLYWHEEL_KAFKA_SSL_KEY_LOCATION")

    @property
    def uses_sasl(self) -> bool:
        return self.security_protocol in ("SASL_PLAINTEXT", "SASL_SSL")

    @property
    def uses_tls(self) -> bool:
        return self.security_protocol in ("SSL", "SASL_SSL")

    def client_config(self) -> dict[str, str]:
        """The librdkafka properties of this connection, secrets in clear: give it to a client, never log
        it. Every consumer, producer and admin client config starts from it."""
        config = {"bootstrap.servers": self.bootstrap_servers, "security.protocol": self.security_protocol}
        if self.client_id is not None:
            config["client.id"] = self.client_id
        if self.uses_sasl:
            assert self.sasl_mechanism and self.sasl_username and self.sasl_password  # checked on construction
            config.update({"sasl.mechanism": self.sasl_mechanism, "sasl.username": self.sasl_username,
                           "sasl.password": self.sasl_password.get_secret_value()})
        for name, prop in _TLS_FILES:
            path: Path | None = getattr(self, name)
            if path is not None:
                config[prop] = str(path)
        if self.ssl_key_password is not None:
            config["ssl.key.password"] = self.ssl_key_password.get_secret_value()
        return config

    def with_bootstrap(self, bootstrap_servers: str) -> KafkaConnection:
        """The same security settings towards other servers."""
        return dataclasses.replace(self, bootstrap_servers=bootstrap_servers)

    def __str__(self) -> str:
        auth = f", {self.sasl_mechanism} as {self.sasl_username}" if self.uses_sasl else ""
        return f"{self.bootstrap_servers} ({self.security_protocol}{auth})"

    def __repr__(self) -> str:
        shown = [f"bootstrap_servers={self.bootstrap_servers!r}", f"security_protocol={self.security_protocol!r}"]
        for field in dataclasses.fields(self)[2:]:
            value = getattr(self, field.name)
            if value is not None:  # SecretStr shows as '**********'
                shown.append(f"{field.name}={value!r}")
        return f"KafkaConnection({', '.join(shown)})"


def _host_port(server: str) -> bool:
    host, sep, port = server.rpartition(":")
    return bool(sep and host and port.isdigit() and 0 < int(port) < 65536)


def _choice(what: str, value: str, allowed: tuple[str, ...], *, dash: bool) -> str:
    """``value`` as one of ``allowed``; case and ``-``/``_`` do not matter (``sasl_ssl``, ``scram_sha_512``)."""
    text = str(value).strip().upper()
    normalised = text.replace("_", "-") if dash else text.replace("-", "_")
    if normalised not in allowed:
        raise ConfigError(f"unknown Kafka {what}: {value!r}; one of {', '.join(allowed)}")
    return normalised
