"""Run a benchmark as on an AVX2-only x86-64 host (issue 22's AMD EPYC class) on a host with AVX-512/AMX.

Every library we benchmark picks its kernels from CPUID at run time: numpy, torch (ATen, oneDNN, MKL) and
ONNX Runtime's MLAS. ``bench/isa/cpuid_mask.c``, preloaded into the command and every process it starts,
makes CPUID fault (Linux ``arch_prctl(ARCH_SET_CPUID)``, CPUs with the ``cpuid_fault`` flag) and answers it
with the AVX-512, AVX-VNNI and AMX bits cleared; ``GLIBC_TUNABLES`` does the same for glibc's string
functions, which read CPUID before any library loads. What it does not change: this host's clocks,
caches and memory bandwidth, so a figure under it tells what the instruction set alone costs, not what the
other host measures. The host line of a benchmark's JSON says ``"emulated": "avx2"``.

    .venv/bin/python -m bench.as_host avx2 -- .venv/bin/python -m bench.serve --runtime onnx

The library is built with the machine's C compiler (``$CC`` or ``cc``) into ``$XDG_CACHE_HOME/flywheel``
(``~/.cache``), once per version of its source.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

SOURCE = Path(__file__).resolve().parent / "isa" / "cpuid_mask.c"
EMULATED = "FLYWHEEL_EMULATED_ISA"  # read by bench/_host.py
# glibc's names for what it must not use (sysdeps/x86/cpu-tunables.c)
_GLIBC_OFF = ("AVX512F", "AVX512CD", "AVX512ER", "AVX512PF", "AVX512VL", "AVX512DQ", "AVX512BW")
ISAS = ("avx2",)


class HostEmulationError(RuntimeError):
    """This host cannot emulate the instruction set asked for (and why)."""


def unsupported_reason(cpuinfo: Path = Path("/proc/cpuinfo")) -> str | None:
    """Why CPUID masking cannot work here, or None when it can."""
    if sys.platform != "linux" or os.uname().machine != "x86_64":
        return f"CPUID masking needs Linux on x86-64 (this is {sys.platform} {os.uname().machine})"
    try:
        flags = next((line.split(":", 1)[1].split() for line in cpuinfo.read_text().splitlines()
                      if line.startswith("flags")), [])
    except OSError as exc:
        return f"cannot read {cpuinfo}: {exc}"
    if "cpuid_fault" not in flags:
        return "this CPU (or its hypervisor) offers no CPUID faulting (no `cpuid_fault` in /proc/cpuinfo)"
    return None


def library(cache: Path | None = None) -> Path:
    """The built shim, compiled once per version of its source; raises :class:`HostEmulationError`."""
    if (reason := unsupported_reason()) is not None:
        raise HostEmulationError(reason)
    source = SOURCE.read_bytes()
    cache = cache or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "flywheel"
    built = cache / f"cpuid_mask-{hashlib.sha256(source).hexdigest()[:16]}.so"
    if built.exists():
        return built
    compiler = shutil.which(os.environ.get("CC", "cc")) or shutil.which("gcc")
    if compiler is None:
        raise HostEmulationError("no C compiler (set $CC, or install gcc) to build bench/isa/cpuid_mask.c")
    cache.mkdir(parents=True, exist_ok=True)
    partial = built.with_suffix(f".{os.getpid()}.tmp")
    done = subprocess.run([compiler, "-O2", "-shared", "-fPIC", "-o", str(partial), str(SOURCE), "-ldl"],
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise HostEmulationError(f"building {SOURCE.name} failed:\n{done.stderr}")
    partial.replace(built)  # atomic: a concurrent build of the same source writes the same file
    return built


def environment(isa: str, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """``base`` (default: this process's environment) with what makes a process see ``isa`` only."""
    if isa not in ISAS:
        raise HostEmulationError(f"unknown instruction set {isa!r}: one of {', '.join(ISAS)}")
    env = dict(os.environ if base is None else base)
    preload = [str(library())] + [p for p in env.get("LD_PRELOAD", "").split(":") if p]
    tunables = [t for t in env.get("GLIBC_TUNABLES", "").split(":") if t and not t.startswith("glibc.cpu.hwcaps=")]
    tunables.append("glibc.cpu.hwcaps=" + ",".join(f"-{name}" for name in _GLIBC_OFF))
    return env | {"LD_PRELOAD": ":".join(preload), "GLIBC_TUNABLES": ":".join(tunables), EMULATED: isa,
                  # torch's own switches too, so a torch build that ignores CPUID still follows
                  "ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("isa", choices=ISAS)
    parser.add_argument("command", nargs=argparse.REMAINDER, help="the command (after --)")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("no command to run")
    try:
        env = environment(args.isa)
    except HostEmulationError as exc:
        parser.exit(2, f"as_host: {exc}\n")
    os.execvpe(command[0], command, env)


if __name__ == "__main__":
    main()
