"""bench/_host.py: the host every benchmark's last JSON line names (issue 22)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench._host import HostProbe, cpu_info, emit


def test_cpu_info_reads_the_model_and_the_simd_flags_that_matter(tmp_path: Path) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nmodel name\t: AMD EPYC 7B13\nflags\t\t: fpu sse4_2 avx avx2 fma f16c\n\n"
                       "processor\t: 1\nmodel name\t: AMD EPYC 7B13\nflags\t\t: fpu sse4_2 avx avx2 fma f16c\n")
    info = cpu_info(cpuinfo)
    assert info["cpu"] == "AMD EPYC 7B13" and info["simd"] == ["sse4_2", "avx", "avx2", "fma", "f16c"]


def test_the_last_line_names_the_host_its_speed_and_the_load(capsys: pytest.CaptureFixture[str]) -> None:
    probe = HostProbe()
    emit({"ratio": 0.5}, probe)
    line = json.loads(capsys.readouterr().out.splitlines()[-1])
    host = line["host"]
    assert line["ratio"] == 0.5
    assert {"cpu", "arch", "simd", "cores", "python", "load_before", "load_after"} <= set(host)
    # a Python loop of 1,000 additions: microseconds on any host this runs on, not nanoseconds or milliseconds
    assert 1.0 < host["timeit_sum_range_1000_us"] < 500.0, host
