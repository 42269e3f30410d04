"""Exporting the fp32 sentence encoder to ONNX (torch, in the process that saves a ``minilm-head``).

The graph is the model's forward pass + mean pooling over the attention mask + L2 norm, inputs
``input_ids`` and ``attention_mask`` (int64, batch x tokens, both axes dynamic), output ``embedding``
(float32, batch x dim): one call per batch, no pooling left to the caller. torch's TorchScript-based
exporter (``dynamo=False``: the dynamo exporter needs onnxscript, not a dependency) at opset 17.

One export per model directory per process (~5 s, 90 MB), kept in a temporary directory and copied into
every artifact saved after it. Before it is used the graph must agree with the torch encoder on
:data:`PROBE` texts (short, long, truncated; cosine >= 1 - 1e-5), else :class:`EncoderError`.

:func:`quantized`: the same export with every weight MatMul quantised to int8 by onnxruntime's dynamic
quantisation, per output channel, 7-bit weights (``int8-pc``, :mod:`kinds.encoder`; ~1 s more, 58 MB: the
word-embedding table stays fp32). It must stay within :data:`MIN_COSINE_INT8` of the fp32 graph on
:data:`PROBE`: a check that the quantisation did not break the graph, not a measure of its accuracy.
"""

from __future__ import annotations

import atexit
import logging
import shutil
import tempfile
import threading
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from kinds.encoder import Encoder, _read_model, _tokenize, _tokenizer
from kinds.exceptions import EncoderError
from kinds.onnx_encoder import GRAPH, INPUTS, TOKENIZER, OnnxEncoder

PROBE = ("ok", "This was great, I loved it!", "Terrible. Never again, not even if they paid me for it.",
         "word " * 400)  # the last one is truncated at max_length
MIN_COSINE = 1.0 - 1e-5
MIN_COSINE_INT8 = 0.9  # measured: >= 0.947 over 6,000 held-out texts, >= 0.963 over bench/encoder_precision.py's 500

_exports: dict[Path, Path] = {}  # model_dir -> a directory holding encoder.onnx + tokenizer.json
_quantized: dict[Path, Path] = {}  # model_dir -> the same, quantised
_lock = threading.Lock()
_tmp: Path | None = None


def exported(encoder: Encoder) -> Path:
    """A directory with ``encoder.onnx`` and ``tokenizer.json`` for the fp32 ``encoder`` (exported on the
    first call per model directory, then checked against the encoder on :data:`PROBE`)."""
    if encoder.precision != "fp32":
        raise EncoderError(f"only the fp32 encoder is exported, not {encoder.precision}")
    with _lock:
        if encoder.model_dir not in _exports:
            out = _scratch() / f"export-{len(_exports)}"
            out.mkdir()
            export(encoder.model_dir, out / GRAPH, encoder.max_length)
            shutil.copyfile(encoder.model_dir / TOKENIZER, out / TOKENIZER)
            check(encoder, OnnxEncoder(out, encoder_id=encoder.encoder_id, dim=encoder.dim,
                                       max_length=encoder.max_length))
            _exports[encoder.model_dir] = out
        return _exports[encoder.model_dir]


