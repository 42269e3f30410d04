"""The sentence encoder (the real MiniLM weights) and the embedding cache: in memory, layered, and the
real Postgres ``embeddings`` table. Cache logic runs on the fake ``HashingEncoder``; every claim about
vectors runs on the real model."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import psycopg
import pytest

import kinds._onnx_export
from core.exceptions import DatabaseUnavailable
from kinds import (
    ArtifactError,
    Embedder,
    EmbeddingCacheError,
    Encoder,
    EncoderMismatch,
    LayeredEmbeddingCache,
    MemoryEmbeddingCache,
    MiniLMHead,
    PostgresEmbeddingCache,
    Resources,
    load_model,
    shared_encoder,
)
from kinds.embeddings import text_sha256
from kinds.encoder import Vectors
from tests.fakes import HashingEncoder

TEXTS = ["A gripping, beautifully shot film.", "meh", "", "The plot collapses in the third act and never recovers.",
         "Vraiment magnifique — un chef-d'œuvre 🎬", "ok", "Not bad at all, I would watch it again with friends."]


class CountingEncoder:
    """Delegates to a real encoder and counts the texts it was asked to encode."""

    def __init__(self, inner: Encoder) -> None:
        self.inner, self.texts_encoded = inner, 0

    @property
    def encoder_id(self) -> str:
        return self.inner.encoder_id

    @property
    def dim(self) -> int:
        return self.inner.dim

    def encode(self, texts: Sequence[str]) -> Vectors:
        self.texts_encoded += len(texts)
        return self.inner.encode(texts)


@pytest.fixture(scope="module")
def encoder() -> Encoder:
    return shared_encoder()


# -- the real model ------------------------------------------------------------------------------
def test_vectors_are_unit_float32_384_and_deterministic(encoder: Encoder) -> None:
    first, second = encoder.encode(TEXTS), encoder.encode(TEXTS)
    assert first.dtype == np.float32 and first.shape == (len(TEXTS), 384) == (len(TEXTS), encoder.dim)
    assert np.allclose(np.linalg.norm(first, axis=1), 1.0, atol=1e-5)
    assert np.array_equal(first, second)
    assert encoder.encode([]).shape == (0, 384)


def test_length_buckets_are_put_back_in_the_callers_order(encoder: Encoder) -> None:
    batched = Encoder(batch_size=2).encode(TEXTS)  # 4 batches of length-sorted texts; shares the weights
    one_by_one = np.stack([encoder.encode([text])[0] for text in TEXTS])
    assert np.allclose(batched, one_by_one, atol=1e-5)
    assert (batched @ one_by_one.T).argmax(axis=1).tolist() == list(range(len(TEXTS)))


def test_inputs_are_truncated_at_256_tokens(encoder: Encoder) -> None:
    long = " ".join(["the film was long"] * 100)  # ~400 tokens
    a, b = encoder.encode([long, long + " but the ending was a total disaster and I hated it"])
    assert np.allclose(a, b, atol=1e-5)


def test_similar_sentences_are_closer_than_unrelated_ones(encoder: Encoder) -> None:
    love, like, stocks = encoder.encode(["I love this movie", "I really like this film", "The stock market fell"])
    assert float(love @ like) > float(love @ stocks) + 0.3


def test_encoder_id_names_the_weights_and_the_truncation(encoder: Encoder) -> None:
    weights = (encoder.model_dir / "model.safetensors").read_bytes()
    assert encoder.encoder_id == "all-MiniLM-L6-v2:" + hashlib.sha256(weights).hexdigest()[:16]
    assert Encoder(max_length=128).encoder_id == encoder.encoder_id + ":L128"
    assert shared_encoder() is encoder


def test_a_cached_real_encoder_encodes_each_distinct_text_once(encoder: Encoder) -> None:
    counting = CountingEncoder(encoder)
    embedder = Embedder(counting, MemoryEmbeddingCache())
    texts = ["a good film", "a bad film", "a good film"]
    first = embedder.embed(texts)
    assert counting.texts_encoded == 2 and (embedder.hits, embedder.misses) == (0, 2)
    assert np.array_equal(first[0], first[2])
    again = embedder.embed([*reversed(texts), "a good film"])
    assert counting.texts_encoded == 2 and (embedder.hits, embedder.misses) == (2, 2)
    assert np.array_equal(again[:3], first[::-1])


# -- the cache logic (fake encoder) --------------------------------------------------------------
def test_memory_cache_is_a_bounded_lru() -> None:
    cache = MemoryEmbeddingCache(max_entries=2)
    a, b, c = (np.full(4, i, dtype=np.float32) for i in range(3))
    cache.put_many("e", {b"a": a, b"b": b})
    assert set(cache.get_many("e", [b"a"])) == {b"a"}  # "a" is now the most recently used
    cache.put_many("e", {b"c": c})
    assert len(cache) == 2 and set(cache.get_many("e", [b"a", b"b", b"c"])) == {b"a", b"c"}
    stored = cache.get_many("e", [b"a"])[b"a"]
    assert not stored.flags.writeable


def test_cache_entries_belong_to_their_encoder() -> None:
    cache = MemoryEmbeddingCache()
    one, other = HashingEncoder(), HashingEncoder(salt="other")
    a = Embedder(one, cache).embed(["same text"])
    b = Embedder(other, cache).embed(["same text"])
    assert one.texts_encoded == other.texts_encoded == 1 and not np.array_equal(a, b)


def test_layered_cache_fills_the_front_from_the_back() -> None:
    fake, front, back = HashingEncoder(), MemoryEmbeddingCache(), MemoryEmbeddingCache()
    expected = Embedder(fake, back).embed(["x", "y"])
    layered = Embedder(fake, LayeredEmbeddingCache(front, back))
    got = layered.embed(["y", "x", "z"])
    assert fake.texts_encoded == 3 and len(front) == 3 and len(back) == 3
    assert np.array_equal(got[:2], expected[::-1])
    assert np.allclose(np.linalg.norm(got, axis=1), 1.0)


def test_cached_vectors_of_the_wrong_size_are_refused() -> None:
    cache = MemoryEmbeddingCache()
    fake = HashingEncoder(dim=8)
    cache.put_many(fake.encoder_id, {text_sha256("x"): np.ones(4, dtype=np.float32)})
    with pytest.raises(EmbeddingCacheError, match="shape"):
        Embedder(fake, cache).embed(["x"])


# -- Postgres ------------------------------------------------------------------------------------
def test_postgres_cache_round_trips_bit_exactly_across_instances(db_url: str) -> None:
    vectors = np.random.default_rng(0).standard_normal((4, 384)).astype(np.float32)
    vectors[0, :4] = [-0.0, np.finfo(np.float32).smallest_subnormal, np.finfo(np.float32).max, np.nan]
    keys = [text_sha256(f"text {i}") for i in range(4)]
    PostgresEmbeddingCache(db_url).put_many("enc-a", dict(zip(keys, vectors, strict=True)))

    second = PostgresEmbeddingCache(db_url)
    found = second.get_many("enc-a", [*keys, text_sha256("never stored")])
    assert set(found) == set(keys)
    for key, vector in zip(keys, vectors, strict=True):
        assert found[key].dtype == np.float32 and found[key].tobytes() == vector.tobytes()
    assert second.get_many("enc-b", keys) == {}
    second.put_many("enc-a", {keys[1]: np.zeros(384, dtype=np.float32)})  # first write wins
    assert second.get_many("enc-a", [keys[1]])[keys[1]].tobytes() == vectors[1].tobytes()
    with psycopg.connect(db_url) as conn:
        row = conn.execute("SELECT vector FROM embeddings WHERE text_sha256 = %s", (keys[2],)).fetchone()
    assert row is not None and bytes(row[0]) == vectors[2].astype("<f4").tobytes()


def test_a_second_process_cache_finds_real_embeddings_in_postgres(encoder: Encoder, db_url: str) -> None:
    texts = ["a quiet, lovely film", "dreadful", "a quiet, lovely film"]
    first_counter = CountingEncoder(encoder)
    first = Embedder(first_counter, PostgresEmbeddingCache(db_url)).embed(texts)
    later_counter = CountingEncoder(encoder)
    later = Embedder(later_counter, LayeredEmbeddingCache(MemoryEmbeddingCache(), PostgresEmbeddingCache(db_url)))
    assert np.array_equal(later.embed(texts), first)
    assert (first_counter.texts_encoded, later_counter.texts_encoded) == (2, 0)


def test_postgres_failures_are_translated(db_url: str) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("DROP TABLE embeddings")
    cache = PostgresEmbeddingCache(db_url)
    with pytest.raises(EmbeddingCacheError, match="embeddings"):
        cache.get_many("e", [b"k"])
    with pytest.raises(EmbeddingCacheError):
        cache.put_many("e", {b"k": np.ones(3, dtype=np.float32)})
    with pytest.raises(DatabaseUnavailable):
        PostgresEmbeddingCache("postgresql://postgres@127.0.0.1:1/none").get_many("e", [b"k"])
    assert "127.0.0.1" not in repr(PostgresEmbeddingCache("postgresql://u:secret@127.0.0.1/x"))


# -- heads and their encoder ---------------------------------------------------------------------
def test_a_head_refuses_an_encoder_other_than_its_own(encoder: Encoder, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    directory = tmp_path / "head"
    texts = ["great fun", "loved it", "awful", "boring mess", "fine I guess", "it was ok"]
    labels = ["positive", "positive", "negative", "negative", "neutral", "neutral"]
    fake = Embedder(HashingEncoder())
    head = MiniLMHead(epochs=5).use(fake).fit(texts, labels)
    head.save(directory)

    def no_graph_to_refuse(_: Encoder) -> None:  # building it needs torch, which a serving pod does not have
        raise AssertionError("the quantised graph was built for a head that refuses it")

    monkeypatch.setattr(kinds._onnx_export, "quantized_encoder", no_graph_to_refuse)
    with pytest.raises(EncoderMismatch) as refused:  # a head given no embedder embeds with the real MiniLM
        load_model(directory)
    assert isinstance(refused.value, ArtifactError) and refused.value.path == directory
    at_its_precision = encoder.with_precision(head.params["precision"])  # int8-pc, the default: not built to refuse
    assert (refused.value.expected, refused.value.actual) == (fake.encoder_id, at_its_precision.encoder_id)
    with pytest.raises(EncoderMismatch):
        head.use(Embedder(HashingEncoder(salt="another")))

    loaded = load_model(directory, resources=Resources(embedder=fake))
    assert np.array_equal(loaded.predict_proba(texts), head.predict_proba(texts))


def test_a_failing_shared_cache_is_a_miss_not_a_failure(db_url: str) -> None:
    """The Postgres layer going away (server down, database dropped) costs encoding time, never a fit."""
    fake = HashingEncoder()
    broken = PostgresEmbeddingCache(db_url.replace("dbname=", "dbname=gone_") if "dbname=" in db_url
                                    else db_url.rsplit("/", 1)[0] + "/gone_database")
    layered = LayeredEmbeddingCache(MemoryEmbeddingCache(), broken)
    vectors = Embedder(fake, layered).embed(["one text", "another text"])
    assert vectors.shape == (2, fake.dim) and fake.texts_encoded == 2
    assert layered.back_failures == 2  # the lookup and the store
