"""``minilm-head``: a small torch head (linear softmax, or one hidden layer) over cached all-MiniLM-L6-v2
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
on); loading it where the embedder's encoder differs raises :class:`EncoderMismatch`.

``precision`` (``fp32``, ``int8``, ``int8-all``; see :mod:`kinds.encoder`) is the encoder precision the
head trains and predicts on: an embedder whose encoder is the MiniLM :class:`Encoder` at another precision
is used at this one (same cache: the precision is part of the encoder_id), so training and serving both
embed with it. Other encoders (the fake) are used as given.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, Self

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression

from kinds._threads import one_blas_thread, one_torch_thread
from kinds.base import ModelKind, Probabilities, Resources, as_texts
from kinds.embeddings import Embedder, MemoryEmbeddingCache
from kinds.encoder import PRECISIONS, Encoder, Precision, shared_encoder
from kinds.exceptions import ArtifactError, EncoderMismatch, KindError
from kinds.search_space import FloatRange
from tasks.features import Input

HEAD, ENCODER = "head.safetensors", "encoder.json"
Solver = Literal["adamw", "lbfgs"]
SOLVERS: tuple[Solver, ...] = ("adamw", "lbfgs")
_LBFGS_MAX_ITER = 2000
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
                 batch_size: int = 64, balanced: bool = False, seed: int = 0, precision: Precision = "fp32",
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
        self._net: torch.nn.Sequential | None = None
        self._embedder: Embedder | None = None
        self._encoder_id = ""  # the encoder the fitted head was trained on
        self._source = Path(f"<unsaved {self.kind}>")  # the artifact it was loaded from, for errors

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
        encoder = embedder.encoder
        if isinstance(encoder, Encoder) and encoder.precision != self.params["precision"]:
            return embedder.with_encoder(encoder.with_precision(self.params["precision"]))
        return embedder

    def clone(self) -> Self:
        """The same configuration, unfitted, on the same embedder."""
        twin = super().clone()
        twin._embedder = self._embedder
        return twin

    # -- learning ------------------------------------------------------------------------------
    def fit(self, inputs: Sequence[Input], labels: Sequence[str], weights: Sequence[float] | None = None) -> Self:
        texts = as_texts(inputs)
        classes = sorted(set(labels))
        if len(classes) < 2:
            raise KindError(f"need at least two labels to train, got {classes}")
        embedder = self.embedder
        x = torch.from_numpy(embedder.embed(texts))
        generator = torch.Generator().manual_seed(self.params["seed"])
        net = _new_net(x.shape[1], self.params["hidden"], len(classes), generator)
        if self.params["solver"] == "lbfgs":
            self._solve(net, x, _targets(labels, classes), len(classes), weights)
        else:
            self._train(net, x, _targets(labels, classes), len(classes), weights, generator)
        self._net, self.labels, self._encoder_id, self._embedder = net, tuple(classes), embedder.encoder_id, embedder
        return self

    def partial_fit(self, inputs: Sequence[Input], labels: Sequence[str],
                    weights: Sequence[float] | None = None) -> Self:
        self._require_fitted()
        self._check_labels(labels)
        assert self._net is not None
        x = torch.from_numpy(self._checked_embedder().embed(as_texts(inputs)))
        generator = torch.Generator().manual_seed(self.params["seed"])
        self._train(self._net, x, _targets(labels, self.labels), len(self.labels), weights, generator)
        return self

    def predict_proba(self, inputs: Sequence[Input]) -> Probabilities:
        self._require_fitted()
        assert self._net is not None
        x = torch.from_numpy(self._checked_embedder().embed(as_texts(inputs)))
        with one_torch_thread(), torch.inference_mode():
            proba: Probabilities = torch.softmax(self._net(x).double(), dim=1).numpy()
        return proba

    def _train(self, net: torch.nn.Sequential, x: torch.Tensor, y: torch.Tensor, n_labels: int,
               weights: Sequence[float] | None, generator: torch.Generator) -> None:
        w = _sample_weights(weights, x, y, n_labels, self.params["balanced"])
        batch = self.params["batch_size"]
        optimiser = torch.optim.AdamW(net.parameters(), lr=self.params["lr"],
                                      weight_decay=self.params["weight_decay"])
        with one_torch_thread(), torch.enable_grad():
            for _ in range(self.params["epochs"]):
                order = torch.randperm(len(y), generator=generator)
                for start in range(0, len(y), batch):
                    rows = order[start:start + batch]
                    losses = torch.nn.functional.cross_entropy(net(x[rows]), y[rows], reduction="none")
                    optimiser.zero_grad()
                    torch.autograd.backward((losses * w[rows]).mean())
                    optimiser.step()

    def _solve(self, net: torch.nn.Sequential, x: torch.Tensor, y: torch.Tensor, n_labels: int,
               weights: Sequence[float] | None) -> None:
        """The regularised optimum (solver ``lbfgs``), written into the linear ``net``."""
        w = _sample_weights(weights, x, y, n_labels, self.params["balanced"])
        model = LogisticRegression(C=self.params["c"], max_iter=_LBFGS_MAX_ITER, tol=1e-6)
        with warnings.catch_warnings(record=True) as caught, one_blas_thread():
            warnings.simplefilter("always", ConvergenceWarning)
            model.fit(x.numpy(), y.numpy(), sample_weight=w.numpy())
        if any(issubclass(c.category, ConvergenceWarning) for c in caught):
            log.warning("minilm-head lbfgs did not converge in %d iterations", _LBFGS_MAX_ITER)
        coef, bias = model.coef_, model.intercept_  # rows in the order of model.classes_ = 0..n_labels-1
        if n_labels == 2:  # sklearn's single logit z for label 1 is a softmax over (-z/2, z/2)
            coef, bias = np.vstack([-coef / 2, coef / 2]), np.concatenate([-bias / 2, bias / 2])
        linear = net[0]
        assert isinstance(linear, torch.nn.Linear) and list(model.classes_) == list(range(n_labels))
        with torch.no_grad():
            linear.weight.copy_(torch.from_numpy(coef).float())
            linear.bias.copy_(torch.from_numpy(bias).float())

    # -- artifacts -----------------------------------------------------------------------------
    def _save_files(self, directory: Path) -> list[str]:
        assert self._net is not None
        save_file({k: v.detach().contiguous() for k, v in self._net.state_dict().items()}, directory / HEAD)
        dim = self._net[0].in_features
        (directory / ENCODER).write_text(json.dumps({"encoder_id": self._encoder_id, "dim": dim}, sort_keys=True))
        return [HEAD, ENCODER]

    def _load_files(self, directory: Path) -> None:
        try:
            recorded: dict[str, Any] = json.loads((directory / ENCODER).read_text())
            encoder_id, dim = str(recorded["encoder_id"]), int(recorded["dim"])
            state = load_file(directory / HEAD)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ArtifactError(directory, f"unreadable {self.kind} files: {exc}") from exc
        self._encoder_id, self._source = encoder_id, directory
        self.use(self.embedder)
        net = _new_net(dim, self.params["hidden"], len(self.labels), torch.Generator())
        try:
            net.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            raise ArtifactError(directory / HEAD, f"does not fit params {self.params} and "
                                f"{len(self.labels)} labels: {exc}") from exc
        self._net = net

    def _checked_embedder(self) -> Embedder:
        embedder = self.embedder
        self._check_encoder(embedder)
        return embedder

    def _check_encoder(self, embedder: Embedder) -> None:
        if self._encoder_id and embedder.encoder_id != self._encoder_id:
            raise EncoderMismatch(self._source, self._encoder_id, embedder.encoder_id)


def _new_net(dim: int, hidden: int, n_labels: int, generator: torch.Generator) -> torch.nn.Sequential:
    """Linear layers initialised from ``generator`` only (never from torch's global RNG)."""
    sizes = [dim, hidden, n_labels] if hidden else [dim, n_labels]
    layers: list[torch.nn.Module] = []
    for fan_in, fan_out in itertools.pairwise(sizes):
        linear = torch.nn.Linear(fan_in, fan_out, device="meta").to_empty(device="cpu")
        bound = 1.0 / math.sqrt(fan_in)
        with torch.no_grad():
            linear.weight.uniform_(-bound, bound, generator=generator)
            linear.bias.zero_()
        layers += [linear, torch.nn.ReLU()]
    return torch.nn.Sequential(*layers[:-1])


def _targets(labels: Sequence[str], classes: Sequence[str]) -> torch.Tensor:
    index = {label: i for i, label in enumerate(classes)}
    return torch.tensor([index[label] for label in labels], dtype=torch.long)


def _sample_weights(weights: Sequence[float] | None, x: torch.Tensor, y: torch.Tensor, n_labels: int,
                    balanced: bool) -> torch.Tensor:
    """Per-sample loss weights for texts ``x`` labelled ``y``, scaled to mean 1 (so ``lr`` and ``c`` mean
    the same whatever the weights)."""
    if len(x) != len(y) or not len(y):
        raise KindError(f"need as many labels as texts, and at least one: {len(x)} texts, {len(y)} labels")
    w = np.ones(len(y)) if weights is None else np.asarray(weights, dtype=np.float64)
    if w.shape != (len(y),) or not np.all(np.isfinite(w)) or np.any(w < 0) or w.sum() <= 0:
        raise KindError(f"weights must be {len(y)} finite non-negative numbers with a positive sum")
    if balanced:
        per_class = np.bincount(y.numpy(), weights=w, minlength=n_labels)
        present = per_class > 0
        w = w * (per_class[present].sum() / present.sum() / np.where(present, per_class, 1.0))[y.numpy()]
    return torch.from_numpy(w / w.mean()).float()

