"""The verdicts of one near-duplicate cluster."""

from __future__ import annotations

import pytest

from curation import CurationConfig, Member, decide_cluster

CFG = CurationConfig()


def m(id: int, label: str | None, user: str | None = None, text: bytes = b"t", **kw: object) -> Member:
    fields: dict[str, object] = {"trust": 0.8, "vote_weight": 0.8, **kw}
    return Member(id=id, user_id=user or f"u{id}", label=label, text_hash=text, **fields)  # type: ignore[arg-type]


def test_a_single_clean_sample_is_accepted_at_full_weight() -> None:
    assert decide_cluster([m(1, "pos")], CFG)[1].status == "accepted"
    assert decide_cluster([m(1, "pos")], CFG)[1].weight == pytest.approx(1.0)
    assert decide_cluster([m(1, "pos")], CFG)[1].reasons == ()


def test_no_label_is_rejected_and_an_unknown_label_quarantined() -> None:
    v = decide_cluster([m(1, None), m(2, "weird", unknown_label=True)], CFG)
    assert (v[1].status, v[1].reasons) == ("rejected", ("no_label",))
    assert (v[2].status, v[2].reasons) == ("quarantined", ("unknown_label",))


def test_an_exact_duplicate_of_an_accepted_sample_is_rejected_a_near_one_down_weighted() -> None:
    v = decide_cluster([m(1, "pos", text=b"a"), m(2, "pos", text=b"a"), m(3, "pos", text=b"b"),
                        m(4, "pos", text=b"b")], CFG)
    assert v[1].status == "accepted" and v[1].weight == pytest.approx(1.0)
    assert (v[2].status, v[2].reasons) == ("rejected", ("duplicate",))
    assert (v[3].status, v[3].reasons) == ("accepted", ("near_duplicate",)) and v[3].weight == pytest.approx(0.5)
    assert (v[4].status, v[4].reasons) == ("rejected", ("duplicate",))


def test_conflicting_labels_settled_by_the_majority_flag_the_minority() -> None:
    v = decide_cluster([m(1, "neg"), m(2, "pos"), m(3, "pos", text=b"u")], CFG)
    assert (v[1].status, v[1].reasons) == ("quarantined", ("conflicting_duplicates",))
    assert v[2].status == "accepted" and v[3].status == "accepted"


def test_an_unsettled_conflict_quarantines_every_side() -> None:
    v = decide_cluster([m(1, "neg"), m(2, "pos")], CFG)
    assert all(x.status == "quarantined" and x.reasons == ("conflicting_duplicates",) for x in v.values())


def test_trust_weighs_the_votes() -> None:
    v = decide_cluster([m(1, "neg", vote_weight=0.95), m(2, "pos", vote_weight=0.3)], CFG)
    assert v[1].status == "accepted" and v[2].reasons == ("conflicting_duplicates",)


def test_a_low_trust_user_is_quarantined_and_does_not_vote() -> None:
    v = decide_cluster([m(1, "neg", low_trust=True, trust=0.2), m(2, "pos")], CFG)
    assert (v[1].status, v[1].reasons) == ("quarantined", ("low_trust",))
    assert v[1].weight == pytest.approx(0.25)
    assert v[2].status == "accepted" and v[2].reasons == ()


def test_a_label_issue_is_quarantined_unless_people_confirm_the_label() -> None:
    alone = decide_cluster([m(1, "pos", label_issue=True)], CFG)
    assert (alone[1].status, alone[1].reasons) == ("quarantined", ("label_issue",))
    confirmed = decide_cluster([m(1, "pos", label_issue=True), m(2, "pos", label_issue=True)], CFG)
    assert confirmed[1].status == "accepted" and confirmed[2].reasons == ("duplicate",)


def test_one_user_counts_once_and_anonymous_samples_each_count() -> None:
    same_user = decide_cluster([m(1, "pos", user="a", label_issue=True), m(2, "pos", user="a", text=b"x",
                                                                             label_issue=True)], CFG)
    assert all(v.reasons == ("label_issue",) for v in same_user.values())
    anon = [Member(id=i, user_id=None, label="pos", text_hash=bytes([i]), label_issue=True) for i in (1, 2)]
    assert decide_cluster(anon, CFG)[1].status == "accepted"


def test_reasons_combine_in_a_fixed_order() -> None:
    v = decide_cluster([m(1, "neg", label_issue=True, low_trust=True), m(2, "pos"), m(3, "pos"), m(4, "neg")], CFG)
    assert v[1].reasons == ("low_trust", "conflicting_duplicates", "label_issue")
    assert v[4].reasons == ("conflicting_duplicates",)


def test_a_trusted_users_label_issue_is_accepted_at_reduced_weight_with_the_reason() -> None:
    v = decide_cluster([m(1, "pos", label_issue=True, trusted=True)], CFG)
    assert (v[1].status, v[1].reasons) == ("accepted", ("label_issue",))
    assert v[1].weight == pytest.approx(CFG.weights.label_issue)
    near = decide_cluster([m(1, "pos", text=b"a"), m(2, "pos", text=b"b", label_issue=True, trusted=True),
                           m(3, "pos", text=b"a", label_issue=True, trusted=True)], CFG)
    # two users gave "pos": people overrule the model, no label issue is left
    assert near[2].reasons == ("near_duplicate",) and near[3].reasons == ("duplicate",)


def test_a_trusted_user_is_still_quarantined_for_any_other_reason() -> None:
    v = decide_cluster([m(1, "neg", label_issue=True, trusted=True), m(2, "pos"), m(3, "pos")], CFG)
    assert (v[1].status, v[1].reasons) == ("quarantined", ("conflicting_duplicates", "label_issue"))
    lone = decide_cluster([m(1, "neg", label_issue=True, trusted=True, text=b"a"),
                           m(2, "neg", user="u1", label_issue=True, trusted=True, text=b"b")], CFG)
    assert (lone[1].status, lone[1].reasons) == ("accepted", ("label_issue",))
    assert (lone[2].status, lone[2].reasons) == ("accepted", ("label_issue", "near_duplicate"))
    assert lone[2].weight == pytest.approx(CFG.weights.label_issue * CFG.duplicates.near_duplicate_weight)
