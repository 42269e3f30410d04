"""``flywheel demo``: the whole loop on a real drifting stream, on the embedded stack.

Text scenarios: a champion of the default text model is bootstrapped on one domain (vader_movies); then a
stream from another domain (tweets or products) is replayed through ``POST /v1/models/{name}/predict`` and
simulated users answer through ``POST /v1/models/{name}/feedback`` from the true labels, at a feedback rate,
with label noise and a share of poisoning users who flip labels. The tabular scenario ``rainfall``
(:mod:`flywheel.demo.rainfall`) declares a model of its own, bootstraps it on the weather history before its
stream and replays the days in order through an injected drift, each day's observed outcome arriving as
feedback some predictions later. The generation scenario ``dialogue`` (:mod:`flywheel.demo.dialogue`) declares
an NPC text generator, bootstraps its adapter on chatterbot-corpus small talk, and players asking its knowledge topics
through ``/generate`` rate its answers against the references and correct some. Several scenarios run side by
side in one platform. Everything in between is the platform itself: ingest, curation, the trainer and its
gates, the registry, promotion events, the pods' hot swaps (and the canary controller with ``--promotion
canary``).

The :class:`Replay` drives one stream and records each step (served version, correct or not, the static
champion's answer) and the platform's decisions; :func:`write_report` turns that into a PNG, an HTML page and
a JSON file. ``bench/efficacy.py`` drives the same :class:`Replay` with checkpoints.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from flywheel.demo import dialogue, rainfall
    from flywheel.demo.options import DEFAULT_SCENARIOS, SCENARIOS, DemoOptions, Scenario
    from flywheel.demo.platform import (
        CORPUS_WEIGHT,
        CORPUS_WEIGHT_CHOICES,
        KIND_PARAMS,
        corpus_weight_choices,
        demo_bootstrap,
        demo_settings,
        drop_database,
        fresh_database,
        reset_dir,
    )
    from flywheel.demo.replay import Replay
    from flywheel.demo.report import write_report
    from flywheel.demo.stream import DATA, Crowd, Row, read_rows, split_target
    from flywheel.demo.timeline import Marker, Step, Timeline

__all__ = ["CORPUS_WEIGHT", "CORPUS_WEIGHT_CHOICES", "DATA", "DEFAULT_SCENARIOS", "KIND_PARAMS", "SCENARIOS", "Crowd",
           "DemoOptions", "Marker", "Replay", "Row", "Scenario", "Step", "Timeline", "corpus_weight_choices",
           "demo_bootstrap", "demo_settings", "dialogue", "drop_database", "fresh_database", "rainfall", "read_rows",
           "reset_dir", "split_target", "write_report"]

# Each name loads with its module on first use (PEP 562): `flywheel --help` reads the scenarios' options,
# and importing the platform, the kinds and the report for that took ~1 s of the command's start.
_MODULE_OF = {
    **dict.fromkeys(("DEFAULT_SCENARIOS", "SCENARIOS", "DemoOptions", "Scenario"), "options"),
    **dict.fromkeys(("CORPUS_WEIGHT", "CORPUS_WEIGHT_CHOICES", "KIND_PARAMS", "corpus_weight_choices", "demo_bootstrap",
                     "demo_settings", "drop_database", "fresh_database", "reset_dir"), "platform"),
    "Replay": "replay", "write_report": "report",
    **dict.fromkeys(("DATA", "Crowd", "Row", "read_rows", "split_target"), "stream"),
    **dict.fromkeys(("Marker", "Step", "Timeline"), "timeline"),
}


def __getattr__(name: str) -> Any:
    if name in ("dialogue", "rainfall"):
        return importlib.import_module(f"{__name__}.{name}")
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
