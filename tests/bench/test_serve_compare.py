"""bench/serve.py: the pod-vs-pipeline comparison at a p99 budget, at the tightest common budget and
saturated; the server CPU per request the load generator reads from a real server process."""

from __future__ import annotations

import asyncio
import itertools
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench.serve import compare, free_port, headline_key, one_level, process_cpu_s


def level(clients: int, rps: float, p99: float, cpu: float | None = None, errors: int = 0) -> dict[str, object]:
    found: dict[str, object] = {"clients": clients, "rps": rps, "p50_ms": p99 / 2, "p99_ms": p99, "errors": errors}
    return found | ({"server_cpu_ms": cpu} if cpu is not None else {})


# issue 22's AVX2-only host: no pipeline level within 100 ms
POD = [level(1, 28.4, 62.8, 60.0), level(2, 44.4, 109.9, 44.0), level(4, 56.6, 153.0, 35.0), level(6, 56.0, 200.0)]
PIPELINE = [level(1, 20.2, 132.6, 95.0), level(2, 32.6, 116.0, 61.0), level(4, 32.0, 240.0, 62.0)]


def test_a_side_without_a_level_in_the_budget_gives_no_ratio_and_says_why() -> None:
    found = compare(POD, PIPELINE, 100.0)
    assert found["minilm_ratio"] is None and found["pipeline_rps"] == 0.0 and found["minilm_rps"] == 28.4
    assert found["minilm_ratio_null"] == "pipeline: no level with p99 <= 100 ms (lowest p99 116.0 ms)"
    # the tightest budget both meet: the pipeline's lowest p99
    assert found["common_budget_ms"] == 116.0
    assert (found["minilm_rps_common"], found["pipeline_rps_common"]) == (44.4, 32.6)
    assert found["minilm_ratio_common"] == round(44.4 / 32.6, 3)
    assert (found["minilm_rps_saturated"], found["pipeline_rps_saturated"]) == (56.6, 32.6)
    assert found["minilm_ratio_saturated"] == round(56.6 / 32.6, 3)
    assert (found["minilm_cpu_ms"], found["pipeline_cpu_ms"], found["cpu_ratio"]) == (35.0, 61.0, round(61 / 35, 3))


def test_both_sides_within_the_budget_compare_there_and_the_budget_is_the_common_one() -> None:
    found = compare(POD, PIPELINE, 150.0)
    assert found["minilm_ratio_null"] is None
    assert (found["minilm_rps"], found["pipeline_rps"], found["minilm_ratio"]) == (44.4, 32.6, round(44.4 / 32.6, 3))
    assert found["common_budget_ms"] == 150.0 and found["minilm_ratio_common"] == found["minilm_ratio"]
    assert found["p99_budget_ms"] == 150.0


def test_levels_with_errors_never_count() -> None:
    found = compare([level(1, 90.0, 10.0, errors=3)], PIPELINE, 300.0)
    assert found["minilm_rps"] == 0.0 and found["minilm_ratio"] is None and found["minilm_ratio_saturated"] is None
    assert found["minilm_ratio_null"] == "minilm: no level with p99 <= 300 ms (no level without errors)"
    assert found["common_budget_ms"] is None and found["minilm_ratio_common"] is None


def test_variants_rank_by_the_budget_then_saturated() -> None:
    within = [level(1, 30.0, 90.0), level(2, 31.0, 300.0)]
    faster = [level(1, 20.0, 150.0), level(2, 60.0, 300.0)]
    assert headline_key(within, 100.0) > headline_key(faster, 100.0)
    assert headline_key([level(1, 20.0, 150.0)], 100.0) < headline_key(faster, 100.0)  # both null: saturated


SERVER = """
import json, sys, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

class Busy(BaseHTTPRequestHandler):
    def do_POST(self):
        self.rfile.read(int(self.headers["Content-Length"]))
        end = time.process_time() + 0.02  # 20 ms of CPU per request
        while time.process_time() < end:
            pass
        body = b'{"label": "positive"}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass

ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Busy).serve_forever()
"""


def test_the_load_generator_reads_the_server_cpu_per_request(tmp_path: Path) -> None:
    port = free_port()
    script = tmp_path / "server.py"
    script.write_text(SERVER)
    process = subprocess.Popen([sys.executable, str(script), str(port)])
    try:
        deadline = time.monotonic() + 30
        while process.poll() is None and time.monotonic() < deadline:
            try:
                import socket

                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.1)
        before = process_cpu_s(process.pid)
        result = asyncio.run(one_level(f"http://127.0.0.1:{port}", 1, 0.3, 1.5, itertools.repeat("a text"),
                                       pid=process.pid))
        assert process_cpu_s(process.pid) > before
    finally:
        process.kill()
        process.wait()
    assert result["rps"] > 0 and result["errors"] == 0
    # 20 ms of spinning per request plus the HTTP handling; clock ticks are 10 ms, over >= ~10 requests
    assert 18.0 <= result["server_cpu_ms"] <= 40.0, result
    # cores used = CPU per request x requests/s (the share of a core depends on the machine's other load)
    assert 0 < result["server_cores"] <= 1.1, result
    assert abs(result["server_cores"] - result["server_cpu_ms"] * result["rps"] / 1000) < 0.02, result


def test_process_cpu_reads_this_process_and_refuses_a_missing_one() -> None:
    assert not math.isnan(process_cpu_s(os.getpid()))
    with pytest.raises(FileNotFoundError):
        process_cpu_s(2**22 + 12345)
