"""Serve an ASGI app (the registry) with uvicorn on a background thread: ``start()`` returns the URL
once the app answers, ``stop()`` shuts it down gracefully."""

from __future__ import annotations

import threading
import time

import httpx
import uvicorn
from fastapi import FastAPI

from schemas.registry.exceptions import ServerStartError


class RegistryServer:
    """``RegistryServer(create_app(store), "127.0.0.1", 0).start()`` -> ``"http://127.0.0.1:<port>"``.

    Port 0 picks a free port; the one bound is in :attr:`port` after :meth:`start`."""

    def __init__(
        self, app: FastAPI, host: str = "127.0.0.1", port: int = 0, *, log_level: str = "warning"
    ) -> None:
        self.app = app
        self.host = host
        self.port = port
        self.log_level = log_level
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._failure = "uvicorn did not start"

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout: float = 10.0) -> str:
        if self._server is not None:
            return self.url
        config = uvicorn.Config(
            self.app,
            host=self.host,
            port=self.port,
            log_level=self.log_level,
            lifespan="off",
            access_log=False,
        )
        server = self._server = uvicorn.Server(config)
        thread = self._thread = threading.Thread(
            target=self._run, args=(server,), name="schema-registry", daemon=True
        )
        thread.start()
        deadline = time.monotonic() + timeout
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise ServerStartError(self.url, self._failure)
            time.sleep(0.01)
        self.port = int(server.servers[0].sockets[0].getsockname()[1])
        self._wait_until_answering(deadline)
        return self.url

    def stop(self, timeout: float = 5.0) -> None:
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is not None:
            server.should_exit = True
        if thread is not None:
            thread.join(timeout)
            if thread.is_alive() and server is not None:
                server.force_exit = True
                thread.join(timeout)

    def _run(self, server: uvicorn.Server) -> None:
        try:
            server.run()
        except SystemExit as exc:  # uvicorn exits on a startup failure, e.g. the port is taken
            self._failure = f"uvicorn exited with status {exc.code} (is the port in use?)"

    def _wait_until_answering(self, deadline: float) -> None:
        last = "no answer"
        with httpx.Client(timeout=1.0) as client:
            while time.monotonic() < deadline:
                try:
                    if client.get(f"{self.url}/").status_code == 200:
                        return
                    last = "unexpected status"
                except httpx.HTTPError as exc:
                    last = str(exc) or type(exc).__name__
                time.sleep(0.02)
        self.stop()
        raise ServerStartError(self.url, last)

    def __enter__(self) -> RegistryServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
