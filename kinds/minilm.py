"""``minilm-head``: a small head (linear softmax, or one hidden layer) over cached all-MiniLM-L6-v2
sentence embeddings. The encoder stays frozen, so retraining is training the head over vectors the
embedding cache already holds: seconds for thousands of texts.

The embedder (encoder + cache) is a collaborator, not configuration: a head uses the one given to
:meth:`MiniLMHead.use` or bound from :class:`~kinds.base.Resources` by ``create`` / ``load_model``, else
its own (the shared MiniLM encoder with an in-memory cache), made on first use. A trainer builds one
embedder with the Postgres cache at start-up and binds every head it creates or loads to it::

    resources = Resources(embedder=Embedder(shared_encoder(), LayeredEmbeddingCache(
        MemoryEmbeddingCache(), PostgresEmbeddingCache(database_url))))
    head = create("minilm-head", resources=resources)

The artifact is ``head.safetensors`` + ``encoder.json`` (the encoder_id and dim the head was trained
on); loading it where the embedder's encoder differs raises :class:`EncoderMismatch`. A head trained on
the fp32 MiniLM :class:`Encoder` also ships that encoder exported to ONNX (``encoder.onnx`` +
``tokenizer.json``, :mod:`kinds.onnx_encoder`): a head loaded from such an artifact embeds with
onnxruntime wherever its embedder's encoder is that :class:`Encoder` with ``use_graph`` set (serving
pods), so a serving pod never imports torch. Predicting is numpy (the head's layers as arrays);
torch and scikit-learn are imported only to fit (``kinds._head_training``).

``precision`` (``fp32``, ``int8``, ``int8-all``, ``int8-pc``; see :mod:`kinds.encoder`) is the encoder
precision the head trains and predicts on: an embedder whose encoder is the MiniLM :class:`Encoder` at another
precision is used at this one (same cache: the precision is part of the encoder_id), so training and serving
both embed with it. Other encoders (the fake) are used as given. An ``int8-pc`` head ships its quantised graph
instead of the fp32 one, and a head loaded from it always runs that graph (one text a call), torch or not.
``int8-pc`` is the default: measured at fp32's accuracy (held out over five domains, on the platform's loop, and
through the gate at 100-150 labels; docs/serving.md) for 1.5-2.2x less encoder CPU a text than the fp32 graph
(AVX2 / AVX-512 VNNI kernels). ``precision: fp32`` keeps the published weights. A saved head records its
precision, so heads saved before keep theirs.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import shutil
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Literal, Self

import numpy as np
from safetensors.numpy import load_file, save_file

from kinds.base import ModelKind, Probabilities, Resources, as_texts
from kinds.embeddings import Embedder, MemoryEmbeddingCache
from kinds.encoder import GRAPH_PRECISIONS, PRECISIONS, Encoder, Precision, Vectors, shared_encoder
from kinds.exceptions import ArtifactError, EncoderError, EncoderMismatch, KindError
from kinds.onnx_encoder import GRAPH, TOKENIZER, OnnxEncoder
from kinds.search_space import FloatRange
from tasks.features import Input

HEAD, ENCODER = "head.safetensors", "encoder.json"
Solver = Literal["adamw", "lbfgs"]
SOLVERS: tuple[Solver, ...] = ("adamw", "lbfgs")
Layer = tuple[Vectors, Vectors]  # (weight (out, in), bias (out,)), float32
DEFAULT_PRECISION: Precision = "int8-pc"  # see the module docstring
log = logging.getLogger(__name__)


class MiniLMHead(ModelKind):
    """Softmax head on the (weighted) cross-entropy; ``hidden=0`` is a linear head, else one ReLU layer of
    that width. ``balanced`` reweights classes to equal total weight. ``precision``: the encoder's (module
    docstring).

    ``solver``: ``adamw`` trains ``epochs`` epochs of minibatch AdamW from a ``seed``-ed start;
    ``weight_decay`` 0.1 (AdamW's decoupled decay): on a few hundred drifted labels beside a down-weighted
    corpus it is worth +0.02 held-out accuracy over 1e-4 on average (-0.004 to +0.033 at 400 labels), and the
    fit on every label is no worse (measured in docs/training.md). ``lbfgs`` (linear heads only) solves the
    L2-regularised multinomial logistic regression to convergence instead (scikit-learn's L-BFGS; ``c`` is
    the inverse regularisation strength, on sample weights scaled to mean 1): the same data gives the same
    head whatever the seed, where AdamW's 30 epochs end ±0.007 held-out accuracy apart from seed to seed,
    and ``c`` 0.1 learns a drifted domain from 400 labels better (docs/training.md).
    ``partial_fit`` continues training the current head with ``epochs`` epochs of AdamW on the given
    samples, whichever solver fitted it (L-BFGS on those samples alone would forget the rest)."""

    kind = "minilm-head"
    tasks = frozenset({"text-classification"})
    search_space = {"c": FloatRange(0.001, 100.0, log=True)}  # the L2 strength of solver "lbfgs" (fix it)
    batches = True  # the encoder's cost per text falls with the batch: serving pods micro-batch requests

    def __init__(self, *, hidden: int = 0, epochs: int = 30, lr: float = 0.01, weight_decay: float = 0.1,
                 batch_size: int = 64, balanced: bool = False, seed: int = 0, precision: Precision = DEFAULT_PRECISION,
                 solver: Solver = "adamw", c: float = 1.0) -> None:
        if precision not in PRECISIONS:
            raise KindError(f"unknown encoder precision {precision!r}; known: {list(PRECISIONS)}")
        if solver not in SOLVERS:
            raise KindError(f"unknown solver {solver!r}; known: {list(SOLVERS)}")
        if solver == "lbfgs" and hidden:
            raise KindError(f"solver 'lbfgs' fits a linear head only (hidden=0), got hidden={hidden}")
        if not (isinstance(c, int | float) and math.isfinite(c) and c > 0):
            raise KindError(f"c must be a positive number, got {c!r}")
        super().__init__(hidden=hidden, epochs=epochs, lr=lr, weight_decay=weight_decay, batch_size=batch_size,
                         balanced=balanced, seed=seed, precision=precision, solver=solver, c=c)
        self._layers: list[Layer] = []  # the fitted head, numpy (what predicts)
        self._embedder: Embedder | None = None
        self._encoder_id = ""  # the encoder the fitted head was trained on
        self._source = Path(f"<unsaved {self.kind}>")  # the artifact it was loaded from, for errors
        self._graph: tuple[Path, int] | None = None  # the loaded artifact's exported encoder (dir, max_length)

    # -- collaborators -------------------------------------------------------------------------
    def use(self, embedder: Embedder) -> Self:
        """Embed through ``embedder`` (at this head's precision) from now on (refused if a fitted head was
        trained on another encoder)."""
        embedder = self._at_precision(embedder)
        self._check_encoder(embedder)
        self._embedder = embedder
        return self

    def bind(self, resources: Resources) -> Self:
        """Embed through ``resources.embedder`` when it holds one (as :meth:`use`)."""
        return self.use(resources.embedder) if resources.embedder is not None else self

    @property
    def embedder(self) -> Embedder:
        """The embedder given to ``use`` or ``bind``; else the head's own, made on first use: the shared
        encoder with an in-memory cache."""
        if self._embedder is None:
            self._embedder = self._at_precision(Embedder(shared_encoder(), MemoryEmbeddingCache()))
        return self._embedder

    def _at_precision(self, embedder: Embedder) -> Embedder:
        """``embedder`` with the MiniLM :class:`Encoder` at this head's precision, or in its stead the
        artifact's exported graph of it (module docstring); other encoders as given."""
        encoder = embedder.encoder
        if not isinstance(encoder, Encoder):
            return embedder
        if encoder.precision != self.params["precision"]:
            encoder = encoder.with_precision(self.params["precision"])
            embedder = embedder.with_encoder(encoder)
        per_text = encoder.precision in GRAPH_PRECISIONS  # a quantised graph: one text a call, never torch
        if self._graph is not None and (encoder.use_graph or per_text) and encoder.encoder_id == self._encoder_id:
            directory, max_length = self._graph
            return embedder.with_encoder(OnnxEncoder(directory, encoder_id=self._encoder_id, dim=encoder.dim,
                                                     max_length=max_length,
                                                     batch_size=1 if per_text else encoder.batch_size,
                                                     threads=encoder.threads))
        if per_text:  # not loaded from an artifact: the graph quantised here (the head ships it when saved)
            self._check_encoder(embedder)  # refused before the export, which needs torch (a pod has none)
            from kinds._onnx_export import quantized_encoder

            return embedder.with_encoder(quantized_encoder(encoder))
        return embedder

    def clone(self) -> Self:
        """The same configuration, unfitted, on the same embedder."""
        twin = super().clone()
        twin._embedder = self._embedder
        return twin

    # -- learning ------------------------------------------------------------------------------
    def fit(self, inputs: Sequence[Input], labels: Sequence[str], weights: Sequence[float] | None = None) -> Self:
        import torch

        from kinds import _head_training as training

        texts = as_texts(inputs)
        classes = sorted(set(labels))
        if len(classes) < 2:
            raise KindError(f"need at least two labels to train, got {classes}")
        embedder = self.embedder
        x = embedder.embed(texts)
        generator = torch.Generator().manual_seed(self.params["seed"])
        net = training.new_net(x.shape[1], self.params["hidden"], len(classes), generator)
        y = training.targets(labels, classes)
        if self.params["solver"] == "lbfgs":
            training.solve(net, x, y, len(classes), weights, self.params)
        else:
            training.train(net, x, y, len(classes), weights, self.params, generator)
        self._layers, self.labels = training.layers_of(net), tuple(classes)
        self._encoder_id, self._embedder = embedder.encoder_id, embedder
        return self

    def partial_fit(self, inputs: Sequence[Input], labels: Sequence[str],
                    weights: Sequence[float] | None = None) -> Self:
        import torch

        from kinds import _head_training as training

        self._require_fitted()
        self._check_labels(labels)
        x = self._checked_embedder().embed(as_texts(inputs))
        net = training.net_of(self._layers)
        generator = torch.Generator().manual_seed(self.params["seed"])
        training.train(net, x, training.targets(labels, self.labels), len(self.labels), weights, self.params,
                       generator)
        self._layers = training.layers_of(net)
        return self

    def predict_proba(self, inputs: Sequence[Input]) -> Probabilities:
        self._require_fitted()
        return self._head(self._checked_embedder().embed(as_texts(inputs)))

    def predict_proba_parts(self, inputs: Sequence[Input]) -> Iterator[tuple[list[int], Probabilities]]:
        """The rows of each part the embedder yields (cache hits, then each length bucket of the ONNX
        encoder, shortest first), bit for bit those of :meth:`predict_proba`: the head runs on the whole
        batch's shape each time (rows still to come are zeros), as BLAS rounds a row differently with the
        matrix's shape and the row's place in it."""
        self._require_fitted()
        texts = as_texts(inputs)
        x = np.zeros((len(texts), self._layers[0][0].shape[1]), dtype=np.float32)
        for rows, vectors in self._checked_embedder().embed_parts(texts):
            x[rows] = vectors
            yield rows, self._head(x)[rows]

    def _head(self, x: Vectors) -> Probabilities:
        for n, (weight, bias) in enumerate(self._layers):
            x = x @ weight.T + bias
            if n < len(self._layers) - 1:
                np.maximum(x, 0.0, out=x)
        logits = x.astype(np.float64)
        logits -= logits.max(axis=1, keepdims=True)
        proba: Probabilities = np.exp(logits)
        proba /= proba.sum(axis=1, keepdims=True)
        return proba

    # -- artifacts -----------------------------------------------------------------------------
    def _save_files(self, directory: Path) -> list[str]:
        save_file({f"{2 * n}.{part}": np.ascontiguousarray(array) for n, layer in enumerate(self._layers)
                   for part, array in zip(("weight", "bias"), layer, strict=True)}, directory / HEAD)
        recorded: dict[str, Any] = {"encoder_id": self._encoder_id, "dim": int(self._layers[0][0].shape[1])}
        files = [HEAD, ENCODER]
        graph = self._graph_to_ship()
        if graph is not None:
            source, max_length = graph
            for name in (GRAPH, TOKENIZER):
                shutil.copyfile(source / name, directory / name)
            recorded |= {"graph": GRAPH, "tokenizer": TOKENIZER, "max_length": max_length}
            files += [GRAPH, TOKENIZER]
        (directory / ENCODER).write_text(json.dumps(recorded, sort_keys=True))
        return files

    def _graph_to_ship(self) -> tuple[Path, int] | None:
        """The exported encoder to save beside the head: the one it was loaded with, else an export of
        the fp32 MiniLM :class:`Encoder` it was trained on (None for other encoders, or if the export
        fails: the artifact then serves on torch, as before)."""
        if self._graph is not None:
            return self._graph
        encoder = self.embedder.encoder
        if isinstance(encoder, OnnxEncoder) and encoder.encoder_id == self._encoder_id:
            return encoder.directory, encoder.max_length
        fp32 = isinstance(encoder, Encoder) and encoder.precision == "fp32"
        if not (fp32 and isinstance(encoder, Encoder) and encoder.encoder_id == self._encoder_id):
            return None
        from kinds._onnx_export import exported

        try:
            return exported(encoder), encoder.max_length
        except EncoderError as exc:
            log.warning("saving %s without an ONNX encoder (pods will run torch): %s", self.kind, exc)
            return None

    def _load_files(self, directory: Path) -> None:
        try:
            recorded: dict[str, Any] = json.loads((directory / ENCODER).read_text())
            encoder_id, dim = str(recorded["encoder_id"]), int(recorded["dim"])
            graph = (directory, int(recorded.get("max_length", 256))) if recorded.get("graph") == GRAPH else None
            state = load_file(directory / HEAD)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ArtifactError(directory, f"unreadable {self.kind} files: {exc}") from exc
        self._layers = _layers(state, dim, self.params["hidden"], len(self.labels), directory / HEAD, self.params)
        self._encoder_id, self._source, self._graph = encoder_id, directory, graph
        self.use(self.embedder if self._embedder is None else self._embedder)

    def _checked_embedder(self) -> Embedder:
        embedder = self.embedder
        self._check_encoder(embedder)
        return embedder

    def _check_encoder(self, embedder: Embedder) -> None:
        if self._encoder_id and embedder.encoder_id != self._encoder_id:
            raise EncoderMismatch(self._source, self._encoder_id, embedder.encoder_id)


def _layers(state: dict[str, Vectors], dim: int, hidden: int, n_labels: int, path: Path,
            params: dict[str, Any]) -> list[Layer]:
    """The head's layers from ``head.safetensors`` (keys ``0.weight``, ``0.bias``[, ``2.weight``,
    ``2.bias``]: torch's Sequential names), refused unless they fit ``dim``, ``hidden`` and the labels."""
    sizes = [dim, hidden, n_labels] if hidden else [dim, n_labels]
    expected = {f"{2 * n}.{part}": (fan_out, fan_in) if part == "weight" else (fan_out,)
                for n, (fan_in, fan_out) in enumerate(itertools.pairwise(sizes)) for part in ("weight", "bias")}
    found = {key: tuple(value.shape) for key, value in state.items()}
    if found != expected:
        raise ArtifactError(path, f"does not fit params {params} and {n_labels} labels: tensors {found}, "
                            f"expected {expected}")
    return [(np.asarray(state[f"{2 * n}.weight"], dtype=np.float32),
             np.asarray(state[f"{2 * n}.bias"], dtype=np.float32)) for n in range(len(sizes) - 1)]
