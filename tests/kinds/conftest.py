"""The base models of the generator tests: ``tiny-random`` (a 2-layer random Llama with the real SmolLM2
tokenizer, prepared once per session into a temporary data dir: ~15 s, then loads in well under a second)."""

from __future__ import annotations

from pathlib import Path

import pytest

from kinds.base_models import BaseModel, load_base
from kinds.generation import GeneratorResources


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("flywheel-data")


@pytest.fixture(scope="session")
def tiny(data_dir: Path) -> BaseModel:
    return load_base("tiny-random", data_dir)


@pytest.fixture(scope="session")
def resources(tiny: BaseModel) -> GeneratorResources:
    return GeneratorResources(base=tiny)
