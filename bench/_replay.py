"""A whole demo platform and the replay of one scenario against it, for the efficacy benches."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from core.settings import FlywheelSettings
from flywheel.demo import DemoOptions, Replay, demo_bootstrap, demo_settings, drop_database, fresh_database
from flywheel.endpoints import endpoint_connection
from flywheel.platform import Platform
from flywheel.stack import free_port


@contextlib.contextmanager
def replaying(base: FlywheelSettings, options: DemoOptions, data_dir: Path, database: str, *,
              keep_database: bool = False) -> Iterator[Replay]:
    """A demo platform for ``options`` on a fresh ``database`` (on ``base``'s server; pgserver without one),
    its data in ``data_dir``, and the replay of its scenario against it (closed afterwards). The database is
    dropped once the platform has stopped, unless ``keep_database`` (a report is written to ``data_dir``)."""
    url = fresh_database(base.database_url.get_secret_value(), database) if base.database_url else None
    with contextlib.ExitStack() as stack:
        if url is not None and not keep_database:
            stack.callback(drop_database, url)  # runs after the platform below has stopped
        settings = demo_settings(base, options, data_dir, url, free_port())
        platform = stack.enter_context(Platform(settings, bootstrap=demo_bootstrap([options], data_dir)))
        endpoints = platform.endpoints
        assert endpoints is not None and endpoints.serving_url is not None
        replay = Replay(options, settings, endpoints.serving_url, endpoints.database_url,
                        endpoint_connection(settings, endpoints))
        try:
            yield replay
        finally:
            replay.close()
