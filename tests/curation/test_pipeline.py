"""Batches of the curation pipeline against the in-memory store: clusters across batches, trust that
falls and quarantines a user's earlier samples too, late joins, and a failed write that changes nothing."""

from __future__ import annotations

import dataclasses
import random
from datetime import timedelta

import pytest

from curation import CurationConfig, Curator, MemoryCurationStore, Pending
from curation.base import BatchWrite
from curation.config import LabelQualityConfig, ServiceConfig
from tests.trainer.lifecycle_helpers import rows as corpus

from .helpers import LABELS, T0, pending, probs

CFG = CurationConfig(label_quality=LabelQualityConfig(min_class_count=3), service=ServiceConfig(batch_size=100))


def run(store: MemoryCurationStore, rows: list[Pending], config: CurationConfig = CFG) -> Curator:
    store.land(rows)
    curator = Curator(config, LABELS)
    while curator.curate_batch(store) is not None:
        pass
    return curator


def verdict(store: MemoryCurationStore, row: Pending) -> tuple[str, tuple[str, ...]]:
    v = store.state.verdicts[row.id]
    return v.status, v.reasons


def test_every_joined_row_becomes_a_sample_with_its_scores() -> None:
    store = MemoryCurationStore()
    rows = [pending("what a lovely film", "positive", served="positive", probabilities=probs("positive")),
            pending("dull and far too long", None, thumbs="down", served="positive"),
            pending("it was fine i guess", "neutral", served="positive", probabilities=probs("positive", 0.5))]
    run(store, rows)
    assert verdict(store, rows[0]) == ("accepted", ())
    assert verdict(store, rows[1]) == ("rejected", ("no_label",))
    assert verdict(store, rows[2]) == ("accepted", ())
    s = store.state.samples
    assert not s[rows[0].id].disagreement and s[rows[1].id].disagreement and s[rows[2].id].disagreement
    assert s[rows[0].id].self_confidence == pytest.approx(0.8) and s[rows[1].id].self_confidence is None
    assert store.state.cursor.watermark == rows[-1].id


def test_duplicates_are_found_across_batches() -> None:
    store = MemoryCurationStore()
    first = pending("The plot twists kept me guessing until the very end.", "positive", user="a")
    run(store, [first])
    again = pending("the plot twists kept me guessing until the very end", "positive", user="b")
    near = pending("The plot twists kept me guessing until the very end!! Loved it", "positive", user="c")
    run(store, [again, near])
    assert verdict(store, first) == ("accepted", ())
    assert verdict(store, again) == ("rejected", ("duplicate",))
    assert verdict(store, near) == ("accepted", ("near_duplicate",))
    assert {store.state.samples[r.id].cluster_id for r in (first, again, near)} == {first.id}


def test_a_conflicting_label_re_decides_the_stored_cluster() -> None:
    store = MemoryCurationStore()
    a = pending("An uneven, sometimes charming comedy.", "positive", user="a")
    run(store, [a])
    b = pending("An uneven, sometimes charming comedy", "negative", user="b")
    run(store, [b])
    # one vote each, equal trust: nothing settles it, both sides wait for review
    assert verdict(store, a) == ("quarantined", ("conflicting_duplicates",))
    assert verdict(store, b) == ("quarantined", ("conflicting_duplicates",))
    c = pending("an uneven sometimes charming comedy!", "positive", user="c")
    curator = run(store, [c])
    assert verdict(store, a) == ("accepted", ())
    assert verdict(store, c) == ("rejected", ("duplicate",))
    assert verdict(store, b) == ("quarantined", ("conflicting_duplicates",))
    assert curator is not None


def test_a_label_issue_needs_thresholds_then_is_quarantined() -> None:
    store = MemoryCurationStore()
    texts = [r for r in corpus("vader_movies") if r.label != "neutral"][:8]
    honest = [pending(r.text, r.label, user=f"h{i}", probabilities=probs(r.label, 0.9)) for i, r in enumerate(texts)]
    flipped = pending("a masterpiece, every minute of it", "negative", user="x", probabilities=probs("positive", 0.9))
    run(store, [*honest, flipped])
    assert verdict(store, flipped) == ("quarantined", ("label_issue",))
    assert store.state.samples[flipped.id].suggested_label == "positive"
    assert all(verdict(store, r) == ("accepted", ()) for r in honest)


