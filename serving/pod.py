"""The models one serving pod hosts: the default text model (today's routes) and every declared model
``FLYWHEEL_SERVE_MODELS`` names (unset: all), each with its own registry, runtime and watcher (so each is
hot-swapped on its own), sharing the pod's publishers and micro-batcher. A model declared while the pod
runs is hosted at the next look (:class:`DeclaredModels`, every ``FLYWHEEL_MODELS_REFRESH_S``)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from core.exceptions import FlywheelError
from serving.exceptions import NotFound
from serving.services import Services
from tasks import ModelSpec

log = logging.getLogger(__name__)


@dataclass
class Pod:
    default: Services
    others: dict[str, Services] = field(default_factory=dict)

    @property
    def hosted(self) -> dict[str, Services]:
        return {self.default.settings.model_name: self.default, **self.others}

    def get(self, name: str) -> Services:
        found = self.hosted.get(name)
        if found is None:
            raise NotFound(f"model {name!r} is not hosted by this pod (hosted: {sorted(self.hosted)}); "
                           "FLYWHEEL_SERVE_MODELS chooses, `flywheel models list` shows every declared model")
        return found

    def start(self) -> None:
        self.default.start()
        for services in self.others.values():
            services.start()

    def add(self, services: Services) -> None:
        """Host one more model, started before it is visible. ``others`` is replaced, never changed in
        place: request threads iterate it while this runs."""
        services.start()
        self.others = {**self.others, services.settings.model_name: services}

    def close(self) -> None:
        for services in self.others.values():
            services.close()
        self.default.close()  # last: it owns the shared publishers


class DeclaredModels:
    """Hosts the models declared after the pod started: every ``every_s`` seconds it reads the models this
    pod should host (``specs``: ``FLYWHEEL_SERVE_MODELS``, else every declared model) and builds, starts and
    adds each one it does not host yet; ``added`` is told of each (the pod's admin routes). A model that
    cannot be built now (its registry away, say) is logged and tried again at the next look."""

    def __init__(self, pod: Pod, specs: Callable[[], list[ModelSpec]], build: Callable[[ModelSpec], Services],
                 every_s: float, added: Callable[[Services], None] | None = None) -> None:
        self.pod, self._specs, self._build, self.every_s, self._added = pod, specs, build, every_s, added
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def refresh(self) -> list[str]:
        """One look; the names of the models it added."""
        try:
            specs = self._specs()
        except FlywheelError as exc:
            log.warning("could not read the declared models (next look in %.0f s): %s", self.every_s, exc)
            return []
        added = []
        for spec in specs:
            if spec.name in self.pod.hosted:
                continue
            try:
                services = self._build(spec)
                self.pod.add(services)
            except Exception:  # one model that cannot be hosted now must not stop the pod or the others
                log.exception("could not host the declared model %r (next look in %.0f s)", spec.name, self.every_s)
                continue
            if self._added is not None:
                self._added(services)
            log.info("hosting the newly declared model %r (%s)", spec.name, spec.task)
            added.append(spec.name)
        return added

    def start(self) -> None:
        if self.every_s <= 0 or self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="flywheel-declared-models", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            self.refresh()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
