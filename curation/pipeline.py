"""One curation batch: pending joined feedback -> signatures, clusters, label quality, annotator trust
-> verdicts of the new samples and of every stored sample whose cluster or annotator changed, written
with the watermark in one unit (``CurationStore.batch``)."""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from curation.base import (
    Annotator,
    Backfill,
    BatchWrite,
    CurationStore,
    Member,
    Neighbour,
    NewSample,
    Pending,
    Verdict,
)
from curation.clusters import decide_cluster
from curation.config import CurationConfig
from curation.minhash import MinHasher, Signature
from curation.outliers import OutlierCheck
from curation.scoring import (
    LabelQuality,
    Population,
    agreement,
    disagreement,
    distrust_p,
    fdr_cutoff,
    label_quality,
    low_trust,
    model_evidence,
    parse_probabilities,
    population,
    trust,
    trusted,
)
from tasks import row_key


@dataclass
class BatchResult:
    """What one committed batch did: new samples by status, re-curated stored samples by their new
    status, the reasons of both, and the id range of the new samples."""

    new: Counter[str] = field(default_factory=Counter)
    changed: Counter[str] = field(default_factory=Counter)
    reasons: Counter[str] = field(default_factory=Counter)
    disagreements: int = 0
    first_id: int | None = None
    last_id: int | None = None
    watermark: int = 0

    def total(self, status: str) -> int:
        return self.new[status] + self.changed[status]


