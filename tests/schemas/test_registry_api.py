"""The registry's REST API on both stores (one conformance suite: the in-memory fake must behave like
Postgres), plus Postgres-only checks: concurrent registration, error translation, the migration."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import psycopg
import pytest
from fastapi.testclient import TestClient

import schemas.registry as registry
from schemas.events import FeedbackEvent
from schemas.registry import (
    CompatibilityChecker,
    CompatibilityLevel,
    MemorySchemaStore,
    PostgresSchemaStore,
    RegistryServer,
    Schema,
    SchemaStore,
    SchemaStoreError,
    ServerStartError,
    create_app,
)

CT = "application/vnd.schemaregistry.v1+json"
V1: dict[str, Any] = {"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"]}
V2: dict[str, Any] = {
    **V1,
    "properties": {**V1["properties"], "b": {"type": "integer"}},
}  # new optional field
BREAKING: dict[str, Any] = {**V2, "required": ["a", "b"]}


def body(schema: Any, schema_type: str | None = "JSON", **extra: Any) -> dict[str, Any]:
    out = {"schema": schema if isinstance(schema, str) else json.dumps(schema), **extra}
    if schema_type is not None:
        out["schemaType"] = schema_type
    return out


@pytest.fixture(params=["memory", "postgres"])
def store(request: pytest.FixtureRequest) -> Iterator[SchemaStore]:
    if request.param == "memory":
        yield MemorySchemaStore()
        return
    with PostgresSchemaStore(request.getfixturevalue("db_url")) as pg:
        yield pg


@pytest.fixture
def client(store: SchemaStore) -> TestClient:
    return TestClient(create_app(store))


def register(client: TestClient, subject: str, schema: Any, **query: Any) -> int:
    response = client.post(f"/subjects/{subject}/versions", json=body(schema), params=query)
    assert response.status_code == 200, response.text
    return int(response.json()["id"])


def error(response: Any, status: int, code: int) -> str:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == CT
    payload = response.json()
    assert payload["error_code"] == code, payload
    return str(payload["message"])


# -- registration and ids ------------------------------------------------------------------------------
def test_register_ids_are_global_and_stable(client: TestClient) -> None:
    first = register(client, "a-value", V1)
    assert register(client, "a-value", V1) == first  # identical: same id, no new version
    assert register(client, "b-value", V1) == first  # same schema under another subject: same id
    spaced = json.dumps(V1, indent=4)
    assert register(client, "c-value", spaced) == first  # whitespace does not make a new schema
    second = register(client, "a-value", V2)
    assert second != first
    assert client.get("/subjects/a-value/versions").json() == [1, 2]
    assert client.get("/subjects").json() == ["a-value", "b-value", "c-value"]
    assert client.get(f"/schemas/ids/{first}/versions").json() == [
        {"subject": "a-value", "version": 1},
        {"subject": "b-value", "version": 1},
        {"subject": "c-value", "version": 1},
    ]
    assert client.get(f"/schemas/ids/{first}/subjects").json() == ["a-value", "b-value", "c-value"]


def test_content_types(client: TestClient) -> None:
    raw = json.dumps(body(V1))
    for content_type in (CT, "application/json"):
        response = client.post("/subjects/s/versions", content=raw, headers={"Content-Type": content_type})
        assert response.status_code == 200 and response.headers["content-type"] == CT
    assert client.get("/schemas/types").json() == ["AVRO", "JSON", "PROTOBUF"]


def test_incompatible_and_invalid_schemas(client: TestClient) -> None:
    register(client, "s", V1)
    message = error(client.post("/subjects/s/versions", json=body(BREAKING)), 409, 409)
    assert "property 'b' is required by the new schema but not by version 1" in message
    assert error(client.post("/subjects/s/versions", json=body("{not json")), 422, 42201)
    assert error(client.post("/subjects/s/versions", json=body({"type": 12})), 422, 42201)
    assert error(client.post("/subjects/s/versions", json=body(V1, "XML")), 422, 42201)
    refs = [{"name": "other.json", "subject": "nope", "version": 1}]
    assert "reference" in error(
        client.post("/subjects/s/versions", json=body(V2, references=refs)), 422, 42201
    )
    assert error(client.post("/subjects/s/versions", json={"schemaType": "JSON"}), 422, 422)
    assert client.get("/subjects/s/versions").json() == [1]


def test_normalize_and_references(client: TestClient) -> None:
    schema_id = register(client, "s", json.dumps(V1, indent=2), normalize="true")
    stored = client.get(f"/schemas/ids/{schema_id}/schema").text
    assert stored == json.dumps(V1, sort_keys=True, separators=(",", ":"))
    refs = [{"name": "s.json", "subject": "s", "version": 1}]
    response = client.post("/subjects/t/versions", json=body(V2, references=refs))
    assert response.status_code == 200
    assert client.get("/subjects/t/versions/1").json()["references"] == refs


def test_avro_and_protobuf_are_stored(client: TestClient) -> None:
    avro = '{"type": "record", "name": "A", "fields": [{"name": "x", "type": "int"}]}'
    avro_id = client.post("/subjects/avro/versions", json=body(avro, None)).json()["id"]
    assert client.get(f"/schemas/ids/{avro_id}").json() == {"schema": avro, "schemaType": "AVRO"}
    other = '{"type": "record", "name": "A", "fields": []}'
    assert error(client.post("/subjects/avro/versions", json=body(other, "AVRO")), 409, 409)
    proto = 'syntax = "proto3";\nmessage A { int32 x = 1; }'
    assert client.post("/subjects/proto/versions", json=body(proto, "PROTOBUF")).status_code == 200


# -- lookup and reads ----------------------------------------------------------------------------------
def test_lookup(client: TestClient) -> None:
    schema_id = register(client, "s", V1)
    found = client.post("/subjects/s", json=body(json.dumps(V1, indent=1)), params={"normalize": "False"})
    assert found.json() == {
        "subject": "s",
        "version": 1,
        "id": schema_id,
        "schema": json.dumps(V1),
        "schemaType": "JSON",
    }
    assert error(client.post("/subjects/missing", json=body(V1)), 404, 40401)
    assert error(client.post("/subjects/s", json=body(V2)), 404, 40403)


def test_versions_and_schemas_by_id(client: TestClient) -> None:
    first, second = register(client, "s", V1), register(client, "s", V2)
    latest = client.get("/subjects/s/versions/latest").json()
    assert latest["version"] == 2 and latest["id"] == second
    assert client.get("/subjects/s/versions/-1").json() == latest
    assert client.get("/subjects/s/versions/1").json()["id"] == first
    assert json.loads(client.get("/subjects/s/versions/2/schema").text) == V2
    assert error(client.get("/subjects/s/versions/3"), 404, 40402)
    assert error(client.get("/subjects/nope/versions/1"), 404, 40401)
    assert error(client.get("/subjects/nope/versions"), 404, 40401)
    for bad in ("abc", "0", "-2", str(2**31)):
        assert error(client.get(f"/subjects/s/versions/{bad}"), 422, 42202)
    assert client.get(f"/schemas/ids/{first}").json() == {"schema": json.dumps(V1), "schemaType": "JSON"}
    assert json.loads(client.get(f"/schemas/ids/{second}/schema").text) == V2
    assert error(client.get("/schemas/ids/999"), 404, 40403)
    assert error(client.get("/schemas/ids/999/versions"), 404, 40403)
    assert error(client.get("/no/such/route"), 404, 404)


def test_compatibility_endpoint(client: TestClient) -> None:
    register(client, "s", V1)
    url = "/compatibility/subjects/s/versions/latest"
    assert client.post(url, json=body(V2)).json() == {"is_compatible": True}
    verdict = client.post(url, json=body(BREAKING), params={"verbose": "true"}).json()
    assert verdict["is_compatible"] is False and len(verdict["messages"]) == 1
    assert client.post("/compatibility/subjects/s/versions/1", json=body(V2)).json()["is_compatible"] is True
    assert client.post("/compatibility/subjects/s/versions", json=body(BREAKING)).json() == {
        "is_compatible": False
    }
    assert error(client.post("/compatibility/subjects/s/versions/7", json=body(V2)), 404, 40402)
    assert error(client.post("/compatibility/subjects/nope/versions/latest", json=body(V2)), 404, 40401)


# -- config --------------------------------------------------------------------------------------------
def test_config(client: TestClient) -> None:
    assert client.get("/config").json() == {"compatibilityLevel": "BACKWARD"}
    assert client.put("/config", json={"compatibility": "full"}).json() == {"compatibility": "FULL"}
    assert client.get("/config").json() == {"compatibilityLevel": "FULL"}
    assert error(client.put("/config", json={"compatibility": "SIDEWAYS"}), 422, 42203)
    assert error(client.put("/config", json={}), 422, 42203)
    assert error(client.get("/config/s"), 404, 40408)
    assert client.get("/config/s", params={"defaultToGlobal": "true"}).json() == {
        "compatibilityLevel": "FULL"
    }
    assert client.put("/config/s", json={"compatibility": "NONE"}).json() == {"compatibility": "NONE"}
    assert client.get("/config/s").json() == {"compatibilityLevel": "NONE"}
    register(client, "s", V1)
    register(client, "s", BREAKING)  # NONE: anything goes
    assert client.delete("/config/s").json() == {"compatibilityLevel": "NONE"}
    assert error(client.delete("/config/s"), 404, 40408)
    assert client.delete("/config").json() == {"compatibilityLevel": "FULL"}
    assert client.get("/config").json() == {"compatibilityLevel": "BACKWARD"}


def test_transitive_level_over_http(client: TestClient) -> None:
    client.put("/config/s", json={"compatibility": "BACKWARD_TRANSITIVE"})
    x_string = {"type": "object", "properties": {"x": {"type": "string"}}}
    register(client, "s", x_string)
    register(client, "s", {"type": "object", "properties": {}})
    message = error(
        client.post(
            "/subjects/s/versions", json=body({"type": "object", "properties": {"x": {"type": "integer"}}})
        ),
        409,
        409,
    )
    assert "version 1 (backward)" in message


# -- deletes -------------------------------------------------------------------------------------------
def test_delete_subject_soft_then_permanent(client: TestClient, store: SchemaStore) -> None:
    first = register(client, "s", V1)
    register(client, "s", V2)
    register(client, "keep", {"type": "string"})
    assert error(client.delete("/subjects/s", params={"permanent": "true"}), 404, 40405)
    assert client.delete("/subjects/s").json() == [1, 2]
    assert error(client.delete("/subjects/s"), 404, 40404)
    assert client.get("/subjects").json() == ["keep"]
    assert client.get("/subjects", params={"deleted": "true"}).json() == ["keep", "s"]
    assert client.get("/subjects", params={"deleted_only": "true"}).json() == ["s"]
    assert error(client.get("/subjects/s/versions"), 404, 40401)
    assert client.get("/subjects/s/versions", params={"deleted": "true"}).json() == [1, 2]
    assert client.get(f"/schemas/ids/{first}").status_code == 200  # soft-deleted schemas still resolve
    assert store.schema_exists(first)
    assert client.delete("/subjects/s", params={"permanent": "true"}).json() == [1, 2]
    assert error(client.delete("/subjects/s"), 404, 40401)
    assert error(client.get(f"/schemas/ids/{first}"), 404, 40403)
    assert not store.schema_exists(first)  # a permanently deleted id is unknown to the store that deleted it
    assert not MemorySchemaStore().schema_exists(first)


def test_delete_version_and_reregister(client: TestClient) -> None:
    first, second = register(client, "s", V1), register(client, "s", V2)
    assert error(client.delete("/subjects/s/versions/2", params={"permanent": "true"}), 404, 40407)
    assert client.delete("/subjects/s/versions/latest").json() == 2
    assert error(client.delete("/subjects/s/versions/2"), 404, 40406)
    assert client.get("/subjects/s/versions").json() == [1]
    assert client.get("/subjects/s/versions/latest").json()["id"] == first
    assert client.get("/subjects/s/versions/2", params={"deleted": "true"}).json()["id"] == second
    assert register(client, "s", V2) == second  # the same schema keeps its id, as a new version
    assert client.get("/subjects/s/versions").json() == [1, 3]
    assert client.delete("/subjects/s/versions/2", params={"permanent": "true"}).json() == 2
    assert client.get("/subjects/s/versions", params={"deleted": "true"}).json() == [1, 3]
    assert error(client.delete("/subjects/s/versions/9"), 404, 40402)
    assert error(client.delete("/subjects/nope/versions/1"), 404, 40401)


def test_control_characters_in_a_subject_or_nul_in_a_schema_are_a_422_and_logged_escaped(
        client: TestClient, caplog: pytest.LogCaptureFixture) -> None:
    """Postgres text cannot hold NUL: such a request is refused with Confluent's code before the store."""
    register(client, "s", V1)
    for method, path, payload in [
        ("POST", "/subjects/a%00b/versions", body(V1)), ("POST", "/subjects/a%00b", body(V1)),
        ("GET", "/subjects/a%00b/versions", None), ("GET", "/subjects/a%00b/versions/latest", None),
        ("DELETE", "/subjects/a%00b", None), ("DELETE", "/subjects/a%0Ab/versions/1", None),
        ("POST", "/compatibility/subjects/a%00b/versions/latest", body(V1)),
        ("PUT", "/config/a%00b", {"compatibility": "NONE"}), ("GET", "/config/a%1Bb", None),
    ]:
        message = error(client.request(method, path, json=payload), 422, 42208)
        assert "\x00" not in message and "\n" not in message, message
    for schema in ['{"type": "string", "description": "a\u0000b"}', "{\"type\": \"string\"}\x00"]:
        error(client.post("/subjects/s/versions", json=body(schema)), 422, 42201)
    reference = body(V1, references=[{"name": "r\x00", "subject": "s", "version": 1}])
    error(client.post("/subjects/t/versions", json=reference), 422, 42201)
    assert client.get("/subjects").json() == ["s"]
    assert all("\x00" not in record.getMessage() for record in caplog.records)


