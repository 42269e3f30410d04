"""KafkaConnection: validation, the one librdkafka config it produces, secrets never shown, and the
settings (environment) -> connection path.

The embedded broker (Tansu 0.6.0) cannot run an authenticating cluster for a test (see
docs/operations.md, "Connecting to a secured cluster"), so SASL/TLS is covered here at the config
level: every protocol x mechanism combination, checked by librdkafka itself (a client is built from
each config), plus one test against the real plaintext broker showing a SASL client is refused fast."""

from __future__ import annotations

import datetime
import itertools
import logging
import re
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Producer
from pydantic import SecretStr

from core.exceptions import ConfigError
from core.kafka import SASL_MECHANISMS, SECURITY_PROTOCOLS, KafkaConnection
from core.settings import FlywheelSettings
from streams import kafka
from streams.exceptions import KafkaUnavailable

PASSWORD = "hunter2-very-secret"
KEY_PASSWORD = "key-pass-also-secret"


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A self-signed CA certificate, a client certificate and its encrypted key (PEM), as a cluster
    operator would hand them out."""
    crypto = pytest.importorskip("cryptography")
    del crypto
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    root = tmp_path_factory.mktemp("tls")
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "flywheel-test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now)
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    files = {"ca": root / "ca.pem", "cert": root / "client.pem", "key": root / "client.key"}
    files["ca"].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    files["cert"].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    files["key"].write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(KEY_PASSWORD.encode())))
    return files


def _connection(protocol: str, mechanism: str | None, tls: dict[str, Path] | None) -> KafkaConnection:
    sasl = protocol.startswith("SASL")
    with_tls = tls is not None and protocol in ("SSL", "SASL_SSL")
    return KafkaConnection(
        bootstrap_servers="b1.example.com:9092, b2.example.com:9092", security_protocol=protocol,
        sasl_mechanism=mechanism if sasl else None, sasl_username="svc-flywheel" if sasl else None,
        sasl_password=SecretStr(PASSWORD) if sasl else None,
        ssl_ca_location=tls["ca"] if with_tls and tls else None,
        ssl_certificate_location=tls["cert"] if with_tls and tls else None,
        ssl_key_location=tls["key"] if with_tls and tls else None,
        ssl_key_password=SecretStr(KEY_PASSWORD) if with_tls else None)


COMBINATIONS = [(p, None) for p in ("PLAINTEXT", "SSL")] + list(
    itertools.product(("SASL_PLAINTEXT", "SASL_SSL"), SASL_MECHANISMS))


@pytest.mark.parametrize(("protocol", "mechanism"), COMBINATIONS)
def test_every_protocol_and_mechanism_gives_the_expected_librdkafka_config(
        protocol: str, mechanism: str | None, tls_files: dict[str, Path]) -> None:
    conn = _connection(protocol, mechanism, tls_files)
    expected = {"bootstrap.servers": "b1.example.com:9092,b2.example.com:9092", "security.protocol": protocol}
    if mechanism is not None:
        expected |= {"sasl.mechanism": mechanism, "sasl.username": "svc-flywheel", "sasl.password": PASSWORD}
    if protocol in ("SSL", "SASL_SSL"):
        expected |= {"ssl.ca.location": str(tls_files["ca"]), "ssl.certificate.location": str(tls_files["cert"]),
                     "ssl.key.location": str(tls_files["key"]), "ssl.key.password": KEY_PASSWORD}
    assert conn.client_config() == expected
    # every client config starts from it; the role's own keys are added, the connection's kept
    consumer = kafka.consumer_config(conn, "g1")
    producer = kafka.producer_config(conn, **{"linger.ms": 20})
    assert {k: consumer[k] for k in expected} == expected and consumer["group.id"] == "g1"
    assert {k: producer[k] for k in expected} == expected and producer["linger.ms"] == 20
    # librdkafka itself accepts the combination (unknown property, value or unreadable TLS file: it raises)
    Producer(producer).flush(0)
    Consumer(consumer).close()


@pytest.mark.parametrize(("protocol", "mechanism"), COMBINATIONS)
def test_secrets_never_appear_in_repr_str_or_logs(
        protocol: str, mechanism: str | None, tls_files: dict[str, Path], caplog: pytest.LogCaptureFixture) -> None:
    conn = _connection(protocol, mechanism, tls_files)
    with caplog.at_level(logging.DEBUG):
        logging.getLogger("test").info("connecting with %s / %r", conn, conn)
    for text in (repr(conn), str(conn), caplog.text):
        assert PASSWORD not in text and KEY_PASSWORD not in text
    assert "b1.example.com:9092" in repr(conn) and protocol in str(conn)
    if mechanism is not None:
        assert "**********" in repr(conn) and f"{mechanism} as svc-flywheel" in str(conn)


def test_names_are_normalised() -> None:
    conn = KafkaConnection(bootstrap_servers="k:9092", security_protocol="sasl_plaintext",
                           sasl_mechanism="scram_sha_512", sasl_username="u", sasl_password=SecretStr("p"))
    assert (conn.security_protocol, conn.sasl_mechanism) == ("SASL_PLAINTEXT", "SCRAM-SHA-512")
    assert KafkaConnection(bootstrap_servers="k:9092", security_protocol="ssl").security_protocol == "SSL"
    assert set(SECURITY_PROTOCOLS) == {"PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"}


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"security_protocol": "SASL_SSL"},
     "SASL_SSL needs FLYWHEEL_KAFKA_SASL_MECHANISM / FLYWHEEL_KAFKA_SASL_USERNAME / FLYWHEEL_KAFKA_SASL_PASSWORD"),
    ({"security_protocol": "SASL_SSL", "sasl_mechanism": "PLAIN", "sasl_username": "u"},
     "SASL_SSL needs FLYWHEEL_KAFKA_SASL_PASSWORD"),
    ({"security_protocol": "SASL_PLAINTEXT", "sasl_username": "u", "sasl_password": SecretStr("p")},
     "needs FLYWHEEL_KAFKA_SASL_MECHANISM"),
    ({"security_protocol": "SASL_SSL", "sasl_mechanism": "PLAIN", "sasl_username": "u", "sasl_password": SecretStr("")},
     "needs FLYWHEEL_KAFKA_SASL_PASSWORD"),
    ({"sasl_username": "u", "sasl_password": SecretStr("p")}, "set but the security protocol is PLAINTEXT"),
    ({"security_protocol": "SSL", "sasl_mechanism": "PLAIN"}, "set but the security protocol is SSL"),
    ({"security_protocol": "TLS"}, "unknown Kafka security protocol"),
    ({"security_protocol": "SASL_SSL", "sasl_mechanism": "GSSAPI", "sasl_username": "u",
      "sasl_password": SecretStr("p")},
     "SASL mechanism (FLYWHEEL_KAFKA_SASL_MECHANISM): 'GSSAPI'; one of PLAIN, SCRAM-SHA-256, SCRAM-SHA-512"),
    ({"bootstrap_servers": " , "}, "bootstrap servers are empty"),
    ({"bootstrap_servers": "broker1"}, "must be host:port"),
    ({"bootstrap_servers": "b1:9092,b2:port"}, "got b2:port"),
])
def test_inconsistent_connections_are_refused_with_a_clear_error(kwargs: dict[str, object], message: str) -> None:
    args: dict[str, object] = {"bootstrap_servers": "k:9092", **kwargs}
    with pytest.raises(ConfigError, match=re.escape(message)) as info:
        KafkaConnection(**args)  # type: ignore[arg-type]
    assert "secret" not in str(info.value)


def test_tls_files_must_exist_and_fit_the_protocol(tmp_path: Path, tls_files: dict[str, Path]) -> None:
    missing = tmp_path / "nope.pem"
    with pytest.raises(ConfigError, match=f"FLYWHEEL_KAFKA_SSL_CA_LOCATION: no such file: {missing}"):
        KafkaConnection(bootstrap_servers="k:9093", security_protocol="SSL", ssl_ca_location=missing)
    with pytest.raises(ConfigError, match="FLYWHEEL_KAFKA_SSL_KEY_LOCATION: no such file"):
        KafkaConnection(bootstrap_servers="k:9093", security_protocol="SSL", ssl_certificate_location=tls_files["cert"],
                        ssl_key_location=tmp_path)  # a directory is no key file
    with pytest.raises(ConfigError, match="certificate needs its key"):
        KafkaConnection(bootstrap_servers="k:9093", security_protocol="SSL",
                        ssl_certificate_location=tls_files["cert"])
    with pytest.raises(ConfigError, match="KEY_PASSWORD set without"):
        KafkaConnection(bootstrap_servers="k:9093", security_protocol="SSL", ssl_key_password=SecretStr("x"))
    with pytest.raises(ConfigError, match=r"SSL_CA_LOCATION set but the security protocol is SASL_PLAINTEXT \(no"):
        KafkaConnection(bootstrap_servers="k:9093", security_protocol="SASL_PLAINTEXT", sasl_mechanism="PLAIN",
                        sasl_username="u", sasl_password=SecretStr("p"), ssl_ca_location=tls_files["ca"])
    # a CA alone is fine (server verification only); no CA = the system's store
    ca_only = KafkaConnection(bootstrap_servers="k:9093", security_protocol="SSL", ssl_ca_location=tls_files["ca"])
    assert ca_only.client_config()["ssl.ca.location"] == str(tls_files["ca"])
    assert "ssl.ca.location" not in KafkaConnection(bootstrap_servers="k:9093", security_protocol="SSL").client_config()


def test_the_connection_is_a_frozen_value() -> None:
    conn = KafkaConnection(bootstrap_servers="k:9092", client_id="flywheel-ingest")
    with pytest.raises(AttributeError):
        conn.bootstrap_servers = "other:9092"  # type: ignore[misc]
    assert conn == KafkaConnection(bootstrap_servers="k:9092", client_id="flywheel-ingest")
    assert conn.client_config() == {"bootstrap.servers": "k:9092", "security.protocol": "PLAINTEXT",
                                    "client.id": "flywheel-ingest"}
    moved = conn.with_bootstrap("elsewhere:9092")
    assert moved.bootstrap_servers == "elsewhere:9092" and moved.client_id == "flywheel-ingest"


# -- settings (environment) -> connection ----------------------------------------------------------------------

def _clear_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.startswith("FLYWHEEL_"):
            monkeypatch.delenv(name)


def test_settings_build_the_connection_from_the_environment(
        monkeypatch: pytest.MonkeyPatch, tls_files: dict[str, Path]) -> None:
    _clear_env(monkeypatch)
    for name, value in {
        "FLYWHEEL_KAFKA_BOOTSTRAP": "pkc-abc.eu-west-1.aws.confluent.cloud:9092",
        "FLYWHEEL_KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "FLYWHEEL_KAFKA_SASL_MECHANISM": "PLAIN",
        "FLYWHEEL_KAFKA_SASL_USERNAME": "APIKEY123", "FLYWHEEL_KAFKA_SASL_PASSWORD": PASSWORD,
        "FLYWHEEL_KAFKA_SSL_CA_LOCATION": str(tls_files["ca"]),
    }.items():
        monkeypatch.setenv(name, value)
    settings = FlywheelSettings()
    assert settings.kafka_secured and PASSWORD not in repr(settings)
    conn = settings.kafka_connection()
    assert conn.client_config() == {
        "bootstrap.servers": "pkc-abc.eu-west-1.aws.confluent.cloud:9092", "security.protocol": "SASL_SSL",
        "sasl.mechanism": "PLAIN", "sasl.username": "APIKEY123", "sasl.password": PASSWORD,
        "ssl.ca.location": str(tls_files["ca"])}
    # the same security towards servers only known later (a running platform's broker)
    assert settings.kafka_connection("other:9092").client_config()["bootstrap.servers"] == "other:9092"


def test_settings_scram_with_mutual_tls_from_the_environment(
        monkeypatch: pytest.MonkeyPatch, tls_files: dict[str, Path]) -> None:
    _clear_env(monkeypatch)
    monkeypatch.setenv("FLYWHEEL_KAFKA_BOOTSTRAP", "b-1.msk.example:9096,b-2.msk.example:9096")
    monkeypatch.setenv("FLYWHEEL_KAFKA_SECURITY_PROTOCOL", "sasl_ssl")
    monkeypatch.setenv("FLYWHEEL_KAFKA_SASL_MECHANISM", "scram-sha-512")
    monkeypatch.setenv("FLYWHEEL_KAFKA_SASL_USERNAME", "flywheel")
    monkeypatch.setenv("FLYWHEEL_KAFKA_SASL_PASSWORD", PASSWORD)
    monkeypatch.setenv("FLYWHEEL_KAFKA_SSL_CERTIFICATE_LOCATION", str(tls_files["cert"]))
    monkeypatch.setenv("FLYWHEEL_KAFKA_SSL_KEY_LOCATION", str(tls_files["key"]))
    monkeypatch.setenv("FLYWHEEL_KAFKA_SSL_KEY_PASSWORD", KEY_PASSWORD)
    conn = FlywheelSettings().kafka_connection()
    assert (conn.security_protocol, conn.sasl_mechanism) == ("SASL_SSL", "SCRAM-SHA-512")
    assert conn.client_config()["ssl.key.password"] == KEY_PASSWORD
    assert KEY_PASSWORD not in repr(conn) and PASSWORD not in repr(conn)


def test_settings_errors_name_the_variable(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    _clear_env(monkeypatch)
    with pytest.raises(ConfigError, match="set FLYWHEEL_KAFKA_BOOTSTRAP"):
        FlywheelSettings().kafka_connection()
    monkeypatch.setenv("FLYWHEEL_KAFKA_BOOTSTRAP", "k:9092")
    assert FlywheelSettings().kafka_connection() == KafkaConnection(bootstrap_servers="k:9092")
    assert not FlywheelSettings().kafka_secured
    monkeypatch.setenv("FLYWHEEL_KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("FLYWHEEL_KAFKA_SASL_MECHANISM", "PLAIN")
    with pytest.raises(ConfigError, match="needs FLYWHEEL_KAFKA_SASL_USERNAME / FLYWHEEL_KAFKA_SASL_PASSWORD"):
        FlywheelSettings().kafka_connection()
    monkeypatch.setenv("FLYWHEEL_KAFKA_SASL_USERNAME", "u")
    monkeypatch.setenv("FLYWHEEL_KAFKA_SASL_PASSWORD", "p")
    monkeypatch.setenv("FLYWHEEL_KAFKA_SSL_CA_LOCATION", str(tmp_path / "missing-ca.pem"))
    with pytest.raises(ConfigError, match="FLYWHEEL_KAFKA_SSL_CA_LOCATION: no such file"):
        FlywheelSettings().kafka_connection()


# -- against the real (plaintext) broker -------------------------------------------------------------------

def test_a_sasl_client_is_refused_by_a_plaintext_broker_with_a_clear_error(kafka_bootstrap: str) -> None:
    """The embedded broker does not speak SASL without --authentication: a SASL connection to it is
    refused, and the caller gets KafkaUnavailable naming the servers (not a hang, not a raw KafkaException)."""
    conn = KafkaConnection(bootstrap_servers=kafka_bootstrap, security_protocol="SASL_PLAINTEXT",
                           sasl_mechanism="SCRAM-SHA-256", sasl_username="u", sasl_password=SecretStr(PASSWORD))
    with pytest.raises(KafkaUnavailable) as info:
        kafka.cluster_id(conn, timeout=3.0)
    assert info.value.bootstrap == kafka_bootstrap and PASSWORD not in str(info.value)
    assert kafka.cluster_id(KafkaConnection(bootstrap_servers=kafka_bootstrap))  # plaintext: answered