class Curator:
    """Curates batches against a store; holds no state between batches (the store has it all)."""

    def __init__(self, config: CurationConfig, labels: Sequence[str]) -> None:
        self.config = config
        self.labels = frozenset(labels)
        self.hasher = MinHasher(config.duplicates)

    def signature(self, row: Pending) -> Signature:
        """A text's MinHash signature (near-duplicates); for any other input (a tabular row) the key of its
        exact values, as hash and as its only band: the same features are one cluster, so conflicting
        outcomes for the same features are found as conflicting duplicates."""
        if row.text is not None:
            return self.hasher.signature(row.text)
        key = row_key(row.input or {})
        return Signature(key, (), (int.from_bytes(key[:8], "little", signed=True),))

    def backfill(self, store: CurationStore) -> int:
        """Signatures and scores for samples migrated from the pre-curation view (verdicts stay)."""
        with store.batch():
            rows = store.unscored(self.config.service.batch_size)
            store.backfill([self._backfill(r) for r in rows])
        return len(rows)

    def _backfill(self, row: Pending) -> Backfill:
        sig = self.signature(row)
        probs = parse_probabilities(row.probabilities)
        score = probs.get(row.label) if probs is not None and row.label is not None else None
        return Backfill(row.id, sig.text_hash, sig.minhash, sig.bands,
                        disagreement(row.label, row.thumbs, row.predicted_label), score)

    def curate_batch(self, store: CurationStore, *, sweep: bool = False) -> BatchResult | None:
        """Curate up to ``batch_size`` pending rows; None when nothing was pending."""
        with store.batch():
            state = store.cursor()
            margin = timedelta(seconds=self.config.service.late_join_margin_s)
            since = state.resolved_cursor - margin if state.resolved_cursor is not None else None
            rows = sorted(store.pending(state, since, self.config.service.batch_size, sweep=sweep),
                          key=lambda r: r.id)
            if not rows:
                return None
            write, result = self._curate(store, rows)
            write.watermark = max(state.watermark, rows[-1].id)
            resolved = [r.resolved_at for r in rows if r.resolved_at is not None]
            write.resolved_cursor = _latest(state.resolved_cursor, max(resolved) if resolved else None)
            store.write(write)
        result.watermark = write.watermark
        return result

    # -- one batch ---------------------------------------------------------------------------------
    def _curate(self, store: CurationStore, rows: list[Pending]) -> tuple[BatchWrite, BatchResult]:
        ann_cfg = self.config.annotators
        sigs = {r.id: self.signature(r) for r in rows}
        clusters = self._clusters(store, rows, sigs)
        probs = {r.id: parse_probabilities(r.probabilities) for r in rows}
        pop = self._population(store, rows, probs)
        thresholds = pop.thresholds
        quality = {r.id: label_quality(probs[r.id], r.label, thresholds) for r in rows}
        stored = {s.member.id: s for s in store.members(set(clusters.values()))}
        users = {r.user_id for r in rows if r.user_id is not None}
        annotators = self._annotators(store, users | {s.member.user_id for s in stored.values()
                                                      if s.member.user_id is not None})
        before = {u: self._standing(a) for u, a in annotators.items()}
        rule = _TrustRule(self.config, store)

        # trust evidence, one label at a time in id order: the other voters of the same cluster so far
        # (stored and earlier in this batch), and the served model's evidence relative to the population
        voters: dict[int, dict[str, tuple[str, str | None]]] = {}
        for s in stored.values():
            m = s.member
            if m.label is not None and not m.unknown_label:
                voters.setdefault(s.cluster_id, {})[voter(m.user_id, m.id)] = (m.label, m.user_id)
        for r in rows:
            if r.label is None or r.label not in self.labels:
                continue
            cid = clusters[r.id]
            if r.user_id is not None:
                a = annotators[r.user_id]
                others = [(label, self._vote_weight(annotators, u)) for label, u in voters.get(cid, {}).values()
                          if u != r.user_id and not (u is not None and annotators[u].low_trust)]
                peers = agreement(r.label, others)
                if peers is not None:
                    a.agree, a.disagree = a.agree + peers, a.disagree + (not peers)
                evidence = self._model_evidence(r, probs[r.id], pop)
                if evidence is not None:
                    w = ann_cfg.model_vote_weight
                    a.agree, a.disagree = a.agree + w * evidence, a.disagree + w * (1.0 - evidence)
                a.labels += 1
                a.low_trust = rule.low_trust(a)
            voters.setdefault(cid, {})[voter(r.user_id, r.id)] = (r.label, r.user_id)

        # the 'fdr' rule judges every user against all the others: the batch's evidence may move anyone
        # across the cutoff, in this batch or not
        moved = rule.settle(annotators)
        for u, a in store.annotators(moved).items():  # judged users outside the batch's annotators
            before[u] = self._standing(a)
            a.low_trust = moved[u]
            annotators[u] = a

        # re-curate every cluster of a user whose standing changed (crossed the floor or the trusted
        # level, either way)
        flipped = {u for u, a in annotators.items() if self._standing(a) != before[u]}
        if flipped:
            extra = store.clusters_of(flipped) - set(clusters.values())
            more = store.members(extra)
            annotators |= self._annotators(store, {s.member.user_id for s in more if s.member.user_id is not None}
                                           - annotators.keys())
            stored |= {s.member.id: s for s in more}

        write = BatchWrite(annotators=[a for u, a in annotators.items()
                                       if u in users or (u in before and self._standing(a) != before[u])])
        result = BatchResult()
        by_cluster: dict[int, list[Member]] = {}
        for s in stored.values():
            by_cluster.setdefault(s.cluster_id, []).append(self._refresh(s.member, annotators))
        outliers = self._outliers(store, rows)
        new_members = {r.id: self._member(r, sigs[r.id], quality[r.id], annotators, r.id in outliers) for r in rows}
        for r in rows:
            by_cluster.setdefault(clusters[r.id], []).append(new_members[r.id])
        pending = {r.id: r for r in rows}
        for members in by_cluster.values():
            for sample_id, verdict in decide_cluster(members, self.config).items():
                if sample_id in new_members:
                    r, m = pending[sample_id], new_members[sample_id]
                    write.new.append(self._new_sample(r, verdict, clusters[r.id], sigs[r.id], quality[r.id], m.trust))
                elif verdict != stored[sample_id].verdict:
                    write.changed[sample_id] = verdict
                    result.changed[verdict.status] += 1
                    result.reasons.update(verdict.reasons)
        return self._tally(write, result, rows)

    @staticmethod
    def _tally(write: BatchWrite, result: BatchResult, rows: list[Pending]) -> tuple[BatchWrite, BatchResult]:
        """The batch's new samples in id order, counted into ``result`` (shared by every curator)."""
        write.new.sort(key=lambda n: n.pending.id)
        for sample in write.new:
            result.new[sample.verdict.status] += 1
            result.reasons.update(sample.verdict.reasons)
            result.disagreements += sample.disagreement
        result.first_id, result.last_id = rows[0].id, rows[-1].id
        return write, result

    def _clusters(self, store: CurationStore, rows: list[Pending], sigs: dict[int, Signature]) -> dict[int, int]:
        """Cluster id of every new row: the smallest cluster id among its near-duplicates (stored or
        earlier in the batch), else its own id."""
        by_band: dict[int, list[Neighbour]] = {}
        for n in store.neighbours({b for s in sigs.values() for b in s.bands}):
            for b in n.bands:
                by_band.setdefault(b, []).append(n)
        clusters: dict[int, int] = {}
        for r in rows:
            sig = sigs[r.id]
            candidates = {n.id: n for b in sig.bands for n in by_band.get(b, ())}
            matches = [n.cluster_id for n in candidates.values()
                       if n.text_hash == sig.text_hash
                       or self.hasher.similarity(n.minhash, sig.minhash) >= self.config.duplicates.jaccard]
            clusters[r.id] = min(matches, default=r.id)
            mine = Neighbour(r.id, clusters[r.id], sig.text_hash, sig.minhash, sig.bands)
            for b in sig.bands:
                by_band.setdefault(b, []).append(mine)
        return clusters

    def _population(self, store: CurationStore, rows: list[Pending],
                    probs: dict[int, dict[str, float] | None]) -> Population:
        """The population's mean self-confidence per label (overall and per slice) over the recent window
        plus this batch: the confident-learning thresholds, and what the model's evidence is read against."""
        scores = store.recent_scores(self.config.label_quality.window)
        for r in rows:
            p = probs[r.id]
            if p is not None and r.label is not None and r.label in p:
                scores.append((_slice(r), r.label, p[r.label]))
        return population(scores, self.config.label_quality.min_class_count)

    def _model_evidence(self, row: Pending, probs: dict[str, float] | None, pop: Population) -> float | None:
        if probs is None or row.label is None or row.label not in probs:
            return None
        moments = pop.moments(_slice(row), row.label)
        if moments is None:
            return None
        return model_evidence(probs[row.label], *moments, self.config.annotators)

    def _standing(self, a: Annotator) -> tuple[bool, bool]:
        return a.low_trust, trusted(a.agree, a.disagree, self.config.annotators)

    @staticmethod
    def _annotators(store: CurationStore, users: set[str]) -> dict[str, Annotator]:
        found = store.annotators(users)
        return {u: found.get(u) or Annotator(u) for u in users}

    def _vote_weight(self, annotators: dict[str, Annotator], user: str | None) -> float:
        if user is None:
            return self.config.annotators.prior_mean
        a = annotators[user]
        return trust(a.agree, a.disagree, self.config.annotators)

    def _refresh(self, member: Member, annotators: dict[str, Annotator]) -> Member:
        """A stored member with its annotator's current standing (the trust it was weighted by stays)."""
        if member.user_id is None:
            return dataclasses.replace(member, low_trust=False, trusted=False,
                                       vote_weight=self.config.annotators.prior_mean)
        a = annotators[member.user_id]
        low, good = self._standing(a)
        return dataclasses.replace(member, low_trust=low, trusted=good,
                                   vote_weight=self._vote_weight(annotators, member.user_id))

    def _outliers(self, store: CurationStore, rows: list[Pending]) -> set[int]:
        """Ids of the batch's tabular rows with a numeric feature far outside the model's recent accepted rows."""
        if all(r.input is None for r in rows):
            return set()
        cfg = self.config.outliers
        check = OutlierCheck(store.recent_inputs(cfg.window), cfg)
        return {r.id for r in rows if r.input is not None and check.outlying(r.input)}

    def _member(self, row: Pending, sig: Signature, quality: LabelQuality,
                annotators: dict[str, Annotator], outlier: bool = False) -> Member:
        user_trust = self._vote_weight(annotators, row.user_id) if row.user_id is not None else None
        a = annotators.get(row.user_id) if row.user_id is not None else None
        low, good = self._standing(a) if a is not None else (False, False)
        return Member(id=row.id, user_id=row.user_id, label=row.label, text_hash=sig.text_hash,
                      label_issue=quality.issue, unknown_label=row.label is not None and row.label not in self.labels,
                      trust=user_trust, low_trust=low, trusted=good, outlier=outlier,
                      vote_weight=user_trust if user_trust is not None else self.config.annotators.prior_mean)

    @staticmethod
    def _new_sample(row: Pending, verdict: Verdict, cluster_id: int, sig: Signature, quality: LabelQuality,
                    user_trust: float | None) -> NewSample:
        return NewSample(pending=row, verdict=verdict, cluster_id=cluster_id, text_hash=sig.text_hash,
                         minhash=sig.minhash, bands=sig.bands,
                         disagreement=disagreement(row.label, row.thumbs, row.predicted_label),
                         self_confidence=quality.self_confidence, label_issue=quality.issue,
                         suggested_label=quality.suggested, trust=user_trust)


