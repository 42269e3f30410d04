"""Live swaps from promotion events: promote, rollback, a tampered artifact refused, and a hot swap
under concurrent load with no failed request."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from core.settings import FlywheelSettings
from flywheel.lifecycle import Lifecycle
from registry import ModelVersionInfo, TamperedArtifact

from .conftest import announce, register_version, services, wait_for


def test_promote_and_rollback_swap_live_and_a_tampered_version_is_refused(
        lc: Lifecycle, champion: ModelVersionInfo, app_client: TestClient, tmp_path: Path) -> None:
    runtime = services(app_client).runtime
    assert runtime.wait_live(champion.version, 30)
    v2 = register_version(lc, tmp_path, 400)
    started = time.perf_counter()
    lc.promote(v2.version, "better")
    assert runtime.wait_live(v2.version, 30)
    swap_ms = (time.perf_counter() - started) * 1000
    assert app_client.post("/predict", json={"text": "good"}).json()["version"] == v2.version
    lc.rollback(None, "worse after all")
    assert runtime.wait_live(champion.version, 30)
    assert app_client.post("/predict", json={"text": "good"}).json()["version"] == champion.version

    v3 = register_version(lc, tmp_path, 800)
    stored = Path(lc.registry.fetch(v3.version))
    target = next(p for p in sorted(stored.iterdir()) if p.suffix == ".npz")
    data = target.read_bytes()
    target.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    with pytest.raises(TamperedArtifact):  # the registry refuses the alias move ...
        lc.promote(v3.version, "tampered")
    assert lc.registry.aliases()["champion"] == champion.version
    announce(lc, v3, "promote")  # ... and a pod refuses an announcement of it all the same
    assert runtime.wait_for(lambda _d, err: err is not None and err.version == v3.version, 30)
    assert app_client.post("/predict", json={"text": "good"}).json()["version"] == champion.version
    deployment = app_client.get("/models").json()["deployment"]
    assert deployment["champion"]["version"] == champion.version
    assert deployment["last_error"]["version"] == v3.version and "sha256" in deployment["last_error"]["detail"]
    assert 'flywheel_serving_model_load_failures_total{reason="checksum_mismatch"}' in app_client.get("/metrics").text
    ready = app_client.get("/ready")
    assert ready.status_code == 200 and ready.json()["status"] == "degraded", ready.text
    assert deployment["fallback_for"] == v3.version
    assert "flywheel_serving_champion_fallback 1.0" in app_client.get("/metrics").text
    print(f"promote -> live in {swap_ms:.0f} ms")


def test_hot_swap_under_load_fails_no_request_and_serves_only_live_versions(
        lc: Lifecycle, champion: ModelVersionInfo, app_client: TestClient, tmp_path: Path,
        settings: FlywheelSettings) -> None:
    runtime = services(app_client).runtime
    assert runtime.wait_live(champion.version, 30)
    v2 = register_version(lc, tmp_path, 400)
    stop = threading.Event()
    failures: list[str] = []
    wrong: list[tuple[str, list[str | None]]] = []
    latencies: list[float] = []
    count = [0]

    def hammer(worker: int) -> None:
        i = 0
        while not stop.is_set():
            before = runtime.deployment.generation
            started = time.perf_counter()
            response = app_client.post("/predict", json={"text": f"swap load {worker} {i}", "user_id": f"u{i}"})
            latencies.append(time.perf_counter() - started)
            after = runtime.deployment.generation
            i += 1
            count[0] += 1
            if response.status_code != 200:
                failures.append(f"{response.status_code} {response.text}")
                continue
            live = runtime.history[before:after + 1]  # every champion live while the request ran
            if response.json()["version"] not in live:
                wrong.append((response.json()["version"], live))

    threads = [threading.Thread(target=hammer, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    try:
        expected = champion.version
        for n in range(20):
            if n % 2 == 0:
                lc.promote(v2.version, f"swap {n}")
                expected = v2.version
            else:
                lc.rollback(None, f"swap {n}")
                expected = champion.version
            assert runtime.wait_live(expected, 30), f"swap {n} to {expected} not live"
            time.sleep(0.05)
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    assert not failures, failures[:5]
    assert not wrong, wrong[:5]
    assert runtime.deployment.generation >= 21 and count[0] > 100
    wait_for(lambda: runtime.deployment.champion is not None, "champion")
    ordered = sorted(latencies)
    print(f"{count[0]} requests during 20 swaps; p50 {ordered[len(ordered) // 2] * 1000:.1f} ms "
          f"p99 {ordered[int(len(ordered) * 0.99)] * 1000:.1f} ms")
