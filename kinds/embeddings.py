"""The embedding cache: a text is encoded once per encoder, keyed by (encoder_id, sha256 of its UTF-8).

:class:`Embedder` puts a :class:`~kinds.encoder.TextEncoder` behind an :class:`EmbeddingCache` and
encodes only the misses. Caches: :class:`MemoryEmbeddingCache` (bounded LRU, the default and the fake),
:class:`PostgresEmbeddingCache` (the ``embeddings`` table, shared by processes and restarts) and
:class:`LayeredEmbeddingCache` (memory in front of Postgres).
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Iterator, Mapping, Sequence

import numpy as np
import psycopg

from core import db
from core.exceptions import FlywheelError
from kinds.encoder import Part, TextEncoder, Vectors, encode_parts
from kinds.exceptions import EmbeddingCacheError

Vector = Vectors  # one row, shape (dim,)
log = logging.getLogger(__name__)


def text_sha256(text: str) -> bytes:
    return hashlib.sha256(text.encode("utf-8")).digest()


class EmbeddingCache(ABC):
    """Vectors by (encoder_id, text sha256). Stored vectors are float32; returned ones are read-only."""

    @abstractmethod
    def get_many(self, encoder_id: str, keys: Sequence[bytes]) -> dict[bytes, Vector]:
        """The stored vectors among ``keys`` (misses are simply absent)."""

    @abstractmethod
    def put_many(self, encoder_id: str, vectors: Mapping[bytes, Vector]) -> None:
        """Store the vectors; a key already stored keeps its first vector."""


class MemoryEmbeddingCache(EmbeddingCache):
    """A thread-safe LRU of at most ``max_entries`` vectors (50 000 x 384 floats is ~80 MB)."""

    def __init__(self, max_entries: int = 50_000) -> None:
        self.max_entries = max_entries
        self._entries: OrderedDict[tuple[str, bytes], Vector] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def get_many(self, encoder_id: str, keys: Sequence[bytes]) -> dict[bytes, Vector]:
        found: dict[bytes, Vector] = {}
        with self._lock:
            for key in keys:
                vector = self._entries.get((encoder_id, key))
                if vector is not None:
                    self._entries.move_to_end((encoder_id, key))
                    found[key] = vector
        return found

    def put_many(self, encoder_id: str, vectors: Mapping[bytes, Vector]) -> None:
        with self._lock:
            for key, vector in vectors.items():
                if (encoder_id, key) in self._entries:
                    self._entries.move_to_end((encoder_id, key))
                    continue
                stored = np.array(vector, dtype=np.float32)
                stored.setflags(write=False)
                self._entries[(encoder_id, key)] = stored
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)


class LayeredEmbeddingCache(EmbeddingCache):
    """``front`` (fast, small) before ``back`` (shared, durable): back hits are copied to the front;
    puts go to both, front first. A failing back is a cache miss, never a failed fit or prediction: it
    is logged (at most once a minute) and the texts are encoded instead."""

    def __init__(self, front: EmbeddingCache, back: EmbeddingCache) -> None:
        self.front, self.back = front, back
        self.back_failures = 0
        self._last_warning = -float("inf")

    def get_many(self, encoder_id: str, keys: Sequence[bytes]) -> dict[bytes, Vector]:
        found = self.front.get_many(encoder_id, keys)
        missing = [key for key in keys if key not in found]
        if missing:
            try:
                from_back = self.back.get_many(encoder_id, missing)
            except FlywheelError as exc:
                self._failed(exc)
                return found
            self.front.put_many(encoder_id, from_back)
            found.update(from_back)
        return found

    def put_many(self, encoder_id: str, vectors: Mapping[bytes, Vector]) -> None:
        self.front.put_many(encoder_id, vectors)
        try:
            self.back.put_many(encoder_id, vectors)
        except FlywheelError as exc:
            self._failed(exc)

    def _failed(self, exc: FlywheelError) -> None:
        self.back_failures += 1
        now = time.monotonic()
        if now - self._last_warning >= 60.0:
            self._last_warning = now
            log.warning("embedding cache %r failed (%d times so far); encoding instead: %s", self.back,
                        self.back_failures, exc)


class PostgresEmbeddingCache(EmbeddingCache):
    """The ``embeddings`` table (migration 0003): ``vector`` holds float32 little-endian bytes.

    One short connection per call (calls are batched); lookups go ``chunk`` keys at a time. Raises
    :class:`~core.exceptions.DatabaseUnavailable` when the server cannot be reached and
    :class:`EmbeddingCacheError` for any other database failure."""

    def __init__(self, conninfo: str, *, chunk: int = 5_000) -> None:
        self.conninfo, self.chunk = conninfo, chunk

    def __repr__(self) -> str:
        return "PostgresEmbeddingCache(<conninfo>)"  # the conninfo may hold a password

    def get_many(self, encoder_id: str, keys: Sequence[bytes]) -> dict[bytes, Vector]:
        rows: list[tuple[bytes, bytes]] = []
        if not keys:
            return {}
        try:
            with db.connect(self.conninfo) as conn:
                for start in range(0, len(keys), self.chunk):
                    rows += conn.execute(
                        "SELECT text_sha256, vector FROM embeddings WHERE encoder_id = %s AND text_sha256 = ANY(%s)",
                        (encoder_id, list(keys[start:start + self.chunk]))).fetchall()
        except psycopg.Error as exc:
            raise EmbeddingCacheError(f"embedding lookup failed: {_one_line(exc)}") from exc
        return {bytes(key): np.frombuffer(vector, dtype="<f4").astype(np.float32) for key, vector in rows}

    def put_many(self, encoder_id: str, vectors: Mapping[bytes, Vector]) -> None:
        if not vectors:
            return
        params = [(encoder_id, key, np.asarray(v, dtype="<f4").tobytes()) for key, v in vectors.items()]
        try:
            with db.connect(self.conninfo) as conn, conn.cursor() as cur:
                cur.executemany("INSERT INTO embeddings (encoder_id, text_sha256, vector) VALUES (%s, %s, %s)"
                                " ON CONFLICT DO NOTHING", params)
        except psycopg.Error as exc:
            raise EmbeddingCacheError(f"embedding insert failed: {_one_line(exc)}") from exc


class Embedder:
    """An encoder behind a cache: ``embed`` encodes each distinct uncached text once and stores it
    (``embed_parts``: the same, handed over a part at a time). ``hits``/``misses`` count distinct texts
    found in / missing from the cache."""

    def __init__(self, encoder: TextEncoder, cache: EmbeddingCache | None = None) -> None:
        self.encoder = encoder
        self.cache: EmbeddingCache = cache if cache is not None else MemoryEmbeddingCache()
        self.hits = self.misses = 0

    def __repr__(self) -> str:
        return f"Embedder({self.encoder!r}, {self.cache!r})"

    @property
    def encoder_id(self) -> str:
        return self.encoder.encoder_id

    def with_encoder(self, encoder: TextEncoder) -> Embedder:
        """Another encoder behind the same cache (entries are keyed by encoder_id: they never mix)."""
        return Embedder(encoder, self.cache)

    def embed(self, texts: Sequence[str]) -> Vectors:
        """Shape (len(texts), dim), float32, in the order of ``texts``."""
        out = np.empty((len(texts), self.encoder.dim), dtype=np.float32)
        for rows, vectors in self.embed_parts(texts):
            out[rows] = vectors
        return out

    def embed_parts(self, texts: Sequence[str]) -> Iterator[Part]:
        """:meth:`embed` a part at a time, as (rows of ``texts``, their vectors): the cached texts first,
        then each part the encoder yields (:func:`~kinds.encoder.encode_parts`), stored as it comes."""
        encoder_id, dim = self.encoder.encoder_id, self.encoder.dim
        rows_of: dict[bytes, list[int]] = {}  # a text asked twice is encoded once
        for row, text in enumerate(texts):
            rows_of.setdefault(text_sha256(text), []).append(row)
        found = self.cache.get_many(encoder_id, list(rows_of))
        missing = [key for key in rows_of if key not in found]
        self.hits, self.misses = self.hits + len(found), self.misses + len(missing)
        if found:
            yield _part(found, rows_of, encoder_id, dim)
        for part, vectors in encode_parts(self.encoder, [texts[rows_of[key][0]] for key in missing]):
            fresh = {missing[i]: vector for i, vector in zip(part, vectors, strict=True)}
            self.cache.put_many(encoder_id, fresh)
            yield _part(fresh, rows_of, encoder_id, dim)


def _part(vectors: Mapping[bytes, Vector], rows_of: Mapping[bytes, list[int]], encoder_id: str, dim: int) -> Part:
    """The rows of every text in ``vectors``, each with its vector (refused unless of shape (dim,))."""
    bad = next((key for key, vector in vectors.items() if vector.shape != (dim,)), None)
    if bad is not None:
        raise EmbeddingCacheError(f"cached vector {bad.hex()} for {encoder_id!r} has shape "
                                  f"{vectors[bad].shape}, expected ({dim},)")
    rows = [row for key in vectors for row in rows_of[key]]
    return rows, np.stack([vectors[key] for key in vectors for _ in rows_of[key]]).astype(np.float32, copy=False)


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())