def test_a_permanently_deleted_schema_id_is_unknown_at_ingest(db_url: str) -> None:
    """The registry (its own process) deletes; ingest's store (another process) answers from its cache for
    at most ``known_ttl_s``, then the id is unknown and wire-format records with it are dead-lettered."""
    from datetime import UTC, datetime

    from schemas import DecodeError, EventDecoder, EventRules

    now = [0.0]
    with (PostgresSchemaStore(db_url) as registry_side,
          PostgresSchemaStore(db_url, known_ttl_s=10.0, clock=lambda: now[0]) as ingest_side):
        client = TestClient(create_app(registry_side))
        schema_id = register(client, "feedback-value", FeedbackEvent.model_json_schema())
        decoder = EventDecoder(FeedbackEvent, EventRules(frozenset({"positive"})), ingest_side.schema_exists)
        event = FeedbackEvent(feedback_id="f", prediction_id="p", label="positive", ts=datetime.now(UTC))
        record = b"\x00" + schema_id.to_bytes(4, "big") + event.to_json()
        assert decoder.decode(record, datetime.now(UTC)) == event
        assert client.delete("/subjects/feedback-value").status_code == 200  # soft: the id still resolves
        assert client.delete("/subjects/feedback-value", params={"permanent": "true"}).status_code == 200
        assert not registry_side.schema_exists(schema_id)
        now[0] = 10.5
        with pytest.raises(DecodeError) as refused:
            decoder.decode(record, datetime.now(UTC))
        assert refused.value.reason == "unknown_schema_id"


