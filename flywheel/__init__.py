"""Flywheel: turn feedback on a model's predictions into a better model in production.

This package holds the CLI, the settings object and the local runtime (embedded broker + Postgres).
The data-flow stages live in their own top-level packages: ``schemas``, ``streams`` (and later
``curation``, ``trainer``, ``registry``, ``serving``).
"""

from flywheel.exceptions import FlywheelError
from flywheel.settings import FlywheelSettings, Topics

__all__ = ["FlywheelError", "FlywheelSettings", "Topics", "__version__"]

__version__ = "0.1.0"
