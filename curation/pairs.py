"""Curation of a generator's feedback: a joined prediction (prompt -> served response) and its judgement
become a sample whose ``target`` is the response to learn.

The target (:func:`judge`): the user's ``correction`` when there is one (a preferred response is a new
reference); else the served response when it was judged good (a rating >= ``pairs.good_rating``, thumbs
up, or the player ``continued``); else none. The judgement of the served response (its *vote*, good or
bad) reads the rating first, then thumbs, then a correction (bad), then the signal.

Verdicts, per near-duplicate cluster of prompts (:func:`decide_pairs`):

1. no target: ``rejected`` [low_rating] when the response was judged bad, [no_target] when the judgement
   was neutral (a rating of 3); an empty target (whitespace) -> ``rejected`` [empty_response].
2. a target longer than ``pairs.max_response_chars`` -> [too_long]; one the toxicity check scores at or
   above ``pairs.toxicity_threshold`` (unset: the check's own) -> [toxic]; a user below the trust floor ->
   [low_trust]; any of these -> ``quarantined`` (kept for review, never trained on).
3. of the accepted samples of a cluster, the first is its representative (full weight); a later one with
   the same normalised prompt *and* target is ``rejected`` [duplicate]; one with another target or a
   near-duplicate prompt is accepted [near_duplicate] at ``duplicates.near_duplicate_weight`` (several
   references for one prompt are worth keeping, at less weight each).

Prompts cluster by MinHash of the normalised persona, context and prompt (``curation.minhash``), as texts
do. Annotator trust is the labels' Beta-smoothed agreement, judged against peers: the other users' votes
on the *same served response* in the same cluster (trust-weighted plurality; users below the floor do not
vote). A generator has no out-of-sample probabilities, so there is no model evidence, and the population
test of the 'fdr' rule (whose null is built on that evidence) does not apply: a generator's users are
judged by the floor alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from hashlib import md5
from typing import Literal, Protocol

from curation.base import (
    Annotator,
    BatchWrite,
    CurationStore,
    NewSample,
    Pending,
    StoredPair,
    Verdict,
)
from curation.clusters import ordered_reasons
from curation.config import CurationConfig
from curation.minhash import Signature, normalise
from curation.pipeline import BatchResult, Curator, voter
from curation.scoring import agreement, low_trust, weight

Vote = Literal["good", "bad"]
REJECTING = frozenset({"no_target", "low_rating", "empty_response"})
QUARANTINING = frozenset({"too_long", "toxic"})


class ToxicityScorer(Protocol):
    """What curation and the trainer need of a toxicity check (``curation.toxicity.ToxicityCheck``): a score
    in [0, 1] per text (``prompts``: what each text answers, read for context), and the score from which a
    text is toxic."""

    threshold: float

    def scores(self, texts: Sequence[str], prompts: Sequence[str | None] | None = None) -> list[float]: ...


@dataclass(frozen=True)
class Judgement:
    """What one piece of feedback says of the served response, and what the sample learns."""

    vote: Vote | None
    target: str | None
    reasons: tuple[str, ...] = ()  # the target's own faults (before toxicity, which is scored in bulk)


@dataclass(frozen=True)
class PairMember:
    """One sample of a prompt cluster as :func:`decide_pairs` sees it."""

    id: int
    user_id: str | None
    text_hash: bytes  # normalised prompt and target
    faults: tuple[str, ...]  # reasons of the sample itself (REJECTING | QUARANTINING)
    trust: float | None = None  # the annotator's trust when curated (sets the weight)
    low_trust: bool = False  # the annotator is below the floor now


def vote_of(rating: int | None, thumbs: str | None, correction: str | None, signal: str | None,
            config: CurationConfig) -> Vote | None:
    """Good, bad, or no judgement of the served response."""
    cfg = config.pairs
    if rating is not None:
        return "good" if rating >= cfg.good_rating else "bad" if rating <= cfg.bad_rating else None
    if thumbs is not None:
        return "good" if thumbs == "up" else "bad"
    if correction is not None:
        return "bad"
    if signal is not None:
        return "good" if signal == "continued" else "bad"
    return None


def judge(rating: int | None, thumbs: str | None, correction: str | None, signal: str | None,
          generated: str | None, config: CurationConfig) -> Judgement:
    vote = vote_of(rating, thumbs, correction, signal, config)
    target = correction if correction is not None else generated if vote == "good" else None
    if target is None:
        return Judgement(vote, None, ("low_rating" if vote == "bad" else "no_target",))
    if not target.strip():
        return Judgement(vote, target, ("empty_response",))
    if len(target) > config.pairs.max_response_chars:
        return Judgement(vote, target, ("too_long",))
    return Judgement(vote, target)


def prompt_text(document: object) -> str:
    """The prompt document (persona, context, prompt) as one text for near-duplicate detection."""
    doc = document if isinstance(document, dict) else {}
    return "\n".join(str(doc.get(k) or "") for k in ("persona", "context", "prompt"))


def generated_text(output: object) -> str | None:
    text = output.get("text") if isinstance(output, dict) else None
    return text if isinstance(text, str) else None


def response_key(text: str | None) -> bytes | None:
    """Which served response a vote is about (normalised): peers are compared on the same response."""
    return None if text is None else md5(normalise(text).encode()).digest()


def decide_pairs(members: Sequence[PairMember], config: CurationConfig) -> dict[int, Verdict]:
    """The verdict of every sample of one prompt cluster (pure; see the module docstring)."""
    verdicts: dict[int, Verdict] = {}
    accepted: list[PairMember] = []
    for m in sorted(members, key=lambda m: m.id):
        base = weight(m.trust, config.annotators, config.weights)
        rejecting = [r for r in m.faults if r in REJECTING]
        if rejecting:
            verdicts[m.id] = Verdict("rejected", base, ordered_reasons(set(rejecting)))
            continue
        reasons = {r for r in m.faults if r in QUARANTINING} | ({"low_trust"} if m.low_trust else set())
        if reasons:
            verdicts[m.id] = Verdict("quarantined", base, ordered_reasons(reasons))
        else:
            accepted.append(m)
    seen: set[bytes] = set()
    for i, m in enumerate(accepted):
        base = weight(m.trust, config.annotators, config.weights)
        if i == 0:
            verdicts[m.id] = Verdict("accepted", base)
        elif m.text_hash in seen:
            verdicts[m.id] = Verdict("rejected", base, ("duplicate",))
        else:
            verdicts[m.id] = Verdict("accepted", base * config.duplicates.near_duplicate_weight, ("near_duplicate",))
        seen.add(m.text_hash)
    return verdicts


class PairCurator(Curator):
    """Curates a generator's batches (same store, cursor and clusters as :class:`Curator`)."""

    def __init__(self, config: CurationConfig, toxicity: ToxicityScorer) -> None:
        super().__init__(config, ())
        self.toxicity = toxicity

    def signature(self, row: Pending) -> Signature:
        """MinHash of the prompt document; the exact key is the normalised prompt and target together."""
        sig = self.hasher.signature(prompt_text(row.input))
        target = self._judge(row).target or ""
        key = md5(sig.text_hash + b"\x1f" + normalise(target).encode()).digest()
        return Signature(key, sig.minhash, sig.bands)

    def _judge(self, row: Pending) -> Judgement:
        return judge(row.rating, row.thumbs, row.correction, row.signal, generated_text(row.output), self.config)

    def _curate(self, store: CurationStore, rows: list[Pending]) -> tuple[BatchWrite, BatchResult]:
        ann = self.config.annotators
        sigs = {r.id: self.signature(r) for r in rows}
        clusters = self._clusters(store, rows, sigs)
        judged = {r.id: self._judge(r) for r in rows}
        toxic = self._toxic({i: j.target for i, j in judged.items() if j.target is not None and not j.reasons},
                            {r.id: prompt_text(r.input) for r in rows})
        stored = {s.id: s for s in store.pairs(set(clusters.values()))}
        users = {r.user_id for r in rows if r.user_id is not None}
        annotators = self._annotators(store, users | {s.user_id for s in stored.values() if s.user_id is not None})
        before = {u: a.low_trust for u, a in annotators.items()}

        # peer evidence in id order: the votes on the same served response in the same cluster so far
        voters: dict[tuple[int, bytes], dict[str, tuple[str, str | None]]] = {}
        for s in stored.values():
            vote = vote_of(s.rating, s.thumbs, s.correction, s.signal, self.config)
            key = response_key(s.generated)
            if vote is not None and key is not None:
                voters.setdefault((s.cluster_id, key), {})[voter(s.user_id, s.id)] = (vote, s.user_id)
        for r in rows:
            vote, key = judged[r.id].vote, response_key(generated_text(r.output))
            if vote is None or key is None:
                continue
            group = voters.setdefault((clusters[r.id], key), {})
            if r.user_id is not None:
                a = annotators[r.user_id]
                others = [(v, self._vote_weight(annotators, u)) for v, u in group.values()
                          if u != r.user_id and not (u is not None and annotators[u].low_trust)]
                peers = agreement(vote, others)
                if peers is not None:
                    a.agree, a.disagree = a.agree + peers, a.disagree + (not peers)
                a.labels += 1
                a.low_trust = low_trust(a.agree, a.disagree, ann)
            group[voter(r.user_id, r.id)] = (vote, r.user_id)

        flipped = {u for u, a in annotators.items() if a.low_trust != before[u]}
        if flipped:  # every cluster of a user who crossed the floor, either way, is decided again
            more = store.pairs(store.clusters_of(flipped) - set(clusters.values()))
            annotators |= self._annotators(store, {s.user_id for s in more if s.user_id is not None}
                                           - annotators.keys())
            stored |= {s.id: s for s in more}

        write = BatchWrite(annotators=[a for u, a in annotators.items() if u in users or u in flipped])
        result = BatchResult()
        by_cluster: dict[int, list[PairMember]] = {}
        for s in stored.values():
            by_cluster.setdefault(s.cluster_id, []).append(self._stored_member(s, annotators))
        trusts = {r.id: self._vote_weight(annotators, r.user_id) if r.user_id is not None else None for r in rows}
        for r in rows:
            faults = judged[r.id].reasons + (("toxic",) if r.id in toxic else ())
            low = r.user_id is not None and annotators[r.user_id].low_trust
            by_cluster.setdefault(clusters[r.id], []).append(
                PairMember(r.id, r.user_id, sigs[r.id].text_hash, faults, trusts[r.id], low))
        pending = {r.id: r for r in rows}
        for members in by_cluster.values():
            for sample_id, verdict in decide_pairs(members, self.config).items():
                if sample_id in pending:
                    r, sig = pending[sample_id], sigs[sample_id]
                    write.new.append(NewSample(
                        pending=r, verdict=verdict, cluster_id=clusters[r.id], text_hash=sig.text_hash,
                        minhash=sig.minhash, bands=sig.bands, disagreement=judged[r.id].vote == "bad",
                        self_confidence=None, label_issue=False, suggested_label=None, trust=trusts[r.id],
                        target=judged[r.id].target))
                elif verdict != stored[sample_id].verdict:
                    write.changed[sample_id] = verdict
                    result.changed[verdict.status] += 1
                    result.reasons.update(verdict.reasons)
        return self._tally(write, result, rows)

    def _toxic(self, targets: dict[int, str], prompts: dict[int, str]) -> set[int]:
        """The samples whose target is toxic, each read as the answer to its prompt."""
        if not targets:
            return set()
        ids = sorted(targets)
        scores = self.toxicity.scores([targets[i] for i in ids], [prompts[i] for i in ids])
        cut = self.config.pairs.toxicity_threshold or self.toxicity.threshold
        return {i for i, s in zip(ids, scores, strict=True) if s >= cut}

    def _stored_member(self, s: StoredPair, annotators: dict[str, Annotator]) -> PairMember:
        """A stored sample with its own faults (from its stored reasons) and its annotator's standing now."""
        faults = tuple(r for r in s.verdict.reasons if r in REJECTING | QUARANTINING)
        low = s.user_id is not None and annotators[s.user_id].low_trust
        return PairMember(s.id, s.user_id, s.text_hash, faults, s.trust, low)


