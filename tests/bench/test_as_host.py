"""bench/as_host.py: a process (and what it starts) sees an AVX2-only CPU; real faults still crash as before."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench import as_host

pytestmark = pytest.mark.skipif(as_host.unsupported_reason() is not None,
                                reason=f"no CPUID masking here: {as_host.unsupported_reason()}")

PROBE = """
import json, subprocess, sys
from numpy._core._multiarray_umath import __cpu_features__ as numpy_sees
import torch
from bench._host import cpu_info
child = subprocess.run([sys.executable, "-c",
    "from numpy._core._multiarray_umath import __cpu_features__ as f; print(f['AVX512F'])"],
    capture_output=True, text=True, check=True).stdout.strip()
print(json.dumps({"numpy_avx512f": numpy_sees["AVX512F"], "numpy_avx2": numpy_sees["AVX2"],
                  "torch": torch.backends.cpu.get_cpu_capability(), "child_avx512f": child,
                  "host": cpu_info()}))
"""


def run(code: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120,
                          cwd=Path(__file__).resolve().parents[2])


def test_every_library_and_child_process_sees_avx2_only() -> None:
    native = json.loads(run(PROBE, dict(os.environ) | {"PYTHONPATH": "."}).stdout)
    emulated = json.loads(run(PROBE, as_host.environment("avx2") | {"PYTHONPATH": "."}).stdout)
    assert emulated["numpy_avx512f"] is False and emulated["numpy_avx2"] is True
    assert emulated["child_avx512f"] == "False"  # a process the command starts is masked as well
    assert emulated["torch"] == "AVX2"
    assert emulated["host"]["emulated"] == "avx2"
    assert not any(f.startswith(("avx512", "amx")) for f in emulated["host"]["simd"])
    assert emulated["host"]["simd_host"] == native["host"]["simd"]
    if "avx512f" in native["host"]["simd"]:  # on an AVX-512 host the mask is what made the difference
        assert native["numpy_avx512f"] is True and native["torch"].startswith("AVX512")


@pytest.mark.parametrize("faulthandler", [True, False])
def test_a_real_segfault_still_kills_the_process(faulthandler: bool) -> None:
    code = ("import ctypes, faulthandler\n" + ("faulthandler.enable()\n" if faulthandler else "")
            + "print('before', flush=True)\nctypes.string_at(0)\nprint('after')")
    done = run(code, as_host.environment("avx2"))
    assert done.returncode == -11, done
    assert done.stdout == "before\n"
    assert ("Segmentation fault" in done.stderr) is faulthandler  # the program's own handler still ran


def test_unknown_isa_and_missing_cpuid_faulting_are_refused(tmp_path: Path) -> None:
    with pytest.raises(as_host.HostEmulationError, match="unknown instruction set 'sse2'"):
        as_host.environment("sse2")
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu avx avx2 avx512f\n")
    assert "no CPUID faulting" in (as_host.unsupported_reason(cpuinfo) or "")


def test_the_command_line_runs_a_command_under_the_mask() -> None:
    done = subprocess.run([sys.executable, "-m", "bench.as_host", "avx2", "--", sys.executable, "-c",
                           "from numpy._core._multiarray_umath import __cpu_features__ as f; print(f['AVX512F'])"],
                          capture_output=True, text=True, timeout=120, cwd=Path(__file__).resolve().parents[2])
    assert done.returncode == 0 and done.stdout.strip() == "False", done