def test_a_user_who_keeps_contradicting_falls_below_the_floor_and_is_quarantined_retroactively() -> None:
    store = MemoryCurationStore()
    # the model is confident and right; "mallory" flips every label, "alice" does not
    texts = [(r.text, r.label) for r in corpus("vader_movies") if r.label != "neutral"][:60]
    flip = {"positive": "negative", "negative": "positive"}
    early = [pending(t, flip[y], user="mallory", probabilities=probs(y, 0.9)) for t, y in texts[:4]]
    run(store, early)  # no class has enough samples for a threshold yet: nothing to judge them by
    assert all(verdict(store, r) == ("accepted", ()) for r in early)
    rows = [pending(t, y, user="alice", probabilities=probs(y)) for t, y in texts[4:44]]
    rows += [pending(t, flip[y], user="mallory", probabilities=probs(y, 0.9)) for t, y in texts[44:60]]
    run(store, rows)
    mallory = store.state.annotators["mallory"]
    assert mallory.low_trust and mallory.disagree >= 10
    assert not store.state.annotators["alice"].low_trust
    for r in early + [r for r in rows if r.user_id == "mallory"]:
        status, reasons = verdict(store, r)
        assert status == "quarantined" and "low_trust" in reasons, (r.text, reasons)
    alice = [store.state.samples[r.id] for r in rows if r.user_id == "alice"]
    assert all(s.verdict.status == "accepted" for s in alice)
    assert all(s.verdict.weight > 0.9 for s in alice)


def test_late_joins_below_the_watermark_are_curated() -> None:
    store = MemoryCurationStore()
    run(store, [pending("first text", "positive", id=10_001), pending("second text", "positive", id=10_005)])
    assert store.state.cursor.watermark == 10_005
    late = pending("joined after its id was passed", "negative", id=10_003, resolved_at=T0 + timedelta(seconds=5))
    run(store, [late])
    assert late.id in store.state.samples
    older = pending("resolved long before the cursor", "negative", id=10_002, resolved_at=T0 - timedelta(hours=1))
    run(store, [older])
    assert older.id not in store.state.samples  # outside the margin: only the start-up sweep finds it
    curator = Curator(CFG, LABELS)
    assert curator.curate_batch(store, sweep=True) is not None
    assert older.id in store.state.samples


def test_a_failed_write_leaves_nothing_behind() -> None:
    class Failing(MemoryCurationStore):
        def write(self, batch: BatchWrite) -> None:
            super().write(batch)
            raise RuntimeError("commit failed")

    store = Failing()
    store.land([pending("one", "positive"), pending("two", "negative")])
    with pytest.raises(RuntimeError):
        Curator(CFG, LABELS).curate_batch(store)
    assert not store.state.samples and store.state.cursor.watermark == 0 and not store.state.annotators


def test_a_replayed_pass_changes_nothing() -> None:
    store = MemoryCurationStore()
    run(store, [pending("one more film", "positive"), pending("one more film!", "negative", user="u2")])
    before = (dict(store.state.verdicts), dict(store.state.annotators))
    assert Curator(CFG, LABELS).curate_batch(store) is None
    assert Curator(CFG, LABELS).curate_batch(store, sweep=True) is None
    assert (dict(store.state.verdicts), dict(store.state.annotators)) == before