def test_store_contract_directly(store: SchemaStore) -> None:
    check = CompatibilityChecker()
    registered = store.register("s", Schema(json.dumps(FeedbackEvent.model_json_schema())), check)
    assert (registered.subject, registered.version) == ("s", 1)
    assert store.schema_exists(registered.schema_id) and not store.schema_exists(registered.schema_id + 100)
    assert store.get_schema(registered.schema_id) == registered.schema
    assert store.effective_level("s") is CompatibilityLevel.BACKWARD
    store.set_config(None, CompatibilityLevel.FORWARD)
    assert store.effective_level("s") is CompatibilityLevel.FORWARD
    assert store.schema_versions(registered.schema_id) == [("s", 1)]


# -- Postgres only -------------------------------------------------------------------------------------
def test_concurrent_registration_is_serialised(db_url: str) -> None:
    """Many writers at once: every schema gets one version, identical schemas one id."""
    with PostgresSchemaStore(db_url, max_idle=16) as store:
        check = CompatibilityChecker()
        results: dict[str, int] = {}
        errors: list[BaseException] = []

        def work(n: int) -> None:
            try:
                schema = {"type": "object", "properties": {f"f{n}": {"type": "string"}}}
                results[f"own{n}"] = store.register("shared", Schema(json.dumps(schema)), check).schema_id
                results[f"same{n}"] = store.register(f"subject{n}", Schema(json.dumps(V1)), check).schema_id
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(n,)) for n in range(12)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert not errors, errors
        assert [v.version for v in store.versions("shared")] == list(range(1, 13))
        assert len({results[f"own{n}"] for n in range(12)}) == 12
        assert len({results[f"same{n}"] for n in range(12)}) == 1


