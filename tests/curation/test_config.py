"""The curation config: defaults built in, YAML overrides, unknown keys refused, and the example in
docs/curation.md is exactly the defaults."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from curation import CurationConfig, CurationError, load_curation_config

DOC = Path(__file__).resolve().parents[2] / "docs" / "curation.md"


def test_no_file_means_the_defaults() -> None:
    assert load_curation_config(None) == CurationConfig()


def test_a_yaml_file_overrides_some_thresholds(tmp_path: Path) -> None:
    path = tmp_path / "curation.yaml"
    path.write_text("annotators:\n  floor: 0.3\nduplicates:\n  jaccard: 0.9\n")
    config = load_curation_config(path)
    assert config.annotators.floor == 0.3 and config.duplicates.jaccard == 0.9
    assert config.weights == CurationConfig().weights


@pytest.mark.parametrize(("text", "problem"), [
    ("annotators:\n  flor: 0.3\n", "annotators.flor"),
    ("duplicates:\n  num_perm: 64\n  bands: 5\n", "multiple of bands"),
    ("weights:\n  min: 2\n  max: 1\n", "exceeds"),
    ("annotators: [", "cannot read"),
])
def test_bad_files_are_refused_naming_the_problem(tmp_path: Path, text: str, problem: str) -> None:
    path = tmp_path / "curation.yaml"
    path.write_text(text)
    with pytest.raises(CurationError, match=re.escape(problem)):
        load_curation_config(path)


def test_the_documented_yaml_is_the_default() -> None:
    block = re.search(r"```yaml\n(.*?)```", DOC.read_text(), re.S)
    assert block is not None
    assert CurationConfig.model_validate(yaml.safe_load(block.group(1))) == CurationConfig()
