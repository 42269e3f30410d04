"""``flywheel demo``: the whole loop on a real drifting stream, on the embedded stack.

A champion is bootstrapped on one domain (vader_movies); then a stream from another domain (tweets or
products) is replayed through ``POST /predict`` and simulated users answer through ``POST /feedback``
from the true labels, at a feedback rate, with label noise and a share of poisoning users who flip
labels. Everything in between is the platform itself: ingest, curation, the trainer and its gates, the
registry, promotion events, the pods' hot swaps (and the canary controller with ``--canary``).

The :class:`Replay` drives one stream and records each step (served version, correct or not, the static
champion's answer) and the platform's decisions; :func:`write_report` turns that into a PNG, an HTML
page and a JSON file. ``bench/efficacy.py`` drives the same :class:`Replay` with checkpoints.
"""

from __future__ import annotations

from flywheel.demo.options import SCENARIOS, DemoOptions
from flywheel.demo.platform import (
           CORPUS_WEIGHT,
           CORPUS_WEIGHT_CHOICES,
           KIND_PARAMS,
           demo_settings,
           fresh_database,
           reset_dir,
)
from flywheel.demo.replay import Replay
from flywheel.demo.report import write_report
from flywheel.demo.stream import DATA, Crowd, Row, read_rows, split_target
from flywheel.demo.timeline import Marker, Step, Timeline

__all__ = ["CORPUS_WEIGHT", "CORPUS_WEIGHT_CHOICES", "DATA", "KIND_PARAMS", "SCENARIOS", "Crowd", "DemoOptions",
           "Marker", "Replay", "Row", "Step", "Timeline", "demo_settings", "fresh_database", "read_rows",
           "reset_dir", "split_target", "write_report"]
