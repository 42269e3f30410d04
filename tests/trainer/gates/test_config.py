"""One configuration for all gates (dict or YAML), the gate registry, and the package's public surface."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import trainer.gates
from trainer.gates import (
    GATES,
    BehaviourGate,
    EvaluationGate,
    FakeClock,
    GateConfigError,
    GatesConfig,
    QualityGate,
    build_gates,
)


def test_an_empty_configuration_is_the_documented_defaults() -> None:
    config = GatesConfig.from_mapping(None)
    assert config == GatesConfig()
    assert config.evaluation.metric_weights == {"accuracy": 0.4, "macro_f1": 0.4, "calibration": 0.2}
    assert config.evaluation.min_improvement == 0.005 and config.evaluation.alpha == 0.05
    assert config.behaviour.min_pass_rate == {"invariance": 0.9, "directional": 0.5, "mft": 0.5}
    assert config.quality.max_text_length == 5000


def test_yaml_sets_each_gate(tmp_path: Path) -> None:
    path = tmp_path / "gates.yaml"
    path.write_text("quality:\n  max_duplicate_share: 0.1\nevaluation:\n  test: mcnemar\n"
                    "  metric_weights: {accuracy: 1.0}\nbehaviour:\n  latency_budget_ms: 50\n")
    config = GatesConfig.from_yaml(path)
    assert config.quality.max_duplicate_share == 0.1
    assert config.evaluation.test == "mcnemar" and config.evaluation.metric_weights == {"accuracy": 1.0}
    assert config.behaviour.latency_budget_ms == 50
    gates = build_gates(config, clock=FakeClock())
    assert [type(g) for g in gates] == [QualityGate, EvaluationGate, BehaviourGate] == list(GATES)
    assert [g.config for g in gates] == [config.quality, config.evaluation, config.behaviour]


@pytest.mark.parametrize(("text", "message"), [
    ("evaluation:\n  alpah: 0.1\n", "evaluation.alpah: Extra inputs are not permitted"),
    ("evaluation:\n  test: t-test\n", "evaluation.test: Input should be 'bootstrap' or 'mcnemar'"),
    ("quality:\n  max_duplicate_share: 2\n", "quality.max_duplicate_share: Input should be less than or equal to 1"),
    ("- a list\n", "expected a mapping at the top level"),
    ("quality: [unclosed\n", "cannot be read as YAML"),
])
def test_a_bad_configuration_is_a_clear_error(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "gates.yaml"
    path.write_text(text)
    with pytest.raises(GateConfigError) as info:
        GatesConfig.from_yaml(path)
    assert message in str(info.value) and str(path) in str(info.value)


def test_all_names_exist_and_every_public_name_is_listed() -> None:
    exported = set(trainer.gates.__all__)
    assert len(exported) == len(trainer.gates.__all__)
    assert all(hasattr(trainer.gates, name) for name in exported)
    public = {n for n in vars(trainer.gates) if not n.startswith("_")}
    submodules = {n for n in public if type(getattr(trainer.gates, n)).__name__ == "module"}
    assert public - submodules == exported


def test_only_the_boundary_module_imports_great_expectations_and_only_lazily() -> None:
    """Importing GE takes seconds: ``trainer.gates._ge`` imports it inside the call, nothing else does."""
    for path in Path(trainer.gates.__file__).parent.glob("*.py"):
        tree = ast.parse(path.read_text())
        top_level = [node for node in tree.body if isinstance(node, ast.Import | ast.ImportFrom)]
        names = [alias.name for node in top_level for alias in node.names]
        names += [node.module or "" for node in top_level if isinstance(node, ast.ImportFrom)]
        assert not any(name.startswith("great_expectations") for name in names), path
        if path.name != "_ge.py":
            assert "great_expectations" not in path.read_text().replace("Great Expectations", ""), path
