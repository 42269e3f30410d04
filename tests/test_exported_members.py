"""Each package's public surface is exactly its ``__all__`` (httpx's tests/test_exported_members.py)."""

from __future__ import annotations

import importlib

import pytest

PACKAGES = ["core", "curation", "flywheel", "kinds", "tasks", "registry", "schemas", "schemas.registry", "serving",
            "streams",
            "trainer"]


@pytest.mark.parametrize("name", PACKAGES)
def test_all_names_exist_and_every_public_name_is_listed(name: str) -> None:
    module = importlib.import_module(name)
    exported = set(module.__all__)
    assert len(exported) == len(module.__all__), "duplicates in __all__"
    for attr in exported:
        assert hasattr(module, attr), f"{name}.__all__ names missing {attr}"
    public = {n for n in vars(module) if not n.startswith("_")}
    submodules = {n for n in public if type(getattr(module, n)).__name__ == "module"}
    assert public - submodules - {"annotations"} == exported - {"__version__"}


def test_no_import_time_side_effects() -> None:
    """Importing the packages opens no sockets, threads or processes."""
    import subprocess
    import sys

    code = ("import threading, core, kinds, flywheel, registry, schemas, streams, schemas.registry, flywheel.cli;"
            "assert threading.active_count() == 1, threading.enumerate()")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
