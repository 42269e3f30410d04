"""The samples that share an LSH band key with a batch (``PostgresCurationStore.neighbours``) are found through
the GIN index one key at a time, also on a table that grew faster than its statistics: a backlog curated in
1,000-row batches on a fresh deployment took 3 to 12 s a batch, growing with the table, when the planner, told
by stale statistics that the model had a few rows, read all of them once and tested each key against each."""

from __future__ import annotations

import random

import psycopg

from curation.config import AnnotatorsConfig
from curation.postgres import _NEIGHBOURS, PostgresCurationStore

SAMPLES, BANDS = 3000, 16


def _band_sets(draw: random.Random) -> list[list[int]]:
    """Each sample's band keys; every 50th of the first 2,000 shares its first key with the sample 1,000 later."""
    bands = [[draw.getrandbits(62) for _ in range(BANDS)] for _ in range(SAMPLES)]
    for i in range(0, 2000, 50):
        bands[i + 1000][0] = bands[i][0]
    return bands


def test_neighbours_probe_the_band_index_on_a_table_its_statistics_lag(db_url: str) -> None:
    draw = random.Random(7)
    bands = _band_sets(draw)
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("ALTER TABLE samples SET (autovacuum_enabled = false)")  # the statistics stay the clone's
        with conn.cursor() as cur, cur.copy(
                "COPY samples (id, feedback_id, prediction_id, text, status, weight, ts, model, cluster_id, "
                "text_hash, minhash, lsh_bands) FROM STDIN") as copy:
            for i, keys in enumerate(bands):
                model = "other" if i % 10 == 9 else "m"  # another model's samples share the table
                copy.write_row((i + 1, f"f{i}", f"p{i}", f"text {i}", "rejected", 0.0, "2026-12-07T00:00:00Z",
                                model, i // 2, i.to_bytes(4, "big"), b"\x00" * 8, keys))
        wanted = sorted({k for keys in bands[:1000] for k in keys})
        plan = "\n".join(r[0] for r in conn.execute("EXPLAIN " + _NEIGHBOURS, (wanted, "m")))
        assert "Bitmap Index Scan on samples_lsh" in plan and "Join Filter" not in plan, plan
        assert "Seq Scan on samples" not in plan, plan

        store = PostgresCurationStore(conn, AnnotatorsConfig(), model="m")
        with store.batch():
            found = store.neighbours(wanted)
    expect = {i + 1 for i, keys in enumerate(bands) if i % 10 != 9 and set(keys) & set(wanted)}
    # one of each (cluster, text): every sample here has its own text
    assert {n.id for n in found} == expect and len(found) == len(expect)
    assert 1001 in expect and 1051 in expect  # samples outside the batch, found through the one key they share
