"""The serving package's public surface is exactly its ``__all__``; importing it starts nothing."""

from __future__ import annotations

import subprocess
import sys

import serving


def test_all_names_exist_and_every_public_name_is_listed() -> None:
    exported = set(serving.__all__)
    assert len(exported) == len(serving.__all__)
    public = {n for n in vars(serving) if not n.startswith("_")}
    submodules = {n for n in public if type(getattr(serving, n)).__name__ == "module"}
    assert public - submodules - {"annotations"} == exported


def test_no_import_time_side_effects() -> None:
    code = "import threading, serving; assert threading.active_count() == 1, threading.enumerate()"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
