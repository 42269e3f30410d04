"""An in-memory curation store: the fake for tests of the pipeline without Postgres. Feedback is added
with :meth:`MemoryCurationStore.land`; a batch that raises leaves the store as it was."""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from curation.base import (
    Annotator,
    Backfill,
    BatchWrite,
    CurationStore,
    CursorState,
    Member,
    Neighbour,
    NewSample,
    Pending,
    StoredPair,
    StoredVerdict,
    Verdict,
)


@dataclass
class _State:
    feedback: dict[int, Pending] = field(default_factory=dict)
    samples: dict[int, NewSample] = field(default_factory=dict)
    verdicts: dict[int, Verdict] = field(default_factory=dict)
    annotators: dict[str, Annotator] = field(default_factory=dict)
    cursor: CursorState = field(default_factory=lambda: CursorState(0, None))


class MemoryCurationStore(CurationStore):
    def __init__(self) -> None:
        self.state = _State()

    def land(self, rows: Iterable[Pending]) -> None:
        """Joined feedback, as ingest would land it."""
        for row in rows:
            self.state.feedback[row.id] = row

    @contextlib.contextmanager
    def batch(self) -> Iterator[None]:
        saved = copy.deepcopy(self.state)
        try:
            yield
        except BaseException:
            self.state = saved
            raise

    def cursor(self) -> CursorState:
        return self.state.cursor

    def pending(self, state: CursorState, since: datetime | None, limit: int, *, sweep: bool) -> list[Pending]:
        def wanted(r: Pending) -> bool:
            late = since is not None and r.resolved_at is not None and r.resolved_at >= since
            return sweep or r.id > state.watermark or late

        found = [r for i, r in sorted(self.state.feedback.items()) if i not in self.state.samples and wanted(r)]
        return found[:limit]

    def neighbours(self, bands: Iterable[int]) -> list[Neighbour]:
        keys = set(bands)
        return [Neighbour(s.pending.id, s.cluster_id, s.text_hash, s.minhash, s.bands)
                for s in self.state.samples.values() if keys & set(s.bands)]

    def recent_scores(self, window: int) -> list[tuple[str | None, str, float]]:
        scored = [(i, s) for i, s in sorted(self.state.samples.items(), reverse=True)
                  if s.self_confidence is not None and s.pending.label is not None]
        return [(_slice(s.pending), str(s.pending.label), float(s.self_confidence or 0.0))
                for _i, s in scored[:window]]

    def annotators(self, user_ids: Iterable[str]) -> dict[str, Annotator]:
        return {u: copy.copy(self.state.annotators[u]) for u in set(user_ids) if u in self.state.annotators}

    def judged_annotators(self, min_labels: int) -> dict[str, Annotator]:
        return {u: copy.copy(a) for u, a in self.state.annotators.items() if a.labels >= min_labels}

    def members(self, cluster_ids: Iterable[int]) -> list[StoredVerdict]:
        wanted = set(cluster_ids)
        return [StoredVerdict(self._member(s), s.cluster_id, self.state.verdicts[i])
                for i, s in sorted(self.state.samples.items()) if s.cluster_id in wanted]

    def pairs(self, cluster_ids: Iterable[int]) -> list[StoredPair]:
        wanted = set(cluster_ids)
        out = []
        for i, s in sorted(self.state.samples.items()):
            if s.cluster_id in wanted:
                p, text = s.pending, (s.pending.output or {}).get("text")
                out.append(StoredPair(i, s.cluster_id, p.user_id, s.text_hash, s.trust, self.state.verdicts[i],
                                      p.rating, p.thumbs, p.signal, p.correction,
                                      text if isinstance(text, str) else None))
        return out

    def clusters_of(self, user_ids: Iterable[str]) -> set[int]:
        users = set(user_ids)
        return {s.cluster_id for s in self.state.samples.values() if s.pending.user_id in users}

    def write(self, batch: BatchWrite) -> None:
        for sample in batch.new:
            self.state.samples[sample.pending.id] = sample
            self.state.verdicts[sample.pending.id] = sample.verdict
        self.state.verdicts.update(batch.changed)
        for a in batch.annotators:
            self.state.annotators[a.user_id] = copy.copy(a)
        old = self.state.cursor
        latest = max((t for t in (old.resolved_cursor, batch.resolved_cursor) if t is not None), default=None)
        self.state.cursor = CursorState(max(old.watermark, batch.watermark), latest)

    def unscored(self, limit: int) -> Sequence[Pending]:
        return []

    def backfill(self, rows: Sequence[Backfill]) -> None:
        return None

    @staticmethod
    def _member(s: NewSample) -> Member:
        return Member(id=s.pending.id, user_id=s.pending.user_id, label=s.pending.label, text_hash=s.text_hash,
                      label_issue=s.label_issue, unknown_label="unknown_label" in s.verdict.reasons, trust=s.trust)


def _slice(row: Pending) -> str | None:
    return row.domain if row.domain is not None else row.segment
