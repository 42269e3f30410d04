"""The torch side of ``minilm-head``: building and training the head's layers. Imported only to fit, so
that a process that only predicts (a serving pod) never imports torch or scikit-learn; predicting runs
on the layers as numpy arrays (:func:`layers_of`, ``kinds.minilm``)."""

from __future__ import annotations

import itertools
import logging
import math
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression

from kinds._threads import one_blas_thread, one_torch_thread
from kinds.exceptions import KindError

Layer = tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]  # (weight (out, in), bias (out,))
LBFGS_MAX_ITER = 2000
log = logging.getLogger(__name__)


def new_net(dim: int, hidden: int, n_labels: int, generator: torch.Generator) -> torch.nn.Sequential:
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


def net_of(layers: Sequence[Layer]) -> torch.nn.Sequential:
    """A trainable net holding (copies of) ``layers``: to warm-start a head that was loaded."""
    dims = [layers[0][0].shape[1], *(w.shape[0] for w, _ in layers)]
    net = new_net(dims[0], dims[1] if len(layers) == 2 else 0, dims[-1], torch.Generator())
    linears = [m for m in net if isinstance(m, torch.nn.Linear)]
    with torch.no_grad():
        for linear, (weight, bias) in zip(linears, layers, strict=True):
            linear.weight.copy_(torch.from_numpy(np.array(weight, dtype=np.float32)))
            linear.bias.copy_(torch.from_numpy(np.array(bias, dtype=np.float32)))
    return net


def layers_of(net: torch.nn.Sequential) -> list[Layer]:
    """The net's Linear layers as float32 numpy (copies: training the net later leaves them as they are)."""
    return [(m.weight.detach().numpy().astype(np.float32, copy=True),
             m.bias.detach().numpy().astype(np.float32, copy=True)) for m in net if isinstance(m, torch.nn.Linear)]


def train(net: torch.nn.Sequential, x: npt.NDArray[np.float32], y: torch.Tensor, n_labels: int,
          weights: Sequence[float] | None, params: dict[str, Any], generator: torch.Generator) -> None:
    """``params["epochs"]`` epochs of minibatch AdamW on the (weighted) cross-entropy, in place."""
    xs = torch.from_numpy(x)
    w = sample_weights(weights, xs, y, n_labels, params["balanced"])
    batch = params["batch_size"]
    optimiser = torch.optim.AdamW(net.parameters(), lr=params["lr"], weight_decay=params["weight_decay"])
    with one_torch_thread(), torch.enable_grad():
        for _ in range(params["epochs"]):
            order = torch.randperm(len(y), generator=generator)
            for start in range(0, len(y), batch):
                rows = order[start:start + batch]
                losses = torch.nn.functional.cross_entropy(net(xs[rows]), y[rows], reduction="none")
                optimiser.zero_grad()
                torch.autograd.backward((losses * w[rows]).mean())
                optimiser.step()


def solve(net: torch.nn.Sequential, x: npt.NDArray[np.float32], y: torch.Tensor, n_labels: int,
          weights: Sequence[float] | None, params: dict[str, Any]) -> None:
    """The regularised optimum (solver ``lbfgs``), written into the linear ``net``."""
    w = sample_weights(weights, torch.from_numpy(x), y, n_labels, params["balanced"])
    model = LogisticRegression(C=params["c"], max_iter=LBFGS_MAX_ITER, tol=1e-6)
    with warnings.catch_warnings(record=True) as caught, one_blas_thread():
        warnings.simplefilter("always", ConvergenceWarning)
        model.fit(x, y.numpy(), sample_weight=w.numpy())
    if any(issubclass(c.category, ConvergenceWarning) for c in caught):
        log.warning("minilm-head lbfgs did not converge in %d iterations", LBFGS_MAX_ITER)
    coef, bias = model.coef_, model.intercept_  # rows in the order of model.classes_ = 0..n_labels-1
    if n_labels == 2:  # sklearn's single logit z for label 1 is a softmax over (-z/2, z/2)
        coef, bias = np.vstack([-coef / 2, coef / 2]), np.concatenate([-bias / 2, bias / 2])
    linear = net[0]
    assert isinstance(linear, torch.nn.Linear) and list(model.classes_) == list(range(n_labels))
    with torch.no_grad():
        linear.weight.copy_(torch.from_numpy(coef).float())
        linear.bias.copy_(torch.from_numpy(bias).float())


def targets(labels: Sequence[str], classes: Sequence[str]) -> torch.Tensor:
    index = {label: i for i, label in enumerate(classes)}
    return torch.tensor([index[label] for label in labels], dtype=torch.long)


def sample_weights(weights: Sequence[float] | None, x: torch.Tensor, y: torch.Tensor, n_labels: int,
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
