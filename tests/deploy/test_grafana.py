"""The Grafana dashboards and provisioning under deploy/grafana, checked against the code and the compose file.

Every PromQL expression of every panel and annotation may read only series the code exports, with their
labels (tests/deploy/exported.py); panels refer to the provisioned datasource by uid; the provisioning
points at the folder compose mounts the dashboards into.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from serving.app import ROUTES
from tests.deploy.exported import SYNTHETIC, declared_in_sources, exported, promql, unknown_references

ROOT = Path(__file__).resolve().parents[2]
GRAFANA = ROOT / "deploy" / "grafana"
DASHBOARDS = GRAFANA / "dashboards"
PROVISIONING = GRAFANA / "provisioning"
COMPOSE = ROOT / "docker-compose.yml"
DASHBOARD_FILES = sorted(DASHBOARDS.glob("*.json"))


@cache
def _yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


@cache
def _series() -> dict[str, set[str]]:
    return {**exported(), **SYNTHETIC}


def _dashboard(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def _panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panel.get("panels", [])  # the panels of a collapsed row


def _grafana_service() -> dict[str, Any]:
    services: dict[str, dict[str, Any]] = _yaml(COMPOSE)["services"]
    (grafana,) = [s for s in services.values() if str(s.get("image", "")).startswith("grafana/grafana")]
    return grafana


def _mounts(service: dict[str, Any]) -> dict[Path, Path]:
    """Repository path -> container path of the service's bind mounts."""
    mounts = {}
    for volume in service.get("volumes", []):
        source, target = volume.split(":")[:2]
        if source.startswith("."):
            mounts[(COMPOSE.parent / source).resolve()] = Path(target)
    return mounts


def _datasources() -> list[dict[str, Any]]:
    return [ds for f in sorted((PROVISIONING / "datasources").glob("*.y*ml")) for ds in _yaml(f)["datasources"]]


def _prometheus_uid() -> str:
    (prometheus,) = [ds for ds in _datasources() if ds["type"] == "prometheus"]
    return str(prometheus["uid"])


def test_there_are_dashboards_and_the_overview_is_home() -> None:
    assert DASHBOARD_FILES and DASHBOARDS / "flywheel-overview.json" in DASHBOARD_FILES
    env = _grafana_service()["environment"]
    home = Path(env["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"])
    mounted = _mounts(_grafana_service())[DASHBOARDS.resolve()]
    assert home.parent == mounted and (DASHBOARDS / home.name).is_file(), home


def test_compose_mounts_provisioning_and_dashboards_where_the_provider_looks() -> None:
    mounts = _mounts(_grafana_service())
    assert mounts.get(PROVISIONING.resolve()) == Path("/etc/grafana/provisioning"), "Grafana reads provisioning there"
    for source in mounts:
        assert source.exists(), f"mounted but missing: {source}"
    providers = [p for f in sorted((PROVISIONING / "dashboards").glob("*.y*ml")) for p in _yaml(f)["providers"]]
    assert providers, "no dashboard provider"
    (provider,) = providers
    assert provider["type"] == "file"
    assert Path(provider["options"]["path"]) == mounts[DASHBOARDS.resolve()], "provider path is not the mounted folder"
    grafana_deps = _grafana_service().get("depends_on") or {}
    assert "prometheus" in grafana_deps


def test_the_prometheus_datasource_is_the_compose_prometheus() -> None:
    sources = _datasources()
    assert len({ds["uid"] for ds in sources}) == len(sources) and len({ds["name"] for ds in sources}) == len(sources)
    (prometheus,) = [ds for ds in sources if ds["type"] == "prometheus"]
    assert prometheus["uid"] == "prometheus" and prometheus.get("isDefault") is True
    url = urlsplit(prometheus["url"])
    services = _yaml(COMPOSE)["services"]
    assert url.hostname in services and str(services[url.hostname]["image"]).startswith("prom/prometheus")
    published = [str(p).rsplit(":", 1)[-1] for p in services[url.hostname].get("ports", [])]
    assert str(url.port) in published or url.port == 9090


def test_the_metric_scanner_sees_every_metrics_class() -> None:
    """A class registering metrics that ``METRICS_CLASSES`` does not list would escape every check here."""
    families = {re.sub(r"_(total|bucket|sum|count)$", "", s) for s in exported()}
    assert declared_in_sources() <= families, sorted(declared_in_sources() - families)
    assert {"flywheel_drift_psi", "flywheel_online_accuracy", "flywheel_training_runs"} <= families


def test_dashboard_uids_and_titles_are_unique() -> None:
    dashboards = [_dashboard(p) for p in DASHBOARD_FILES]
    uids = [d["uid"] for d in dashboards]
    titles = [d["title"] for d in dashboards]
    assert len(set(uids)) == len(uids) and len(set(titles)) == len(titles)
    assert all(re.fullmatch(r"[a-zA-Z0-9_-]{1,40}", uid) for uid in uids), uids


