"""The verdict of every sample of one near-duplicate cluster (pure).

A cluster is a set of samples whose texts are near-duplicates (see ``curation.minhash``); a text with
no near-duplicate is a cluster of one. The decision, per sample in id order:

1. no label (a thumbs down) -> ``rejected`` [no_label]: counted, never trained on;
   a label outside the configured label set -> ``quarantined`` [unknown_label].
2. The labelled samples of users above the trust floor vote, one vote per user (anonymous samples one
   each), weighted by the user's current trust. Two or more labels in the cluster are a conflict: the
   trust-weighted majority settles it when it holds ``consensus_min_share`` of the weight; samples
   against it (or every labelled sample, when nothing settles it) get [conflicting_duplicates].
3. A user below the trust floor -> [low_trust]. A confident-learning label issue, unless
   ``confirm_annotators`` distinct users gave the same label (people overrule the model) -> [label_issue];
   it quarantines only when the user is not trusted (below ``trusted``, too few judged labels, or
   anonymous): a trusted user's label issue is accepted at ``weights.label_issue`` with the reason kept
   (where the model is wrong, e.g. under drift, is exactly what it must learn).
   A tabular row far outside the model's recent accepted rows -> [outlier] (``curation.outliers``).
4. Any reason of steps 2-3 but a trusted user's label issue -> ``quarantined`` (kept for review, never
   deleted).
5. Of the accepted samples, the first is the cluster's representative (full weight); a later one with
   the same normalised text is ``rejected`` [duplicate] (it adds nothing but weight, and the trainer's
   quality gate refuses duplicate-heavy data); one with a different text is accepted [near_duplicate]
   at ``near_duplicate_weight`` of its weight.

Weight = clip(trust at curation / prior mean, min, max), times the near-duplicate and label-issue factors.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from curation.base import REASONS, Member, Verdict
from curation.config import CurationConfig
from curation.scoring import consensus, weight


def decide_cluster(members: Sequence[Member], config: CurationConfig) -> dict[int, Verdict]:
    ann = config.annotators
    ordered = sorted(members, key=lambda m: m.id)
    votes: dict[str, tuple[str, float]] = {}
    for m in ordered:
        if m.label is not None and not m.unknown_label and not m.low_trust:
            votes[m.user_id if m.user_id is not None else f"#{m.id}"] = (m.label, m.vote_weight)
    conflict = len({label for label, _ in votes.values()}) > 1
    settled = consensus(list(votes.values()), ann.consensus_min_share) if conflict else None
    supporters = Counter(label for label, _ in votes.values())

    verdicts: dict[int, Verdict] = {}
    accepted: list[tuple[Member, bool]] = []  # (member, an accepted label issue)
    for m in ordered:
        base = weight(m.trust, ann, config.weights)
        if m.label is None:
            verdicts[m.id] = Verdict("rejected", base, ("no_label",))
            continue
        if m.unknown_label:
            verdicts[m.id] = Verdict("quarantined", base, ("unknown_label",))
            continue
        reasons = set()
        if m.low_trust:
            reasons.add("low_trust")
        if conflict and m.label != settled:
            reasons.add("conflicting_duplicates")
        if m.outlier:
            reasons.add("outlier")
        issue = m.label_issue and supporters[m.label] < ann.confirm_annotators
        if issue:
            reasons.add("label_issue")
        if reasons and (reasons != {"label_issue"} or not m.trusted):
            verdicts[m.id] = Verdict("quarantined", base, ordered_reasons(reasons))
        else:
            accepted.append((m, issue))

    seen: set[bytes] = set()
    for i, (m, issue) in enumerate(accepted):
        base = weight(m.trust, ann, config.weights) * (config.weights.label_issue if issue else 1.0)
        first = ("label_issue",) if issue else ()
        if i == 0:
            verdicts[m.id] = Verdict("accepted", base, first)
        elif m.text_hash in seen:
            verdicts[m.id] = Verdict("rejected", base, (*first, "duplicate"))
        else:
            verdicts[m.id] = Verdict("accepted", base * config.duplicates.near_duplicate_weight,
                                     (*first, "near_duplicate"))
        seen.add(m.text_hash)
    return verdicts


def ordered_reasons(reasons: set[str]) -> tuple[str, ...]:
    return tuple(r for r in REASONS if r in reasons)
