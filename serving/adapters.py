"""Loading a generator version onto the pod's shared base model. The base (hundreds of MB) is loaded once
per process by :func:`kinds.base_models.load_base` and every version binds to that one object: a new
version (hot swap) loads only its adapter files (a couple of MB), and the champion, a canary and a shadow
share the base's weights and its forward-pass lock."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kinds._threads import SpareCores
from kinds.base import read_manifest
from kinds.base_models import SMOLLM2, BaseModel, load_base
from kinds.catalog import GENERATORS, load_model
from kinds.generation import GeneratorKind, GeneratorResources, Prompt

log = logging.getLogger(__name__)

WARMUP_PROMPT = Prompt("Hello!")


def is_generator(directory: Path) -> bool:
    """Whether the saved model in ``directory`` is of a generator kind."""
    return str(read_manifest(directory)["kind"]) in GENERATORS


def base_of(manifest: dict[str, Any], data_dir: Path) -> BaseModel:
    """The base model a generator's manifest names (``params.base``), loaded once per process."""
    return load_base(str(manifest["params"].get("base", SMOLLM2)), data_dir)


def load_generator(directory: Path, data_dir: Path, threads: int | Callable[[], int] = 1) -> GeneratorKind:
    """The generator saved in ``directory``, bound to the process's base model with ``threads`` intra-op
    torch threads for its forward passes (:func:`served_threads`) and warmed up (one token)."""
    base = base_of(read_manifest(directory), data_dir)
    model = load_model(directory, resources=GeneratorResources(base, threads=threads))
    model.generate([WARMUP_PROMPT], max_new_tokens=1)
    return model


def served_threads(setting: int) -> int | SpareCores:
    """The intra-op threads a pod's generations run on, from ``FLYWHEEL_GENERATE_THREADS``: ``0`` (auto) asks
    :class:`~kinds._threads.SpareCores` at every generation (every core this process may run on, fewer when
    other processes kept cores busy since the last generation); ``N`` is a fixed count. Either way at most
    the cores this process may run on (``os.sched_getaffinity``: more OpenMP threads than cores only wait on
    each other at every parallel op's barrier). A CPU quota (``docker --cpus``) is not an affinity: set a
    count there. docs/serving.md has the measurements behind the default."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # no affinity on this platform
        cores = os.cpu_count() or 1
    if setting == 0:
        return SpareCores(cores)
    if setting > cores:
        log.warning("FLYWHEEL_GENERATE_THREADS=%d but this process may run on %d cores: generations use %d",
                    setting, cores, cores)
    return max(1, min(setting, cores))
