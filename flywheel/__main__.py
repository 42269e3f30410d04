"""``python -m flywheel`` and the ``flywheel`` command. SIGINT/SIGTERM are caught before anything heavy is
imported: a command imports the stages it runs (seconds on a busy host), and a SIGTERM in that window must be a clean
stop (exit 0), not a kill by the default handler (seen as exit -15 in tests/streams/test_rebalance.py)."""

from __future__ import annotations

import threading

from flywheel.signals import stop_on_signals


def run() -> None:
    stop = threading.Event()
    received: list[int] = []

    stop_on_signals(stop, on_signal=received.append)
    from flywheel.cli import main  # the heavy part

    main(stop, early_signals=received)


if __name__ == "__main__":
    run()
