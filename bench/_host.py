"""The host a benchmark ran on, printed in every benchmark's JSON (issue 22): figures measured on a host
with AVX-512/VNNI/AMX are not comparable with an AVX2-only one, nor an idle run with a loaded one.

    probe = HostProbe()          # at the start: records the load average before the run
    ...
    emit({"ratio": ...}, probe)  # last line: the figures plus {"host": {...}}
"""

from __future__ import annotations

import json
import os
import platform
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# the instruction-set extensions that change the speed of the numeric code we run (BLAS, ONNX Runtime, torch)
SIMD_FLAGS = ("sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512_vnni",
              "avx512_bf16", "avx512_fp16", "avx_vnni", "amx_tile", "amx_int8", "amx_bf16", "asimd", "sve")


def stat_cpu_s(stat: str) -> float:
    """utime + stime in seconds of one ``/proc/PID/stat`` or ``/proc/PID/task/TID/stat`` text."""
    fields = stat.rsplit(")", 1)[1].split()  # after the command name, which may hold spaces and ")"
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def process_cpu_s(pid: int) -> float:
    """CPU seconds (user + system, all threads) local process ``pid`` has used so far (OSError when unreadable)."""
    return stat_cpu_s(Path(f"/proc/{pid}/stat").read_text())


def _load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def cpu_info(cpuinfo: Path = Path("/proc/cpuinfo")) -> dict[str, Any]:
    """CPU model and the SIMD flags that matter, from /proc/cpuinfo (Linux; elsewhere only what
    :mod:`platform` knows)."""
    model = platform.processor() or platform.machine()
    flags: set[str] = set()
    try:
        for line in cpuinfo.read_text().splitlines():
            key, _, value = line.partition(":")
            key = key.strip().lower()
            if key in ("model name", "cpu model") and model in ("", platform.machine(), platform.processor()):
                model = value.strip()
            elif key in ("flags", "features") and not flags:
                flags = set(value.split())
    except OSError:
        pass
    simd = [f for f in SIMD_FLAGS if f in flags]
    info = {"cpu": model, "arch": platform.machine(), "simd": simd, "cores": os.cpu_count()}
    if os.environ.get("FLYWHEEL_EMULATED_ISA") == "avx2":  # bench/as_host.py: CPUID answers without these
        info |= {"emulated": "avx2", "simd_host": simd,
                 "simd": [f for f in simd if not f.startswith(("avx512", "amx", "avx_vnni"))]}
    return info


def python_speed_us(loops: int = 2000) -> float:
    """Microseconds per ``sum(range(1000))``, best of 5 runs of ``loops`` (what ``python3 -m timeit
    'sum(range(1000))'`` prints): one core's speed for interpreted code, which the CPU model string does not
    tell. Two hosts that both report "Intel(R) Xeon(R) Processor" ran it in 10.8 and 24.9 µs and decoded
    SmolLM2 at 25 and 48 CPU ms a token (docs/benchmarks.md). Best of 5, so a neighbour's burst moves it less."""
    import timeit

    return round(min(timeit.Timer("sum(range(1000))").repeat(5, loops)) / loops * 1e6, 2)


@dataclass
class HostProbe:
    """Started at the beginning of a run (the load average and the interpreter's speed before it); :meth:`report`
    adds the load average after it."""

    load_before: list[float] = field(default_factory=_load)
    speed_us: float = field(default_factory=python_speed_us)

    def report(self) -> dict[str, Any]:
        return {**cpu_info(), "python": sys.version.split()[0], "timeit_sum_range_1000_us": self.speed_us,
                "load_before": self.load_before, "load_after": _load()}


def emit(result: dict[str, Any], probe: HostProbe) -> None:
    """Print ``result`` with the host as the last line of output (the line the issues' checks read)."""
    sys.stdout.write(json.dumps({**result, "host": probe.report()}) + "\n")
    sys.stdout.flush()
