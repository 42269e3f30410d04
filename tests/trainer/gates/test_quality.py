"""The Great Expectations data-quality gate on real training frames (vader_movies)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from tests.trainer.gates._data import LABELS, frame
from trainer.gates import GateInput, QualityConfig, QualityGate


@pytest.fixture(scope="module")
def clean() -> pd.DataFrame:
    return frame("vader_movies", 0, 2000)


def _check(training: pd.DataFrame, out: Path | None = None, labels: tuple[str, ...] | None = LABELS,
           **config: object) -> tuple[bool, str, dict[str, object], dict[str, Path]]:
    verdict = QualityGate(QualityConfig.model_validate(config)).check(
        GateInput(training=training, label_set=labels, out_dir=out))
    return verdict.passed, verdict.reason, verdict.details, verdict.artifacts


@pytest.mark.parametrize("background", [True, False])
def test_a_clean_frame_passes_and_writes_the_validation_and_data_docs(clean: pd.DataFrame, tmp_path: Path,
                                                                      background: bool) -> None:
    """The data docs render after the verdict (default, in a background thread: the trainer logs them
    through ``later_artifacts`` before its run ends) or before it: the same verdict, the same docs."""
    gate = QualityGate(QualityConfig(data_docs_in_background=background))
    verdict = gate.check(GateInput(training=clean, label_set=LABELS, out_dir=tmp_path))
    passed, reason, details = verdict.passed, verdict.reason, verdict.details
    artifacts = {**verdict.artifacts, **gate.later_artifacts(verdict)}
    assert ("data_docs" in verdict.artifacts) is not background
    assert passed, reason
    assert reason.startswith("all 9 expectations met on 2000 rows")
    assert details["failed"] == [] and details["rows"] == 2000
    shares = details["label_shares"]
    assert isinstance(shares, dict) and set(shares) == set(LABELS) and abs(sum(shares.values()) - 1) < 1e-6
    result = json.loads(artifacts["validation"].read_text())
    assert result["training"]["success"] and result["label_shares"]["success"]
    assert artifacts["validation"].parent == tmp_path / "quality"
    index = artifacts["data_docs"]
    assert index.name == "index.html" and "label_shares" in index.read_text()
    pages = list((index.parent / "validations").rglob("*.html"))
    assert len(pages) == 2, pages


def test_a_broken_label_column_is_blocked(clean: pd.DataFrame, tmp_path: Path) -> None:
    broken = clean.copy()
    broken.loc[0:4, "label"] = "furious"
    broken.loc[5:11, "label"] = None
    passed, reason, details, artifacts = _check(broken, tmp_path)
    assert not passed
    assert "label in ['negative', 'neutral', 'positive'] (5 row(s), e.g. 'furious'" in reason
    assert "label not null (7 row(s))" in reason
    assert {"label not null", "label in ['negative', 'neutral', 'positive']"} <= set(details["failed"])  # type: ignore[arg-type]
    result = json.loads(artifacts["validation"].read_text())
    assert not result["training"]["success"]


@pytest.mark.parametrize(("mutate", "expected"), [
    (lambda f: f.assign(weight=[-1.0] + [1.0] * (len(f) - 1)), "weight >= 0 (1 row(s), e.g. -1.0)"),
    (lambda f: f.assign(text=["x" * 6000, *f["text"][1:]]), "text length in [1, 5000] (1 row(s)"),
    (lambda f: f.assign(text=["", *f["text"][1:]]), "text length in [1, 5000] (1 row(s)"),
    (lambda f: f.assign(text=["same words"] * 200 + list(f["text"][200:])),
     "duplicate text share <= 0.05 (observed 0.0995)"),
    (lambda f: pd.concat([f[f["label"] != "neutral"].iloc[:1000], f[f["label"] == "neutral"].iloc[:10]]),
     "label share in [0.02, 0.95] (neutral=0.010)"),
    (lambda f: f.assign(label="positive"), "label share in [0.02, 0.95] (positive=1.000)"),
], ids=["negative weight", "too long", "empty text", "duplicates", "rare class", "one class"])
def test_each_expectation_blocks_its_defect(clean: pd.DataFrame, mutate: object, expected: str) -> None:
    assert callable(mutate)
    passed, reason, details, _ = _check(mutate(clean))
    assert not passed
    assert expected in reason, reason
    assert len(details["failed"]) == 1, reason  # type: ignore[arg-type]


def test_bounds_come_from_the_configuration(clean: pd.DataFrame) -> None:
    dupes = clean.assign(text=["same words"] * 200 + list(clean["text"][200:]))
    assert _check(dupes, max_duplicate_share=0.1)[0]
    assert not _check(clean, max_text_length=20)[0]
    neutral_share = (clean["label"] == "neutral").mean()
    assert not _check(clean, min_label_share=neutral_share + 0.01)[0]


def test_without_a_label_set_labels_are_not_checked_against_one(clean: pd.DataFrame) -> None:
    odd = clean.assign(label=clean["label"].replace({"neutral": "meh"}))
    passed, reason, details, _ = _check(odd, labels=None)
    assert passed and "label set unknown" in reason
    assert details["label_set"] is None
    assert not _check(odd)[0]


def test_misconfigured_bounds_are_refused() -> None:
    with pytest.raises(ValueError, match="min_text_length"):
        QualityConfig(min_text_length=10, max_text_length=5)
    with pytest.raises(ValueError, match="min_label_share"):
        QualityConfig(min_label_share=0.5, max_label_share=0.4)
