"""A TCP proxy in front of a real server that a test can cut (every connection reset, new ones
refused) and restore: a genuine network outage for the client, with the server untouched."""

from __future__ import annotations

import contextlib
import select
import socket
import threading

from flywheel.stack import free_port


class CuttableProxy:
    def __init__(self, target: tuple[str, int] | str) -> None:
        self.target = target  # (host, port) or a unix socket path
        self.port = free_port()
        self._listener: socket.socket | None = None
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()
        self._up = threading.Event()

    def _connect_target(self) -> socket.socket:
        if isinstance(self.target, str):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.connect(self.target)
            return sock
        return socket.create_connection(self.target, timeout=5)

    def start(self) -> CuttableProxy:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        self._up.set()
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()
        return self

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = self._connect_target()
            except OSError:
                client.close()
                continue
            # accepted while cut() ran (it clears _up, then takes _conns under the lock): close the pair, or it
            # would outlive the cut
            with self._lock:
                late = not self._up.is_set() or listener is not self._listener
                if not late:
                    self._conns += [client, upstream]
            if late:
                for s in (client, upstream):
                    with contextlib.suppress(OSError):
                        s.close()
                continue
            threading.Thread(target=self._pipe, args=(client, upstream), daemon=True).start()

    def _pipe(self, a: socket.socket, b: socket.socket) -> None:
        socks = [a, b]
        try:
            while True:
                ready, _, _ = select.select(socks, [], [], 0.5)
                for s in ready:
                    data = s.recv(65536)
                    if not data:
                        return
                    (b if s is a else a).sendall(data)
        except (OSError, ValueError):  # ValueError: a socket closed by cut() under select()
            return
        finally:
            for s in socks:
                with contextlib.suppress(OSError):
                    s.close()

    def cut(self) -> None:
        """Refuse new connections and reset every open one."""
        self._up.clear()
        if self._listener is not None:
            with contextlib.suppress(OSError):
                self._listener.shutdown(socket.SHUT_RDWR)  # wakes the thread blocked in accept()
            self._listener.close()
            self._listener = None
        with self._lock:
            conns, self._conns = self._conns, []
        for s in conns:
            with contextlib.suppress(OSError):
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                s.close()

    def restore(self) -> None:
        self.start()

    def stop(self) -> None:
        self.cut()
