"""The contract of a text generator (task ``text-generation``): what it is asked (:class:`Prompt`), what it
learns from and is compared with (:class:`Pair`), what comes out (:class:`Generation`), and the kind ABC
(:class:`GeneratorKind`).

A generator is a small trainable part (a LoRA adapter) on a large frozen base model. The base is a
collaborator, not configuration: it is loaded once per process (:mod:`kinds.base_models`) and bound with
:meth:`GeneratorKind.bind`; a new version swaps only the adapter. The constructor's parameters are the whole
configuration (river's habit), so ``kind`` + ``params`` rebuild an unfitted generator.

Artifacts follow :mod:`kinds.base`: safe formats only (safetensors + JSON) and a manifest pinning every
file's sha256 (``labels`` is always empty for a generator); :func:`kinds.catalog.load_model` refuses a
changed byte.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Self

from kinds.base import FORMAT_VERSION, MANIFEST, _sha256, artifact_sha256
from kinds.exceptions import KindError, NotFitted

if TYPE_CHECKING:
    from kinds.base_models import BaseModel

FinishReason = Literal["stop", "length"]


@dataclass(frozen=True, slots=True)
class Prompt:
    """What a generator is asked: the player's/user's ``prompt``, and optional ``context`` (e.g. the game
    state) and ``persona`` (e.g. the NPC), both given to the model as system text."""

    prompt: str
    context: str | None = None
    persona: str | None = None


@dataclass(frozen=True, slots=True)
class Pair:
    """A training/eval example: a prompt and the response to learn (or to compare with); ``weight`` scales
    its loss (annotator trust, replay down-weighting)."""

    prompt: Prompt
    response: str
    weight: float = 1.0


@dataclass(frozen=True, slots=True)
class Generation:
    """What came out of one prompt: the ``text`` (stop string excluded), token counts, why it ended
    (``stop``: end of turn or a stop string; ``length``: ``max_new_tokens`` reached) and wall time."""

    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str  # "stop" | "length"
    latency_ms: float


@dataclass(frozen=True)
class GeneratorResources:
    """The shared collaborators a generator binds to: ``base``, the loaded base model (one per process), and
    ``threads``, the intra-op torch threads its served forward passes (``generate``, ``stream``) run on: a
    count, or a function asked at every call (:class:`kinds._threads.SpareCores`: fewer when other
    processes hold the cores). ``threads`` is how the process runs the model, not the model's
    configuration (it is in no artifact): 1 by default (training and the trainer's gates: a fit keeps one
    core for the pods and the broker beside it); a serving pod passes ``FLYWHEEL_GENERATE_THREADS``
    (:func:`serving.adapters.served_threads`, docs/serving.md)."""

    base: BaseModel
    threads: int | Callable[[], int] = 1

    def __post_init__(self) -> None:
        if not callable(self.threads) and not (isinstance(self.threads, int) and self.threads >= 1):
            raise KindError(f"threads must be a positive integer or a function, got {self.threads!r}")

    def threads_now(self) -> int:
        """The thread count for the next call."""
        return self.threads() if callable(self.threads) else self.threads

    def observed(self, threads: int, steps: int, seconds: float) -> None:
        """A served call ran ``steps`` forward passes on ``threads`` threads in ``seconds``: told to ``threads``
        when it learns from it (:meth:`kinds._threads.SpareCores.observe`)."""
        observe = getattr(self.threads, "observe", None)
        if observe is not None:
            observe(threads, steps, seconds)


class GeneratorKind(ABC):
    """A text generator trained on :class:`Pair` s. ``fit`` starts a fresh adapter; ``partial_fit``
    continues the current one (incremental retraining: new pairs plus whatever replay the caller adds)."""

    kind: ClassVar[str]
    tasks: ClassVar[frozenset[str]] = frozenset({"text-generation"})
    labels: tuple[str, ...] = ()  # the manifest's labels: none for a generator

    def __init__(self, **params: Any) -> None:
        self.params: dict[str, Any] = dict(params)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in sorted(self.params.items()))
        return f"{type(self).__name__}({args})"

    def clone(self) -> Self:
        """The same configuration, unfitted (unbound)."""
        return type(self)(**self.params)

    @abstractmethod
    def bind(self, resources: GeneratorResources) -> Self:
        """Use the shared base model of ``resources`` (refused if it is not the base the params name)."""

    @property
    @abstractmethod
    def fitted(self) -> bool:
        """Whether an adapter exists (fitted or loaded)."""

    # -- learning ------------------------------------------------------------------------------
    @abstractmethod
    def fit(self, pairs: Sequence[Pair]) -> Self:
        """Train a fresh adapter on ``pairs``."""

    @abstractmethod
    def partial_fit(self, pairs: Sequence[Pair]) -> Self:
        """Continue training the current adapter on ``pairs`` (:class:`NotFitted` if there is none)."""

    # -- inference -----------------------------------------------------------------------------
    @abstractmethod
    def generate(self, prompts: Sequence[Prompt], *, max_new_tokens: int = 64, temperature: float = 0.0,
                 stop: Sequence[str] = ()) -> list[Generation]:
        """One :class:`Generation` per prompt, in order; ``temperature`` 0 is greedy (deterministic)."""

    @abstractmethod
    def stream(self, prompt: Prompt, *, max_new_tokens: int = 64, temperature: float = 0.0,
               stop: Sequence[str] = ()) -> Iterator[str]:
        """The text of one generation in pieces, as they are generated (joined: ``generate``'s text)."""

    @abstractmethod
    def perplexity(self, pairs: Sequence[Pair]) -> float:
        """exp of the mean negative log-likelihood per response token, given the prompts."""

    # -- artifacts -----------------------------------------------------------------------------
    @abstractmethod
    def _save_files(self, directory: Path) -> list[str]:
        """Write the adapter into ``directory``; return the file names written."""

    @abstractmethod
    def _load_files(self, directory: Path) -> None:
        """Restore the adapter written by ``_save_files`` onto the bound base."""

    def save(self, directory: Path) -> dict[str, Any]:
        """Write the adapter and its manifest (the format of :mod:`kinds.base`); return the manifest with
        an ``sha256`` of its own."""
        self._require_fitted()
        directory.mkdir(parents=True, exist_ok=True)
        files = self._save_files(directory)
        manifest: dict[str, Any] = {
            "format_version": FORMAT_VERSION, "kind": self.kind, "params": self.params, "labels": [],
            "files": {name: _sha256(directory / name) for name in sorted(files)},
        }
        (directory / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True))
        return {**manifest, "sha256": artifact_sha256(directory)}

    def _require_fitted(self) -> None:
        if not self.fitted:
            raise NotFitted(f"{self!r} has no adapter (fit or load one first)")


def check_pairs(pairs: Sequence[Pair]) -> None:
    """:class:`KindError` unless ``pairs`` is non-empty with non-empty responses and usable weights."""
    if not pairs:
        raise KindError("need at least one pair to train")
    for i, pair in enumerate(pairs):
        if not pair.response.strip():
            raise KindError(f"pair {i}: empty response")
        if not pair.prompt.prompt.strip():
            raise KindError(f"pair {i}: empty prompt")
        if not (pair.weight >= 0 and pair.weight < float("inf")):
            raise KindError(f"pair {i}: weight must be finite and non-negative, got {pair.weight!r}")
