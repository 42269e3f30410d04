"""The MiniLM encoder's two runtimes side by side: torch (TorchScript trace, what ``Encoder`` runs) and the
ONNX graph a fp32 ``minilm-head`` artifact ships (onnxruntime, what a serving pod runs).

On 300 held-out texts of bench/serve.py's request pool (vader_tweets + vader_products): the vectors'
agreement (max abs difference, min cosine) and the predictions of one head (trained on 300 vader_movies
rows) on both; on 150 of them, CPU time per text (``time.process_time``, so other processes on a shared
machine weigh less than in wall time; one thread everywhere) for one-text calls and length-sorted batches
of 8, and for bench/serve.py's baseline, ``transformers.pipeline("feature-extraction")`` one text a call
(its encoder part: no HTTP, no head). Run it under :mod:`bench.as_host` for an AVX2-only host's kernels
(torch, oneDNN and onnxruntime alike: CPUID answers without AVX-512/VNNI/AMX).

    .venv/bin/python bench/encoder_runtime.py
    .venv/bin/python -m bench.as_host avx2 -- .venv/bin/python bench/encoder_runtime.py

Last line: {"pipeline_cpu_ms_b1", "torch_cpu_ms_b1", "onnx_cpu_ms_b1", "torch_cpu_ms_b8", "onnx_cpu_ms_b8",
"pipeline_over_onnx_b1", "max_abs_diff",
"min_cosine", "predictions_equal", "max_proba_diff", "isa_env"}.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as `python bench/encoder_runtime.py`: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import os
import random
import tempfile
import time
from collections.abc import Callable, Sequence

import numpy as np
import torch

from bench._host import HostProbe, emit
from bench.encoder_precision import rows
from kinds.catalog import load_model
from kinds.embeddings import Embedder, MemoryEmbeddingCache
from kinds.encoder import Encoder, Vectors
from kinds.minilm import MiniLMHead
from kinds.onnx_encoder import OnnxEncoder


def cpu_ms_per_text(encode: Callable[[Sequence[str]], Vectors], texts: list[str], batch: int) -> float:
    encode(texts[:batch])  # warm
    started = time.process_time()
    for start in range(0, len(texts), batch):
        encode(texts[start:start + batch])
    return round((time.process_time() - started) * 1000 / len(texts), 2)


def baseline(encoder: Encoder) -> Callable[[Sequence[str]], Vectors]:
    """bench/serve.py's baseline encoder: the pipeline, then mean pooling and the L2 norm."""
    from transformers import pipeline

    extractor = pipeline("feature-extraction", model=str(encoder.model_dir), tokenizer=str(encoder.model_dir),
                         device="cpu")

    def encode(texts: Sequence[str]) -> Vectors:
        rows = []
        for text in texts:
            hidden = extractor(text, return_tensors=True, tokenize_kwargs={"truncation": True, "max_length": 256})
            with torch.inference_mode():
                rows.append(torch.nn.functional.normalize(hidden.mean(dim=1), p=2.0, dim=1)[0].numpy())
        return np.stack(rows)

    return encode


def main() -> None:
    probe = HostProbe()
    torch.set_num_threads(1)
    movies = rows("vader_movies")
    random.Random(7).shuffle(movies)  # the training split of bench/serve.py
    train = movies[:300]
    texts = [t for t, _ in rows("vader_tweets")[:150] + rows("vader_products")[:150]]
    encoder = Encoder(threads=1)
    head = MiniLMHead().use(Embedder(encoder, MemoryEmbeddingCache()))
    head.fit([t for t, _ in train], [y for _, y in train])
    with tempfile.TemporaryDirectory() as tmp:
        head.save(Path(tmp) / "m")
        served = load_model(Path(tmp) / "m")
        assert isinstance(served, MiniLMHead)
        served.use(Embedder(Encoder(threads=1, use_graph=True), MemoryEmbeddingCache(0)))
        graph = served.embedder.encoder
        assert isinstance(graph, OnnxEncoder)
        torch_vectors, onnx_vectors = encoder.encode(texts), graph.encode(texts)
        fresh = MiniLMHead().use(Embedder(encoder, MemoryEmbeddingCache(0)))
        fresh.labels, fresh._layers, fresh._encoder_id = head.labels, head._layers, head._encoder_id
        want, got = fresh.predict_proba(texts), served.predict_proba(texts)
        extractor = baseline(encoder)
        timed = texts[:150]
        load_before = os.getloadavg()[0]
        result = {"pipeline_cpu_ms_b1": cpu_ms_per_text(extractor, timed, 1),
                  "torch_cpu_ms_b1": cpu_ms_per_text(encoder.encode, timed, 1),
                  "onnx_cpu_ms_b1": cpu_ms_per_text(graph.encode, timed, 1),
                  "torch_cpu_ms_b8": cpu_ms_per_text(encoder.encode, timed, 8),
                  "onnx_cpu_ms_b8": cpu_ms_per_text(graph.encode, timed, 8)}
        result["pipeline_over_onnx_b1"] = round(result["pipeline_cpu_ms_b1"] / result["onnx_cpu_ms_b1"], 2)
    print(f"load average {load_before:.1f} before the timings, {os.getloadavg()[0]:.1f} after", flush=True)
    emit({**result, "max_abs_diff": float(np.abs(onnx_vectors - torch_vectors).max()),
          "min_cosine": float(np.sum(onnx_vectors * torch_vectors, axis=1).min()),
          "predictions_equal": bool(np.array_equal(want.argmax(axis=1), got.argmax(axis=1))),
          "max_proba_diff": float(np.abs(want - got).max()),
          "isa_env": {k: os.environ[k] for k in ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA") if k in os.environ}},
         probe)


if __name__ == "__main__":
    main()