class _TrustRule:
    """Who is low trust in one batch. 'floor': trust below ``annotators.floor`` (each user alone). 'fdr':
    that, and :func:`distrust_p` at or below the Benjamini-Hochberg cutoff over every judged user (the
    stored ones, updated by the batch's evidence as it is counted): below the floor, and significantly
    below the population once every user's chance of looking that bad is accounted for."""

    def __init__(self, config: CurationConfig, store: CurationStore) -> None:
        self.config = config.annotators
        self.judged = store.judged_annotators(self.config.min_evidence) if self.config.rule == "fdr" else {}
        self.cutoff = self._cutoff()

    def low_trust(self, a: Annotator) -> bool:
        if self.config.rule == "fdr" and a.labels >= self.config.min_evidence:
            self.judged[a.user_id] = a
        return self._low(a)

    def settle(self, annotators: dict[str, Annotator]) -> dict[str, bool]:
        """With the batch counted: the batch's users get their standing at the final cutoff, and the
        judged users outside it whose standing that cutoff changes are returned (user -> low trust)."""
        if self.config.rule == "floor":
            return {}
        self.cutoff = self._cutoff()
        for a in annotators.values():
            a.low_trust = self._low(a)
        standing = {u: self._low(a) for u, a in self.judged.items() if u not in annotators}
        return {u: low for u, low in standing.items() if low != self.judged[u].low_trust}

    def _low(self, a: Annotator) -> bool:
        return low_trust(a.agree, a.disagree, self.config) and (
            self.config.rule == "floor" or self._p(a) <= self.cutoff)

    def _p(self, a: Annotator) -> float:
        return distrust_p(a.agree, a.disagree, self.config)

    def _cutoff(self) -> float:
        return fdr_cutoff((self._p(a) for a in self.judged.values()), self.config.fdr) if self.judged else -1.0


def _slice(row: Pending) -> str | None:
    return row.domain if row.domain is not None else row.segment


def voter(user_id: str | None, sample_id: int) -> str:
    """Who cast a vote: the user, or the sample itself when anonymous (never pooled with other anonymous votes)."""
    return user_id if user_id is not None else f"#{sample_id}"


def _latest(a: datetime | None, b: datetime | None) -> datetime | None:
    if a is None or b is None:
        return a or b
    return max(a, b)

