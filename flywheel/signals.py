"""SIGINT/SIGTERM that stop a process, handled without taking a lock.

A Python signal handler runs in the main thread between two bytecodes, wherever that thread is: inside
``threading.Event.set`` or ``Event.wait`` too, holding the event's lock. A handler that calls ``Event.set``
then waits for a lock its own thread holds, and the process hangs for ever. Handlers do nest: a child whose
parent is killed gets its parent-death signal once for each of the parent's threads that passes it on as it
exits (seen: the broker's object store hung in four nested ``Event.set`` calls after a kill -9 of ``up``).

Here the handler only writes the signal's number to a pipe, which takes no lock; a relay thread reads it
and sets the event (and calls ``on_signal``, to log it, say) outside any handler.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable, Iterable

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def stop_on_signals(stop: threading.Event, signals: Iterable[signal.Signals] = STOP_SIGNALS,
                    on_signal: Callable[[int], None] | None = None) -> None:
    """Set ``stop`` (after calling ``on_signal(signum)``) whenever one of ``signals`` arrives. Call it from
    the main thread; a later call replaces the handlers of an earlier one."""
    read_fd, write_fd = os.pipe()
    os.set_blocking(write_fd, False)

    def handler(signum: int, _frame: object) -> None:  # as short as it can be: another signal may nest in it
        try:  # noqa: SIM105 (contextlib.suppress would add frames in which another signal can nest)
            os.write(write_fd, signum.to_bytes())
        except OSError:  # a full pipe already holds signals to relay
            pass

    def relay() -> None:
        while True:
            for signum in os.read(read_fd, 64):
                if on_signal is not None:
                    on_signal(signum)
                stop.set()

    threading.Thread(target=relay, name="signals", daemon=True).start()
    for sig in signals:
        signal.signal(sig, handler)
