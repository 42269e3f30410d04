"""The curation package's public surface is exactly its ``__all__``, and importing it has no side
effects (no threads, sockets or connections)."""

from __future__ import annotations

import subprocess
import sys

import curation


def test_all_names_exist_and_every_public_name_is_listed() -> None:
    exported = set(curation.__all__)
    assert len(exported) == len(curation.__all__)
    assert all(hasattr(curation, name) for name in exported)
    public = {n for n in vars(curation) if not n.startswith("_")}
    modules = {n for n in public if type(getattr(curation, n)).__name__ == "module"}
    assert public - modules - {"annotations"} == exported


def test_import_has_no_side_effects() -> None:
    code = "import threading, curation; assert threading.active_count() == 1, threading.enumerate()"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
