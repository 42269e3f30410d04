"""Model specs: declared once (YAML or CLI), checked completely, stored in Postgres, read by a catalog
that sees a model declared a moment ago."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest

from tasks import ModelCatalog, ModelStore, SpecError, load_specs, parse_spec

AUTOMATION = {
    "name": "automation", "task": "tabular-classification", "labels": ["failed", "succeeded"],
    "positive_label": "failed", "kinds": ["lightgbm"],
    "features": [{"name": "duration_s", "type": "numeric", "min": 0}, {"name": "os", "type": "categorical",
                                                                       "categories": ["linux", "windows"]}],
    "training": {"policy": {"full_cron": "0 2 * * 0", "full_threshold": 500}},
}


def test_a_spec_round_trips_through_its_document() -> None:
    spec = parse_spec(AUTOMATION)
    assert spec.features is not None and spec.features.names == ("duration_s", "os")
    assert parse_spec(spec.to_document()) == spec


@pytest.mark.parametrize(("change", "problem"), [
    ({"task": "text-classification"}, "takes no features"),
    ({"features": None}, "needs its features"),
    ({"labels": ["failed"]}, "labels"),
    ({"labels": ["a", "a"]}, "labels repeat"),
    ({"positive_label": "maybe"}, "positive_label 'maybe' is not one of the labels"),
    ({"task": "regression"}, "task"),
    ({"name": "has space"}, "name"),
    ({"colour": "red"}, "colour"),
])
def test_a_bad_spec_is_refused_with_every_problem_named(change: dict[str, object], problem: str) -> None:
    with pytest.raises(SpecError, match=problem):
        parse_spec({**AUTOMATION, **change}, "spec")


def test_a_models_file_is_read_and_names_must_be_unique(tmp_path: Path) -> None:
    import yaml

    path = tmp_path / "models.yaml"
    path.write_text(yaml.safe_dump({"models": [AUTOMATION, {"name": "sentiment", "task": "text-classification",
                                                            "labels": ["neg", "pos"]}]}))
    assert [s.name for s in load_specs(path)] == ["automation", "sentiment"]
    path.write_text(yaml.safe_dump({"models": [AUTOMATION, AUTOMATION]}))
    with pytest.raises(SpecError, match="repeat"):
        load_specs(path)
    path.write_text("models: {automation: 1}")
    with pytest.raises(SpecError, match="`models`"):
        load_specs(path)


def test_the_store_and_the_catalog(db_url: str) -> None:
    now = [0.0]
    catalog = ModelCatalog(max_age_s=30.0, clock=lambda: now[0])
    with psycopg.connect(db_url, autocommit=True) as conn:
        store = ModelStore(conn)
        assert catalog.get(conn, "automation") is None
        assert store.put(parse_spec(AUTOMATION), source="test")
        assert not store.put(parse_spec(AUTOMATION), source="test")  # unchanged
        assert catalog.get(conn, "automation") == parse_spec(AUTOMATION)  # a miss reads again at once
        changed = parse_spec({**AUTOMATION, "labels": ["failed", "succeeded", "skipped"]})
        store.put(changed, source="test")
        assert catalog.get(conn, "automation") != changed  # cached until max_age_s
        now[0] = 31.0
        assert catalog.get(conn, "automation") == changed
        assert not store.put(parse_spec({**AUTOMATION, "description": "x"}), source="t", replace=False)
        lookup = catalog.lookup(conn)
        assert lookup("nobody") is None and lookup("automation") == changed