def test_postgres_errors_become_store_errors(db_url: str) -> None:
    broken = PostgresSchemaStore("postgresql://nobody@127.0.0.1:1/none", connect_timeout=1)
    with pytest.raises(SchemaStoreError):
        broken.subjects()
    client = TestClient(create_app(broken))
    assert error(client.get("/subjects"), 500, 50001)
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("DROP TABLE schema_registry_config")
    with PostgresSchemaStore(db_url) as store, pytest.raises(SchemaStoreError, match="schema_registry_config"):
        store.get_config(None)


def test_migration_created_tables(db_url: str) -> None:
    with psycopg.connect(db_url) as conn:
        tables = {r[0] for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
    assert {"schema_registry_schemas", "schema_registry_versions", "schema_registry_config"} <= tables


def test_schema_exists_caches_unknown_ids(db_url: str) -> None:
    now = [0.0]
    with PostgresSchemaStore(db_url, unknown_ttl_s=5.0, clock=lambda: now[0]) as store:
        assert not store.schema_exists(1)
        registered = store.register("s", Schema(json.dumps(V1)), CompatibilityChecker())
        assert registered.schema_id == 1
        assert store.schema_exists(1)  # registering through this store forgets the negative answer
    with PostgresSchemaStore(db_url, unknown_ttl_s=5.0, clock=lambda: now[0]) as other:
        assert not other.schema_exists(2)
        with psycopg.connect(db_url, autocommit=True) as conn:
            conn.execute(
                "INSERT INTO schema_registry_schemas (schema_type, schema_text, fingerprint) "
                "VALUES ('JSON', '{}', 'x')"
            )
            conn.execute(
                "INSERT INTO schema_registry_versions (subject, version, schema_id) VALUES ('t', 1, 2)"
            )
        assert not other.schema_exists(2)  # cached negative answer
        now[0] = 6.0
        assert other.schema_exists(2)


def test_exported_members() -> None:
    assert sorted(registry.__all__) == registry.__all__
    for name in registry.__all__:
        assert getattr(registry, name) is not None


def test_registry_server_starts_answers_and_stops() -> None:
    server = RegistryServer(create_app(MemorySchemaStore()), "127.0.0.1", 0)
    url = server.start()
    try:
        assert server.port > 0 and url == f"http://127.0.0.1:{server.port}"
        response = httpx.post(f"{url}/subjects/s/versions", json=body(V1), headers={"Content-Type": CT})
        assert response.json() == {"id": 1}
        with pytest.raises(ServerStartError):
            RegistryServer(create_app(MemorySchemaStore()), "127.0.0.1", server.port).start(timeout=5)
    finally:
        server.stop()
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{url}/", timeout=1)