def test_under_drift_honest_users_stay_trusted_and_their_label_issues_are_accepted_down_weighted() -> None:
    # a slice where the model is confidently wrong on half the texts, and every user meets it as often: no
    # one loses trust, and their label issues are what the model must learn
    store = MemoryCurationStore()
    flip = {"positive": "negative", "negative": "positive"}
    texts = [(r.text, r.label) for r in corpus("vader_tweets") if r.label != "neutral"][:120]
    rows = [dataclasses.replace(
        pending(t, y, user=f"h{i % 4}", probabilities=probs(flip[y] if (i // 4) % 2 else y, 0.85)),
        domain="tweets") for i, (t, y) in enumerate(texts)]
    run(store, rows[:40])
    run(store, rows[40:])
    annotators = store.state.annotators
    assert all(annotators[f"h{i}"].labels == 30 and not annotators[f"h{i}"].low_trust for i in range(4))
    issues = [store.state.samples[r.id] for r in rows if store.state.samples[r.id].label_issue]
    assert len(issues) >= 40
    # new users' label issues wait in quarantine; once trusted, they are re-curated: accepted at half weight
    assert all(s.verdict.status == "accepted" and s.verdict.reasons[0] == "label_issue" for s in issues)
    assert all(s.verdict.weight == pytest.approx(0.5 * min(1.0, (s.trust or 0.0) / 0.8))
               for s in issues if s.verdict.reasons == ("label_issue",))
    assert not any(store.state.verdicts[r.id].status == "quarantined" for r in rows)


def test_a_flipper_under_drift_still_falls_below_the_floor() -> None:
    store = MemoryCurationStore()
    flip = {"positive": "negative", "negative": "positive"}
    texts = [(r.text, r.label) for r in corpus("vader_tweets") if r.label != "neutral"][:160]
    rows, wrong = [], random.Random(2)
    for i, (t, y) in enumerate(texts):
        served = flip[y] if wrong.random() < 1 / 4 else y  # the model is wrong on a quarter of the texts
        user = "mallory" if i % 4 == 0 else f"h{i % 3}"
        label = flip[y] if user == "mallory" else y
        rows.append(dataclasses.replace(pending(t, label, user=user, probabilities=probs(served, 0.85)),
                                        domain="tweets"))
    run(store, rows)
    assert store.state.annotators["mallory"].low_trust
    assert not any(store.state.annotators[f"h{i}"].low_trust for i in range(3))
    assert all(store.state.verdicts[r.id].status == "quarantined" for r in rows if r.user_id == "mallory")


FDR = CFG  # the default rule
FLOOR = CFG.model_copy(update={"annotators": CFG.annotators.model_copy(update={"rule": "floor"})})


def _stream(users: dict[str, tuple[int, float, bool]], seed: int = 5) -> list[Pending]:
    """Interleaved labels of real texts: user -> (labels, share of them the served model gets wrong,
    flips every label). The model serves every text at 0.85 on its label."""
    flip = {"positive": "negative", "negative": "positive"}
    texts = iter([(r.text, r.label) for r in corpus("vader_movies") if r.label != "neutral"])
    rng = random.Random(seed)
    queue = []
    for user, (n, wrong, flipper) in users.items():
        misses = set(rng.sample(range(n), round(n * wrong)))
        queue += [(rng.random(), user, i in misses, flipper) for i in range(n)]
    rows = []
    for _, user, miss, flipper in sorted(queue):
        t, y = next(texts)
        rows.append(pending(t, flip[y] if flipper else y, user=user, probabilities=probs(flip[y] if miss else y, 0.85)))
    return rows


def test_the_fdr_rule_quarantines_no_honest_user_by_chance_where_the_floor_does() -> None:
    # 30 honest users, 8 labels each; the model is wrong on 1 in 8 of most users' texts, and by chance on
    # 3 of unlucky's 8: alone, a floor reads that as distrust, the fdr rule weighs it against 30 users
    users = {f"h{i}": (8, 1 / 8, False) for i in range(29)} | {"unlucky": (8, 3 / 8, False)}
    rows = _stream(users)
    by_rule = {}
    for name, config in (("floor", FLOOR), ("fdr", FDR)):
        store = MemoryCurationStore()
        run(store, [dataclasses.replace(r) for r in rows], config)
        by_rule[name] = {u for u, a in store.state.annotators.items() if a.low_trust}
    assert by_rule == {"floor": {"unlucky"}, "fdr": set()}


def test_the_fdr_rule_still_catches_a_lone_flipper_and_many_at_once() -> None:
    honest = {f"h{i}": (12, 1 / 6, False) for i in range(20)}
    for flippers in (["mallory"], [f"m{i}" for i in range(8)]):
        store = MemoryCurationStore()
        rows = _stream(honest | {m: (10, 1 / 6, True) for m in flippers})
        run(store, rows, FDR)
        assert {u for u, a in store.state.annotators.items() if a.low_trust} == set(flippers)
        assert all(verdict(store, r)[0] == "quarantined" for r in rows if r.user_id in flippers)


def test_under_the_fdr_rule_others_evidence_moves_a_user_who_labelled_nothing_new() -> None:
    # "dubious" disagrees with the model on 3 of 8: among 30 honest users, no discovery; once 8 flippers
    # stand out, the cutoff loosens and dubious's earlier samples are re-curated (quarantined) in a batch
    # that holds none of their labels
    honest = {f"h{i}": (10, 1 / 10, False) for i in range(30)}
    first = _stream(honest | {"dubious": (8, 3 / 8, False)}, seed=7)
    store = MemoryCurationStore()
    run(store, first, FDR)
    assert not store.state.annotators["dubious"].low_trust
    mine = [r for r in first if r.user_id == "dubious"]
    assert all(verdict(store, r)[0] == "accepted" for r in mine if not store.state.samples[r.id].label_issue)
    run(store, _stream({f"m{i}": (10, 1 / 10, True) for i in range(8)}, seed=8), FDR)
    assert store.state.annotators["dubious"].low_trust
    assert all(verdict(store, r)[0] == "quarantined" and "low_trust" in verdict(store, r)[1] for r in mine)
