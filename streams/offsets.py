"""Consumer positions kept in Postgres, in the same transaction as the rows they cover.

Rows are keyed by (group, topic, partition) and stamped with the broker's cluster id: offsets stored
against another cluster (e.g. an earlier run of the memory-only embedded broker) do not apply.
"""

from __future__ import annotations

from collections.abc import Iterable

import psycopg

NO_OFFSET = -1

_LOCK = """
INSERT INTO stream_offsets (group_id, topic, partition, next_offset, cluster_id)
SELECT %(g)s, t, p, -1, %(c)s FROM unnest(%(t)s::text[], %(p)s::int[]) AS x(t, p)
ON CONFLICT DO NOTHING;
"""
_SELECT = """
SELECT topic, partition, CASE WHEN cluster_id = %(c)s THEN next_offset ELSE -1 END
FROM stream_offsets
WHERE group_id = %(g)s AND (topic, partition) IN (SELECT * FROM unnest(%(t)s::text[], %(p)s::int[]))
ORDER BY topic, partition
"""
_SAVE = """
UPDATE stream_offsets AS o SET next_offset = x.n, cluster_id = %(c)s, updated_at = now()
FROM unnest(%(t)s::text[], %(p)s::int[], %(n)s::bigint[]) AS x(t, p, n)
WHERE o.group_id = %(g)s AND o.topic = x.t AND o.partition = x.p
"""


def _params(group: str, cluster: str, tps: Iterable[tuple[str, int]]) -> dict[str, object]:
    pairs = sorted(tps)
    return {"g": group, "c": cluster, "t": [t for t, _ in pairs], "p": [p for _, p in pairs]}


def load(conn: psycopg.Connection, group: str, cluster: str, tps: Iterable[tuple[str, int]]
         ) -> dict[tuple[str, int], int]:
    """Stored next offsets (``NO_OFFSET`` when none is stored for this cluster)."""
    params = _params(group, cluster, tps)
    rows = conn.execute(_SELECT, params).fetchall()
    found = {(t, p): int(n) for t, p, n in rows}
    return {(t, p): found.get((t, p), NO_OFFSET) for t, p in zip(params["t"], params["p"], strict=True)}  # type: ignore[call-overload]


def lock(conn: psycopg.Connection, group: str, cluster: str, tps: Iterable[tuple[str, int]]
         ) -> dict[tuple[str, int], int]:
    """Inside a transaction: lock the offset rows of ``tps`` (creating them) and return them.
    Two instances writing the same partition serialise here; the second sees the first's offsets."""
    params = _params(group, cluster, tps)
    conn.execute(_LOCK, params)
    rows = conn.execute(_SELECT + " FOR UPDATE", params).fetchall()
    return {(t, p): int(n) for t, p, n in rows}


def save(conn: psycopg.Connection, group: str, cluster: str, next_offsets: dict[tuple[str, int], int]) -> None:
    params = _params(group, cluster, next_offsets)
    params["n"] = [next_offsets[(t, p)] for t, p in zip(params["t"], params["p"], strict=True)]  # type: ignore[call-overload]
    conn.execute(_SAVE, params)


def bump_counters(conn: psycopg.Connection, group: str, counts: dict[str, int]) -> None:
    names = sorted(k for k, v in counts.items() if v)  # one lock order for every writer: no deadlocks
    if not names:
        return
    conn.execute(
        """INSERT INTO stream_counters (group_id, name, value)
           SELECT %s, n, v FROM unnest(%s::text[], %s::bigint[]) AS x(n, v)
           ON CONFLICT (group_id, name) DO UPDATE SET value = stream_counters.value + EXCLUDED.value""",
        (group, names, [counts[n] for n in names]),
    )


def counters(conn: psycopg.Connection, group: str | None = None) -> dict[str, int]:
    if group is None:
        rows = conn.execute("SELECT name, sum(value) FROM stream_counters GROUP BY name").fetchall()
    else:
        rows = conn.execute("SELECT name, value FROM stream_counters WHERE group_id = %s", (group,)).fetchall()
    return {str(n): int(v) for n, v in rows}
