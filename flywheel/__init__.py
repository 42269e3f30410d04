"""Flywheel, the app: the CLI, the local stack (embedded broker + Postgres), the platform wiring
(``flywheel up``), the demo and the schema migrations. It stands on every stage; no stage imports it.
The foundation below the stages (errors, settings, database access, the Kafka connection) is ``core``.

Importing this package imports nothing else (``python -m flywheel`` installs its signal handlers first).
"""

from __future__ import annotations

__all__ = ["__version__"]


def __getattr__(name: str) -> str:
    if name == "__version__":
        from core import __version__

        return __version__
    raise AttributeError(f"module 'flywheel' has no attribute {name!r}")