@pytest.mark.parametrize("path", DASHBOARD_FILES, ids=lambda p: p.name)
def test_dashboard_structure(path: Path) -> None:
    dashboard = _dashboard(path)
    assert dashboard["schemaVersion"] >= 39
    assert dashboard.get("id") is None, "provisioned dashboards carry no database id"
    assert "flywheel" in dashboard.get("tags", [])
    panels = list(_panels(dashboard))
    assert panels
    ids = [p["id"] for p in panels]
    assert len(set(ids)) == len(ids), f"duplicate panel ids: {sorted(i for i in ids if ids.count(i) > 1)}"
    occupied: set[tuple[int, int]] = set()
    for panel in panels:
        pos = panel["gridPos"]
        assert pos["x"] >= 0 and pos["w"] > 0 and pos["x"] + pos["w"] <= 24, f"{panel['title']}: {pos}"
        cells = {(x, y) for x in range(pos["x"], pos["x"] + pos["w"]) for y in range(pos["y"], pos["y"] + pos["h"])}
        assert not cells & occupied, f"{panel['title']} overlaps another panel"
        occupied |= cells
        if panel["type"] == "row":
            continue
        assert panel.get("title") and panel.get("targets"), panel.get("title")
        refs = [t["refId"] for t in panel["targets"]]
        assert len(set(refs)) == len(refs), f"{panel['title']}: duplicate refIds"


def _datasource_refs(dashboard: dict[str, Any]) -> Iterator[tuple[str, Any]]:
    for panel in _panels(dashboard):
        if panel["type"] == "row":
            continue
        yield panel["title"], panel.get("datasource")
        for t in panel["targets"]:
            yield f"{panel['title']} {t['refId']}", t.get("datasource", panel.get("datasource"))
    for annotation in dashboard.get("annotations", {}).get("list", []):
        if not annotation.get("builtIn"):
            yield annotation["name"], annotation.get("datasource")
    for variable in dashboard.get("templating", {}).get("list", []):
        if variable.get("type") == "query":
            yield variable["name"], variable.get("datasource")


@pytest.mark.parametrize("path", DASHBOARD_FILES, ids=lambda p: p.name)
def test_dashboard_uses_the_provisioned_datasource(path: Path) -> None:
    uid = _prometheus_uid()
    variables = {v["name"] for v in _dashboard(path).get("templating", {}).get("list", [])
                 if v.get("type") == "datasource" and v.get("query") == "prometheus"}
    allowed = {uid} | {f"${{{v}}}" for v in variables} | {f"${v}" for v in variables}
    for where, ref in _datasource_refs(_dashboard(path)):
        assert isinstance(ref, dict) and ref.get("type") == "prometheus", f"{where}: datasource {ref!r}"
        assert ref.get("uid") in allowed, f"{where}: datasource uid {ref.get('uid')!r}, provisioned {uid!r}"


def _expressions(dashboard: dict[str, Any]) -> Iterator[tuple[str, str]]:
    for panel in _panels(dashboard):
        for t in panel.get("targets", []):
            yield f"{panel['title']} {t['refId']}", str(t["expr"])
    for annotation in dashboard.get("annotations", {}).get("list", []):
        if annotation.get("expr"):
            yield f"annotation {annotation['name']}", str(annotation["expr"])
    for variable in dashboard.get("templating", {}).get("list", []):
        query = variable.get("query")
        query = query.get("query") if isinstance(query, dict) else query
        if variable.get("type") == "query" and query:
            # label_values(metric, label) / label_values(label): the metric is an expression, label one of its labels
            match = re.fullmatch(r"\s*label_values\((?:(.*),)?\s*(\w+)\s*\)\s*", str(query))
            if match:
                metric, label = match.group(1), match.group(2)
                yield f"variable {variable['name']}", f"count by ({label}) ({metric or 'up'})"
            else:
                yield f"variable {variable['name']}", str(query)


@pytest.mark.parametrize("path", DASHBOARD_FILES, ids=lambda p: p.name)
def test_dashboard_expressions_read_only_exported_metrics(path: Path) -> None:
    expressions = list(_expressions(_dashboard(path)))
    assert expressions
    for where, expr in expressions:
        problems = unknown_references(expr, _series())
        assert not problems, f"{path.name} / {where}: not exported by the code: {problems}\n{expr}"
        for route in re.findall(r'route\s*=\s*"([^"]*)"', expr):
            assert route in ROUTES, f"{where}: route {route!r} is not a route of the serving app"


def test_dashboards_cover_every_stage() -> None:
    used: set[str] = set()
    for path in DASHBOARD_FILES:
        for _, expr in _expressions(_dashboard(path)):
            used |= promql(expr)[0]
    wanted = {
        # ingest, dead letters, lag
        "flywheel_stream_landed_total", "flywheel_stream_consumed_total", "flywheel_stream_dead_letters_total",
        "flywheel_stream_lag",
        # curation outcomes
        "flywheel_curation_samples_total", "flywheel_curation_reasons_total",
        # training runs, durations, gate verdicts
        "flywheel_training_runs_total", "flywheel_training_run_seconds_bucket", "flywheel_gate_verdicts_total",
        # data-to-deploy: feedback event -> first prediction of a version trained on it
        "flywheel_feedback_to_serving_seconds_bucket", "flywheel_feedback_to_serving_seconds_count",
        # online accuracy per variant, drift
        "flywheel_online_accuracy", "flywheel_drift_domain_auc", "flywheel_drift_psi",
        "flywheel_drift_confidence_shift", "flywheel_estimated_accuracy", "flywheel_reference_accuracy",
        "flywheel_drift_alerts_total", "flywheel_drift_checks_total",
        # serving latency, predictions, swaps, load failures, dropped events
        "flywheel_serving_request_seconds_bucket", "flywheel_serving_predictions_total",
        "flywheel_serving_swaps_total", "flywheel_serving_model_load_failures_total",
        "flywheel_serving_events_dropped_total",
    }
    assert not wanted - used, f"no panel reads {sorted(wanted - used)}"
