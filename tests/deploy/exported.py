"""What the code really exports to Prometheus, and which series a PromQL expression reads.

Shared by the alert-rule and the dashboard checks: every metrics class is instantiated on a fresh
``CollectorRegistry`` and its families expanded into the series names Prometheus sees (a Counter gains
``_total``, a Histogram ``_bucket``/``_sum``/``_count``). A source scan makes sure no class that registers
metrics is missing from ``METRICS_CLASSES``.
"""

from __future__ import annotations

import re
from pathlib import Path

from prometheus_client import CollectorRegistry
from prometheus_client.metrics import MetricWrapperBase

from curation.drift import DriftMetrics
from curation.metrics import CurationMetrics
from serving.canary import CanaryMetrics
from serving.metrics import ServingMetrics
from streams.metrics import StreamMetrics
from trainer.metrics import TrainerMetrics

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("flywheel", "schemas", "streams", "curation", "trainer", "registry", "serving")
METRICS_CLASSES = (StreamMetrics, CurationMetrics, DriftMetrics, TrainerMetrics, ServingMetrics, CanaryMetrics)
# Series Prometheus adds to every scrape target itself (not exported by the code).
SYNTHETIC = {"up": {"instance", "job"}}
# Labels Prometheus attaches to every scraped series.
TARGET_LABELS = {"instance", "job"}

_SUFFIXES: dict[str, dict[str, set[str]]] = {
    "counter": {"_total": set()},
    "gauge": {"": set()},
    "summary": {"": {"quantile"}, "_sum": set(), "_count": set()},
    "histogram": {"_bucket": {"le"}, "_sum": set(), "_count": set()},
}
# `Counter("name"`, `PromCounter(\n "name"`, `Histogram("name"` ... (collections.Counter takes no string literal)
_DECLARED = re.compile(r"\b\w*(?:Counter|Gauge|Histogram|Summary)\(\s*[\"']([a-zA-Z_:][\w:]*)[\"']")


def exported() -> dict[str, set[str]]:
    """Series name -> its label names, for every metric the code registers."""
    series: dict[str, set[str]] = {}
    for cls in METRICS_CLASSES:
        registry = CollectorRegistry()
        instance = cls(registry)
        labels = {m._name: set(m._labelnames) for m in vars(instance).values() if isinstance(m, MetricWrapperBase)}
        for family in registry.collect():
            for suffix, extra in _SUFFIXES[family.type].items():
                series[family.name + suffix] = labels[family.name] | extra
    return series


def declared_in_sources() -> set[str]:
    """Metric names passed to a prometheus_client constructor anywhere in the packages (without the
    ``_total`` a Counter's name may be declared with)."""
    names = set()
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            names |= {re.sub(r"_total$", "", n) for n in _DECLARED.findall(path.read_text())}
    return names


def promql(expr: str) -> tuple[set[str], set[str]]:
    """Metric names and label names an expression refers to (enough PromQL for alert rules and panels;
    Grafana's ``$variables`` may appear inside strings and range brackets)."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'', '""', expr)
    label_names: set[str] = set()
    clause = r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)"
    for match in re.finditer(clause, expr):
        label_names |= {s.strip() for s in match.group(1).split(",") if s.strip()}
    expr = re.sub(clause, " ", expr)
    metrics: set[str] = set()
    for match in re.finditer(r"([a-zA-Z_:][\w:]*)?\s*\{([^}]*)\}", expr):
        label_names |= set(re.findall(r"([a-zA-Z_]\w*)\s*(?:=~|!~|!=|=)", match.group(2)))
    expr = re.sub(r"\{[^}]*\}|\[[^\]]*\]", " ", expr)
    words = {"and", "or", "unless", "bool", "offset", "group_left", "group_right", "inf", "nan"}
    for match in re.finditer(r"(?<![\w.$])([a-zA-Z_:][\w:]*)(?![\w:])(?!\s*\()", expr):
        if match.group(1).lower() not in words:
            metrics.add(match.group(1))
    return metrics, label_names


def unknown_references(expr: str, series: dict[str, set[str]]) -> list[str]:
    """What ``expr`` reads that the code does not export: metric names, then label names."""
    metrics, labels = promql(expr)
    problems = [f"metric {m}" for m in sorted(metrics - set(series))]
    if not metrics:
        problems.append("no metric at all")
    known = set().union(*(series.get(m, set()) for m in metrics)) | TARGET_LABELS
    problems += [f"label {lb}" for lb in sorted(labels - known)]
    return problems
