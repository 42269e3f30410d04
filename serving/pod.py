"""The models one serving pod hosts: the default text model (today's routes) and every declared model
``FLYWHEEL_SERVE_MODELS`` names (unset: all), each with its own registry, runtime and watcher (so each is
hot-swapped on its own), sharing the pod's publishers and micro-batcher."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from serving.exceptions import NotFound
from serving.services import Services

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

    def close(self) -> None:
        for services in self.others.values():
            services.close()
        self.default.close()  # last: it owns the shared publishers
