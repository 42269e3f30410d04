"""A run's promotion is made over the champion its candidates were judged against, checked where the alias
moves (``ModelRegistry.promote(expected=)``): an operator's promotion between the run's last look at the
champion and its own alias move stands, and the run is refused; a bootstrap (no champion when it was judged)
too. On the real Postgres, MLflow store and broker."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from core import db
from core.settings import FlywheelSettings
from flywheel.lifecycle import Lifecycle
from registry import CHAMPION, ModelVersionInfo, NoSuchVersion
from registry.announce import now, read_model_events
from trainer.announcing import Announcing, Registered
from trainer.config import PromotionConfig
from trainer.data import Snapshot
from trainer.gates.base import Verdict
from trainer.runs import RunLog
from trainer.selection import Candidate

from .lifecycle_helpers import bootstrapped, register_copy


@pytest.fixture
def lc(settings: FlywheelSettings, registry_db_url: str) -> Iterator[Lifecycle]:
    with bootstrapped(settings, registry_db_url, "direct") as found:
        yield found


@pytest.mark.parametrize("parent", ["1", None], ids=["over-a-champion", "bootstrap"])
def test_an_operator_promotion_between_the_check_and_the_alias_move_refuses_the_run(
        lc: Lifecycle, registry_db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        parent: str | None) -> None:
    candidate, operators = register_copy(lc, tmp_path), register_copy(lc, tmp_path)
    if parent is None:  # versions registered, none the champion yet: what a bootstrap run finds
        lc.registry.delete_alias(CHAMPION)
    name = lc.settings.model_name
    champion = lc.registry.champion
    looked: list[str] = []

    def champion_then_the_operator() -> ModelVersionInfo | None:
        found = champion()
        if not looked:  # the run's look, then the operator's promotion before the run's alias move
            looked.append(found.version if found else "")
            lc.promote(operators.version, "an operator, meanwhile")
        return found

    monkeypatch.setattr(lc.registry, "champion", champion_then_the_operator)
    with db.connect(registry_db_url, autocommit=True) as conn:
        runs = RunLog(conn, name)
        run_id = runs.start(trigger="signal", mode="full", snapshot=Snapshot(0, 0), parent=parent)
        best = Candidate(kind="tfidf-logreg", model=lc.registry.load(candidate.version), train_seconds=0.0,
                         verdicts=[Verdict("evaluation", True, "better than the champion")])
        announcing = Announcing(name, lc.registry, lc.announcer, PromotionConfig(mode="direct"), now)
        result = announcing.announce(runs, Registered(run_id, "full", candidate, best, [], "x", 0, "", "test",
                                                      parent=parent))
        status, reason = conn.execute("SELECT status, reason FROM training_runs WHERE run_id = %s",
                                      (run_id,)).fetchone() or ("", "")
    assert looked == [parent or ""]
    assert result.status == "refused" and (status, reason) == ("refused", result.reason)
    assert f"({parent} -> {operators.version})" in result.reason
    assert lc.registry.champion().version == operators.version  # type: ignore[union-attr]
    with pytest.raises(NoSuchVersion):
        lc.registry.get(candidate.version)
    promoted = [e.version for e in read_model_events(lc.kafka, lc.settings.topics.models) if e.action == "promote"]
    assert promoted == ["1", operators.version]