def quantized(encoder: Encoder) -> Path:
    """A directory with the ``int8-pc`` ``encoder.onnx`` (module docstring) and ``tokenizer.json`` for the
    model of ``encoder`` at any precision (quantised on the first call per model directory, then checked on
    :data:`PROBE` through the session :func:`quantized_encoder` goes on to use)."""
    fp32, at = encoder.with_precision("fp32"), encoder.with_precision("int8-pc")
    source = exported(fp32)
    with _lock:
        if encoder.model_dir not in _quantized:
            from onnxruntime.quantization import QuantType, quantize_dynamic

            out = _scratch() / f"int8-pc-{len(_quantized)}"
            out.mkdir()
            quiet = _NotFrom(Path(quantize_dynamic.__code__.co_filename).parent)  # it logs on the root logger
            logging.getLogger().addFilter(quiet)
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    quantize_dynamic(source / GRAPH, out / GRAPH, op_types_to_quantize=["MatMul"], per_channel=True,
                                     reduce_range=True, weight_type=QuantType.QInt8)
            except Exception as exc:  # onnxruntime/onnx raise plain Exception subclasses
                raise EncoderError(f"quantising the encoder graph {source / GRAPH} failed: {exc}") from exc
            finally:
                logging.getLogger().removeFilter(quiet)
            shutil.copyfile(source / TOKENIZER, out / TOKENIZER)
            texts = list(PROBE)
            reference = OnnxEncoder(source, encoder_id=fp32.encoder_id, dim=fp32.dim, max_length=fp32.max_length)
            lowest = float(np.min(np.sum(reference.encode(texts) * _per_text(out, at).encode(texts), axis=1)))
            if lowest < MIN_COSINE_INT8:
                raise EncoderError(f"the int8-pc encoder graph disagrees with fp32: cosine {lowest:.4f} < "
                                   f"{MIN_COSINE_INT8}")
            _quantized[encoder.model_dir] = out
        return _quantized[encoder.model_dir]


def quantized_encoder(encoder: Encoder) -> OnnxEncoder:
    """The ``int8-pc`` graph of ``encoder``'s model (:func:`quantized`) as an encoder: ``encoder``'s id at that
    precision, one text a call (its activations are quantised per call), ``encoder``'s threads."""
    return _per_text(quantized(encoder), encoder.with_precision("int8-pc"))


def _per_text(directory: Path, at: Encoder) -> OnnxEncoder:
    return OnnxEncoder(directory, encoder_id=at.encoder_id, dim=at.dim, max_length=at.max_length, batch_size=1,
                       threads=at.threads)


def export(model_dir: Path, out: Path, max_length: int = 256) -> None:
    model = _Pooled(_read_model(model_dir)).eval()
    inputs = _tokenize(_tokenizer(model_dir), ["a short example text", "and a second, longer one to pad the first"],
                       max_length)
    axes = {INPUTS[0]: {0: "batch", 1: "tokens"}, INPUTS[1]: {0: "batch", 1: "tokens"}, "embedding": {0: "batch"}}
    try:
        with warnings.catch_warnings(), torch.inference_mode():
            warnings.simplefilter("ignore")  # TracerWarnings and the exporter's deprecation notice
            torch.onnx.export(model, inputs, str(out), input_names=list(INPUTS), output_names=["embedding"],
                              dynamic_axes=axes, opset_version=17, do_constant_folding=True, dynamo=False)
    except (RuntimeError, TypeError, ValueError) as exc:
        raise EncoderError(f"exporting the encoder of {model_dir} to ONNX failed: {exc}") from exc


def check(encoder: Encoder, graph: OnnxEncoder) -> float:
    """The lowest cosine between the two encoders' vectors of :data:`PROBE`; :class:`EncoderError` when
    below :data:`MIN_COSINE`."""
    texts = list(PROBE)
    lowest = float(np.min(np.sum(encoder.encode(texts) * graph.encode(texts), axis=1)))
    if lowest < MIN_COSINE:
        raise EncoderError(f"the exported encoder disagrees with torch: cosine {lowest:.7f} < {MIN_COSINE}")
    return lowest


def _scratch() -> Path:
    global _tmp
    if _tmp is None:
        _tmp = Path(tempfile.mkdtemp(prefix="flywheel-onnx-"))
        atexit.register(shutil.rmtree, _tmp, True)
    return _tmp


class _NotFrom(logging.Filter):
    """Drops the records logged from files under ``directory`` (onnxruntime's quantiser logs its generic
    advice and a line per tensor on the root logger)."""

    def __init__(self, directory: Path) -> None:
        super().__init__()
        self.directory = str(directory)

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.pathname.startswith(self.directory)


class _Pooled(torch.nn.Module):
    """The encoder with mean pooling and the L2 norm, as :class:`~kinds.encoder.Encoder` computes them."""

    def __init__(self, model: Any) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
        return torch.nn.functional.normalize(pooled, p=2.0, dim=1)
