"""The semver rule as a pure function: first 1.0.0, patch for incremental, minor for full/bootstrap, major
for another kind or label set, never a version already taken."""

from __future__ import annotations

import pytest

from registry import Mode, Semver, next_semver
from registry.semver import Parent, bump_for

LABELS = ("negative", "neutral", "positive")
PARENT = Parent(Semver(1, 2, 3), "tfidf-logreg", LABELS)


def test_parse_and_render_round_trip() -> None:
    assert str(Semver.parse("10.0.7")) == "10.0.7"
    assert Semver.parse("1.10.0") > Semver.parse("1.9.9")
    for bad in ("1.0", "v1.0.0", "01.0.0", "1.0.0-rc1", "champion"):
        with pytest.raises(ValueError):
            Semver.parse(bad)
        assert not Semver.is_semver(bad)


def test_first_model_is_1_0_0_and_an_orphan_starts_a_new_major_line() -> None:
    assert next_semver(None, "tfidf-logreg", LABELS, "bootstrap") == Semver(1, 0, 0)
    assert next_semver(None, "tfidf-logreg", LABELS, "full", [Semver(1, 0, 0), Semver(2, 3, 1)]) == Semver(3, 0, 0)


@pytest.mark.parametrize(("mode", "expected"), [("incremental", "1.2.4"), ("full", "1.3.0"), ("bootstrap", "1.3.0")])
def test_same_kind_and_labels_bump_patch_or_minor(mode: Mode, expected: str) -> None:
    assert str(next_semver(PARENT, "tfidf-logreg", LABELS, mode, [PARENT.semver])) == expected


@pytest.mark.parametrize("mode", ["incremental", "full", "bootstrap"])
def test_another_kind_or_label_set_is_a_major_bump(mode: Mode) -> None:
    assert next_semver(PARENT, "minilm-head", LABELS, mode) == Semver(2, 0, 0)
    assert next_semver(PARENT, "tfidf-logreg", ("negative", "positive"), mode) == Semver(2, 0, 0)
    assert next_semver(PARENT, "tfidf-logreg", (*LABELS, "mixed"), mode) == Semver(2, 0, 0)


def test_label_order_does_not_matter() -> None:
    assert bump_for(PARENT, "tfidf-logreg", tuple(reversed(LABELS)), "incremental") == "patch"


def test_a_bump_moves_past_versions_already_taken() -> None:
    taken = [Semver(1, 2, 3), Semver(1, 2, 4), Semver(1, 2, 5), Semver(1, 3, 0), Semver(1, 4, 1), Semver(2, 0, 0),
             Semver(5, 1, 0)]
    assert next_semver(PARENT, "tfidf-logreg", LABELS, "incremental", taken) == Semver(1, 2, 6)
    assert next_semver(PARENT, "tfidf-logreg", LABELS, "full", taken) == Semver(1, 5, 0)
    assert next_semver(PARENT, "other", LABELS, "full", taken) == Semver(6, 0, 0)
