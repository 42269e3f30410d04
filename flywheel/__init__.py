"""Flywheel, the app: the CLI, the local stack (embedded broker + Postgres), the platform wiring
(``flywheel up``), the demo and the schema migrations. It stands on every stage; no stage imports it.
The foundation below the stages (errors, settings, database access, the Kafka connection) is ``core``.
"""

from core import __version__

__all__ = ["__version__"]
