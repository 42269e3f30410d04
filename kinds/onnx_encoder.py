"""The sentence encoder as an exported ONNX graph, run by onnxruntime: no torch in the process.

A ``minilm-head`` artifact saved at fp32 carries ``encoder.onnx``: the all-MiniLM-L6-v2 forward pass, mean
pooling over the attention mask and the L2 norm as one graph (exported by :func:`kinds._onnx_export.export`
in the process that saved it, which has torch), plus the model's ``tokenizer.json``; the manifest pins
both by sha256. :class:`OnnxEncoder` runs that graph. Its vectors agree with the torch
:class:`~kinds.encoder.Encoder`'s to ~3e-7 per component (cosine >= 1 - 1e-6, checked at export and in
tests/trainer/test_onnx_encoder.py), the size of the differences between two batch compositions of the
torch encoder itself, so it carries the same ``encoder_id``: a head trained on torch embeddings is
served on these, and the embedding cache is shared.

Texts are tokenized in one call, then run in length buckets (:func:`buckets`): sorted by token count, and
split where padding to the bucket's longest text would cost more than another call. One call costs about
:data:`CALL_TOKENS` tokens' worth of work on top of its tokens (at batch 1 and ~20 tokens, a third of the
time: every call streams the ~87 MB of weights), so short texts are cheaper together, and a long text
is not padded onto short ones. Rows are put back in the caller's order; :meth:`OnnxEncoder.encode_parts`
hands each bucket over as soon as it is done, shortest first (a serving pod answers a short request
without waiting for a long text that shares its micro-batch).

Sessions are shared process-wide per (encoder_id, threads): a pod holding a champion and a canary of the
same encoder runs one graph. ``threads`` is onnxruntime's intra-op thread count per call; concurrent calls
run in parallel (``InferenceSession.run`` is thread-safe and releases the GIL), each with a tokenizer of
its own.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from kinds.encoder import Part, Vectors, _tokenizer
from kinds.exceptions import EncoderError

GRAPH, TOKENIZER = "encoder.onnx", "tokenizer.json"
INPUTS = ("input_ids", "attention_mask")
CALL_TOKENS = 12  # the fixed cost of one session call, in tokens (CPU, 1 thread: ~2.6 ms vs ~0.22 ms a token)
log = logging.getLogger(__name__)


class OnnxEncoder:
    """Runs ``directory/encoder.onnx`` with the tokenizer ``directory/tokenizer.json`` (see the module
    docstring); ``encoder_id``, ``dim`` and ``max_length`` are those of the encoder it was exported from."""

    def __init__(self, directory: Path, *, encoder_id: str, dim: int, max_length: int = 256, batch_size: int = 64,
                 threads: int = 1) -> None:
        self.directory = Path(directory)
        self._encoder_id, self._dim = encoder_id, dim
        self.max_length, self.batch_size, self.threads = max_length, batch_size, threads

    def __repr__(self) -> str:
        return f"OnnxEncoder({str(self.directory / GRAPH)!r}, threads={self.threads})"

    @property
    def encoder_id(self) -> str:
        return self._encoder_id

    @property
    def dim(self) -> int:
        return self._dim

    @property
    def graph(self) -> Path:
        return self.directory / GRAPH

    def encode(self, texts: Sequence[str]) -> Vectors:
        out = np.empty((len(texts), self._dim), dtype=np.float32)
        for rows, vectors in self.encode_parts(texts):
            out[rows] = vectors
        return out

    def encode_parts(self, texts: Sequence[str]) -> Iterator[Part]:
        """:meth:`encode` one length bucket at a time, shortest first: (the bucket's rows of ``texts``,
        their vectors), each yielded as soon as its session call returns."""
        if not texts:
            return
        loaded = _load(self.directory, self._encoder_id, self.threads)
        tokenizer = loaded.borrow()
        try:
            tokenizer.enable_truncation(self.max_length)
            ids = [e.ids for e in tokenizer.encode_batch(list(texts))]  # unpadded (see _Loaded.borrow)
        finally:
            loaded.tokenizers.put(tokenizer)
        for rows in buckets([len(row) for row in ids], self.batch_size):
            width = max(len(ids[i]) for i in rows)
            input_ids = np.full((len(rows), width), loaded.pad_id, dtype=np.int64)
            mask = np.zeros((len(rows), width), dtype=np.int64)
            for n, i in enumerate(rows):
                input_ids[n, :len(ids[i])] = ids[i]
                mask[n, :len(ids[i])] = 1
            try:
                vectors = loaded.session.run(None, {INPUTS[0]: input_ids, INPUTS[1]: mask})[0]
            except Exception as exc:  # onnxruntime raises its own Exception subclasses (Fail, InvalidArgument)
                raise EncoderError(f"the encoder graph {self.graph} failed: {exc}") from exc
            yield rows, np.asarray(vectors, dtype=np.float32)


def buckets(lengths: Sequence[int], batch_size: int, call_tokens: int = CALL_TOKENS) -> list[list[int]]:
    """The indices of ``lengths`` (token counts) in runs of at most ``batch_size``, each padded to its
    longest: sorted by length, cut where the total cost (``call_tokens`` per run + rows x longest) is
    least (dynamic programming over the sorted order, O(n x batch_size))."""
    order = sorted(range(len(lengths)), key=lengths.__getitem__)
    cost = [0.0] + [float("inf")] * len(order)
    cut = [0] * (len(order) + 1)
    for end in range(1, len(order) + 1):
        longest = lengths[order[end - 1]]
        for start in range(max(0, end - batch_size), end):
            total = cost[start] + call_tokens + (end - start) * longest
            if total < cost[end]:
                cost[end], cut[end] = total, start
    runs: list[list[int]] = []
    end = len(order)
    while end:
        runs.append(order[cut[end]:end])
        end = cut[end]
    return runs[::-1]


class _Loaded:
    def __init__(self, session: Any, directory: Path) -> None:
        self.session, self.directory = session, directory
        self.tokenizers: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self.pad_id: int = (_tokenizer(directory).padding or {}).get("pad_id", 0)

    def borrow(self) -> Any:
        """An idle tokenizer (a new one when all are busy; the fast tokenizer is not re-entrant), without
        padding: :meth:`OnnxEncoder.encode` pads each bucket itself."""
        try:
            return self.tokenizers.get_nowait()
        except queue.Empty:
            tokenizer = _tokenizer(self.directory)
            tokenizer.no_padding()
            return tokenizer


_sessions: dict[tuple[str, int], _Loaded] = {}
_sessions_lock = threading.Lock()


def _load(directory: Path, encoder_id: str, threads: int) -> _Loaded:
    with _sessions_lock:
        key = (encoder_id, threads)
        if key not in _sessions:
            _sessions[key] = _Loaded(session(directory / GRAPH, threads), directory)
        return _sessions[key]


def session(graph: Path, threads: int = 1) -> Any:
    """An onnxruntime CPU session of ``graph``: every graph optimisation, ``threads`` intra-op threads, no
    inter-op pool (calls run in parallel on the callers' threads), no spinning threads (on a shared
    2-core machine a spinning pool steals the CPU the other batch worker needs)."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3
    try:
        return onnxruntime.InferenceSession(str(graph), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime's errors derive from plain Exception
        raise EncoderError(f"cannot load the encoder graph {graph}: {exc}") from exc
