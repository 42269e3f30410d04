"""The fp32 MiniLM encoder exported to ONNX (``kinds._onnx_export``) and run by onnxruntime
(``kinds.onnx_encoder``), against the torch encoder on real texts: the same vectors to ~1e-6, the same
predictions; an fp32 head's artifact ships the graph, pinned by the manifest; an int8-pc head (the default)
ships its quantised graph."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from kinds import Embedder, Encoder, MemoryEmbeddingCache, MiniLMHead, Resources, TamperedArtifact, load_model
from kinds._onnx_export import exported, quantized_encoder
from kinds.encoder import shared_encoder
from kinds.onnx_encoder import GRAPH, TOKENIZER, OnnxEncoder
from tests.fakes import HashingEncoder
from tests.trainer.lifecycle_helpers import rows


@pytest.fixture(scope="module")
def encoder() -> Encoder:
    return shared_encoder()


@pytest.fixture(scope="module")
def graph(encoder: Encoder) -> OnnxEncoder:
    return OnnxEncoder(exported(encoder), encoder_id=encoder.encoder_id, dim=encoder.dim)


def real_texts(count: int, name: str = "vader_tweets") -> list[str]:
    """Distinct real texts, with the longest of the file among them (truncated at 256 tokens)."""
    texts = list(dict.fromkeys(r.text for r in rows(name)))
    return [max(texts, key=len), "", *texts[:count - 2]]


def test_the_graph_gives_the_torch_encoders_vectors(encoder: Encoder, graph: OnnxEncoder) -> None:
    texts = real_texts(300)
    torch_vectors, onnx_vectors = encoder.encode(texts), graph.encode(texts)
    assert onnx_vectors.shape == torch_vectors.shape == (len(texts), 384) and onnx_vectors.dtype == np.float32
    assert np.abs(onnx_vectors - torch_vectors).max() < 1e-5
    assert np.sum(onnx_vectors * torch_vectors, axis=1).min() > 1 - 1e-5
    assert graph.encoder_id == encoder.encoder_id  # the same vectors, so the same id and cache entries
    # another batch composition: the caller's order restored, the same vectors but for padding's last bits
    assert np.abs(graph.encode(texts[:5]) - onnx_vectors[:5]).max() < 1e-6


def test_an_fp32_head_ships_the_graph_and_predicts_the_same_on_it(encoder: Encoder, tmp_path: Path) -> None:
    train = rows("vader_movies")[:400]
    head = MiniLMHead(epochs=10, precision="fp32").use(Embedder(encoder, MemoryEmbeddingCache()))
    head.fit([r.text for r in train], [r.label for r in train])
    manifest = head.save(tmp_path / "m")
    assert {GRAPH, TOKENIZER} <= set(manifest["files"])  # pinned by sha256 like every other file
    recorded = json.loads((tmp_path / "m" / "encoder.json").read_text())
    assert recorded["graph"] == GRAPH and recorded["encoder_id"] == encoder.encoder_id

    pod_like = Encoder(use_graph=True)  # what a serving pod's embedder holds
    served = load_model(tmp_path / "m", resources=Resources(embedder=Embedder(pod_like, MemoryEmbeddingCache())))
    assert isinstance(served, MiniLMHead) and isinstance(served.embedder.encoder, OnnxEncoder)
    # saved at fp32, loaded at fp32 whatever the kind's default precision (int8-pc): the manifest holds the params
    assert served.params["precision"] == "fp32" and served.embedder.encoder_id == encoder.encoder_id
    trainer_side = load_model(tmp_path / "m", resources=Resources(embedder=Embedder(encoder, MemoryEmbeddingCache())))
    assert isinstance(trainer_side, MiniLMHead) and trainer_side.embedder.encoder is encoder  # use_graph off

    texts = real_texts(300, "vader_products")  # held out: none was a training text
    want, got = head.predict_proba(texts), served.predict_proba(texts)
    assert served.predict(texts) == head.predict(texts)
    assert np.abs(got - want).max() < 1e-5
    assert np.abs(trainer_side.predict_proba(texts) - want).max() < 1e-6  # torch; batches differ from head's

    again = served.save(tmp_path / "again")  # a loaded head saved again ships the same graph
    assert again["files"][GRAPH] == manifest["files"][GRAPH]


def test_a_tampered_graph_is_refused(encoder: Encoder, tmp_path: Path) -> None:
    train = rows("vader_movies")[:100]
    head = MiniLMHead(epochs=2, precision="fp32").use(Embedder(encoder, MemoryEmbeddingCache()))
    head.fit([r.text for r in train], [r.label for r in train]).save(tmp_path / "m")
    graph = tmp_path / "m" / GRAPH
    raw = bytearray(graph.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    graph.write_bytes(bytes(raw))
    with pytest.raises(TamperedArtifact):
        load_model(tmp_path / "m")


def test_heads_of_other_encoders_ship_no_graph(tmp_path: Path) -> None:
    head = MiniLMHead(epochs=2).use(Embedder(HashingEncoder()))
    manifest = head.fit(["good", "bad", "fine", "awful"], ["p", "n", "p", "n"]).save(tmp_path / "m")
    assert set(manifest["files"]) == {"head.safetensors", "encoder.json"}
    loaded = load_model(tmp_path / "m", resources=Resources(embedder=Embedder(HashingEncoder())))
    assert np.array_equal(loaded.predict_proba(["good"]), head.predict_proba(["good"]))


# -- int8-pc: the graph quantised per channel by onnxruntime (issue 22) -----------------------------------------

@pytest.fixture(scope="module")
def int8pc(encoder: Encoder) -> OnnxEncoder:
    return quantized_encoder(encoder)


def test_int8_pc_vectors_are_per_text_and_near_fp32s(encoder: Encoder, int8pc: OnnxEncoder) -> None:
    texts = real_texts(120)
    vectors = int8pc.encode(texts)
    assert int8pc.encoder_id == f"{encoder.encoder_id}:int8-pc" and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    # activations are quantised per call, so one text a call: a vector does not depend on its batch
    alone = np.vstack([int8pc.encode([t]) for t in texts[:20]])
    assert np.array_equal(alone, vectors[:20])
    assert np.array_equal(int8pc.encode(texts[::-1])[::-1], vectors)
    cosine = np.sum(vectors * encoder.encode(texts), axis=1)
    assert cosine.min() > 0.9 and cosine.mean() > 0.98  # near fp32's, not equal to them
    assert cosine.min() < 1 - 1e-5


def test_an_int8_pc_head_ships_its_quantised_graph_and_a_pod_predicts_what_the_trainer_did(
        encoder: Encoder, int8pc: OnnxEncoder, tmp_path: Path) -> None:
    train = rows("vader_movies")[:300]
    head = MiniLMHead(epochs=10).use(Embedder(encoder, MemoryEmbeddingCache()))  # int8-pc: the default
    assert head.params["precision"] == "int8-pc"
    assert head.embedder.encoder_id == int8pc.encoder_id  # the fp32 embedder is used at the head's precision
    head.fit([r.text for r in train], [r.label for r in train])
    manifest = head.save(tmp_path / "m")
    assert {GRAPH, TOKENIZER} <= set(manifest["files"])
    assert manifest["files"][GRAPH] == hashlib.sha256(int8pc.graph.read_bytes()).hexdigest()  # the one it trained on
    assert (tmp_path / "m" / GRAPH).stat().st_size < 0.75 * exported(encoder).joinpath(GRAPH).stat().st_size
    recorded = json.loads((tmp_path / "m" / "encoder.json").read_text())
    assert recorded["encoder_id"] == int8pc.encoder_id

    texts = real_texts(150, "vader_products")
    want = head.predict_proba(texts)
    for embedder_encoder in (Encoder(use_graph=True), Encoder()):  # a pod's, and a trainer's (torch runtime)
        loaded = load_model(tmp_path / "m", resources=Resources(embedder=Embedder(embedder_encoder,
                                                                                  MemoryEmbeddingCache())))
        assert isinstance(loaded, MiniLMHead) and isinstance(loaded.embedder.encoder, OnnxEncoder)
        assert loaded.embedder.encoder.batch_size == 1  # one text a call, as trained
        assert np.array_equal(loaded.predict_proba(texts), want)  # the same graph: the same bits
    assert load_model(tmp_path / "m").save(tmp_path / "again")["files"][GRAPH] == manifest["files"][GRAPH]


def test_the_int8_pc_precision_is_not_run_by_torch(encoder: Encoder) -> None:
    from kinds.encoder import build
    from kinds.exceptions import EncoderError

    with pytest.raises(EncoderError, match="ONNX graph"):
        build(encoder.model_dir, "int8-pc")
    with pytest.raises(EncoderError, match="ONNX graph"):
        encoder.with_precision("int8-pc").encode(["a text"])
