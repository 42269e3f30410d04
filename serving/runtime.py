"""The model runtime: load -> verify -> warm -> swap. A :class:`Deployment` is an immutable snapshot; the
:class:`Runtime` holds one reference and replaces it with a single assignment, so a request reads it
once (``runtime.deployment``) and never takes a lock."""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import overload

from kinds.base import ModelKind, Probabilities, artifact_sha256
from kinds.catalog import load_model
from kinds.embeddings import Embedder
from kinds.exceptions import KindError
from kinds.generation import GeneratorKind
from kinds.minilm import MiniLMHead
from registry import ModelRegistry, RegistryError, TamperedArtifact
from registry.announce import ModelState, ServedVersion
from serving.adapters import is_generator, load_generator
from serving.exceptions import ChecksumMismatch, ModelLoadError, WrongTask
from serving.metrics import ServingMetrics
from tasks import Input

log = logging.getLogger(__name__)

WARMUP_TEXTS = ("warm up", "This was great, I loved it!", "Terrible. Never again.", "ok")
WARMUP_ROWS: tuple[Input, ...] = ({},)  # a tabular model: every feature absent (NaN), which every kind takes


@dataclass(frozen=True)
class LoadedModel:
    """A verified, warmed-up version ready to answer: a classifier (``predict_proba``) or a generator (an
    adapter on the pod's shared base model)."""

    served: ServedVersion
    model: ModelKind | GeneratorKind
    loaded_at: datetime
    load_ms: float

    @property
    def version(self) -> str:
        return self.served.version

    @property
    def classifier(self) -> ModelKind:
        """The model as a classifier, or :class:`WrongTask` (a generator answers ``/generate`` only)."""
        if isinstance(self.model, GeneratorKind):
            raise WrongTask(f"version {self.version} is a text generator ({self.model.kind}): "
                            "use /v1/models/{name}/generate")
        return self.model

    @property
    def generator(self) -> GeneratorKind:
        """The model as a generator, or :class:`WrongTask` (a classifier answers ``/predict`` only)."""
        if not isinstance(self.model, GeneratorKind):
            raise WrongTask(f"version {self.version} is a classifier ({self.model.kind}), not a text generator: "
                            "use /v1/models/{name}/predict")
        return self.model

    def predict_proba(self, inputs: Sequence[Input]) -> Probabilities:
        return self.classifier.predict_proba(inputs)

    def predict_proba_parts(self, inputs: Sequence[Input]) -> Iterator[tuple[list[int], Probabilities]]:
        return self.classifier.predict_proba_parts(inputs)


@dataclass(frozen=True)
class Fallback:
    """The announced champion ``version`` could not be loaded or verified (``detail`` says why): the pod
    serves another version in its place."""

    version: str
    detail: str


@dataclass(frozen=True)
class Deployment:
    """What this pod serves right now. ``shadow`` sees a copy of every request, never answers it.
    ``fallback`` is set when ``champion`` stands in for an announced champion that failed to load."""

    champion: LoadedModel | None = None
    canary: LoadedModel | None = None
    canary_traffic: float = 0.0
    shadow: LoadedModel | None = None
    generation: int = 0
    fallback: Fallback | None = None

    @property
    def ready(self) -> bool:
        return self.champion is not None


@dataclass(frozen=True)
class LoadFailure:
    version: str
    detail: str
    at: datetime


@dataclass(frozen=True)
class Desired:
    """The versions a ModelState asks for. Shadow convention: a ``canary`` event with ``traffic == 0``
    makes the version a shadow (it runs on copies of requests; its predictions are published with
    ``variant="shadow"``); any traffic > 0 makes it a canary. ``fallbacks``: earlier champions, newest
    first, for a pod with no model whose announced champion fails to load."""

    champion: ServedVersion | None
    canary: ServedVersion | None
    canary_traffic: float
    shadow: ServedVersion | None
    fallbacks: tuple[ServedVersion, ...] = ()

    @classmethod
    def of(cls, state: ModelState, fallbacks: tuple[ServedVersion, ...] = ()) -> Desired:
        fallbacks = tuple(v for v in fallbacks if state.champion is None or v.version != state.champion.version)
        if state.canary is not None and state.canary_traffic <= 0.0:
            return cls(state.champion, None, 0.0, state.canary, fallbacks)
        return cls(state.champion, state.canary, state.canary_traffic if state.canary else 0.0, None, fallbacks)


class ModelLoader:
    """Loads one announced version: the registry's sha256 and the event's must agree, ``registry.fetch``
    checks the bytes against both (manifest digest and per-file hashes), then a warm-up predict.
    ``embedder``, when given, is the one every loaded ``minilm-head`` embeds through (the pod's cache).
    A generator's base model is loaded once per process from ``data_dir`` (:mod:`serving.generation`):
    a new version loads only its adapter onto it; its forward passes run on ``generate_threads`` intra-op
    torch threads (:func:`serving.adapters.served_threads`)."""

    def __init__(self, registry: ModelRegistry, embedder: Embedder | None = None,
                 warmup: Sequence[Input] = WARMUP_TEXTS, data_dir: Path = Path(".flywheel"),
                 generate_threads: int | Callable[[], int] = 1) -> None:
        self.registry = registry
        self.embedder = embedder
        self.warmup = list(warmup)
        self.data_dir = data_dir
        self.generate_threads = generate_threads

    def load(self, served: ServedVersion) -> LoadedModel:
        started = time.perf_counter()
        try:
            info = self.registry.get(served.version)
            if info.sha256 != served.sha256:
                raise ChecksumMismatch(served.version, f"announced sha256 {served.sha256[:12]} but the registry "
                                                       f"holds {info.sha256[:12]}")
            directory = self.registry.fetch(info.version)
            actual = artifact_sha256(directory)
            if actual != served.sha256:
                raise ChecksumMismatch(served.version, f"artifact sha256 {actual[:12]} != announced "
                                                       f"{served.sha256[:12]}")
            model: ModelKind | GeneratorKind
            if is_generator(directory):
                model = load_generator(directory, self.data_dir, self.generate_threads)
            else:
                model = load_model(directory)
                if self.embedder is not None and isinstance(model, MiniLMHead):
                    model.use(self.embedder)
                model.predict_proba(self.warmup)
        except TamperedArtifact as exc:  # the file's name, never the pod's absolute paths
            raise ChecksumMismatch(served.version, f"{exc.path.name}: {exc.detail}") from exc
        except (RegistryError, KindError, OSError) as exc:
            raise ModelLoadError(served.version, f"{type(exc).__name__}: {exc}") from exc
        return LoadedModel(served, model, datetime.now(UTC), (time.perf_counter() - started) * 1000)


class Runtime:
    """Holds the live :class:`Deployment`; ``apply`` loads what a desired state needs and swaps it in.
    Only the watcher thread calls ``apply``; requests read ``deployment``."""

    def __init__(self, loader: ModelLoader | Callable[[ServedVersion], LoadedModel],
                 metrics: ServingMetrics, cache_size: int = 4) -> None:
        self._load = loader.load if isinstance(loader, ModelLoader) else loader
        self.metrics = metrics
        self.deployment = Deployment()
        self.last_error: LoadFailure | None = None
        self.history = ChampionHistory()  # champion version per generation (for tests and audits)
        self._cache: OrderedDict[tuple[str, str], LoadedModel] = OrderedDict()
        self._cache_size = cache_size
        self._changed = threading.Condition()

    def apply(self, desired: Desired) -> bool:
        """Load every version ``desired`` names and swap them in at once, and return True. On a failure
        keep the old deployment, record the error and return False (the caller tries again later). A
        champion that fails to load or verify is the exception: the pod keeps its current champion or,
        having none, falls back to the newest of ``desired.fallbacks`` that loads, and marks the
        deployment's ``fallback`` (still returning False). A desired state without a champion keeps the
        current champion (a pod never drops its last model)."""
        current = self.deployment
        failed: ModelLoadError | None = None
        try:
            champion = self._get(desired.champion) if desired.champion else current.champion
        except ModelLoadError as exc:
            failed = exc
            self._record(exc)
            champion = current.champion or self._first_loadable(desired.fallbacks)
        try:
            canary = self._get(desired.canary) if desired.canary else None
            shadow = self._get(desired.shadow) if desired.shadow else None
        except ModelLoadError as exc:
            self._record(exc)
            return False
        if desired.champion is None and current.champion is not None:
            log.warning("the desired state has no champion; keeping %s", current.champion.version)
        fallback = None if failed is None else Fallback(failed.version, failed.detail)
        new = Deployment(champion, canary, desired.canary_traffic if canary else 0.0, shadow, current.generation + 1,
                         fallback)
        if failed is not None and (champion is None or _same(new, current)):
            return False
        with self._changed:
            self.history.append(new.champion.version if new.champion else None)
            self.deployment = new  # the swap: one reference assignment
            if failed is None:
                self.last_error = None
            self._changed.notify_all()
        self.metrics.swaps.inc()
        self.metrics.ready.set(1 if new.ready else 0)
        self.metrics.champion_fallback.set(0 if fallback is None else 1)
        self.metrics.canary_traffic.set(new.canary_traffic)
        log.info("deployment %d: champion %s, canary %s (%.0f%%), shadow %s", new.generation,
                 _v(new.champion), _v(new.canary), new.canary_traffic * 100, _v(new.shadow))
        if fallback is not None and new.champion is not None:
            log.error("serving version %s in place of the announced champion %s", new.champion.version,
                      fallback.version)
        return failed is None

    def _record(self, exc: ModelLoadError) -> None:
        self.metrics.load_failures.labels(exc.code).inc()
        log.error("keeping the current deployment: %s", exc)
        with self._changed:
            self.last_error = LoadFailure(exc.version, exc.detail, datetime.now(UTC))
            self._changed.notify_all()

    def _first_loadable(self, candidates: Sequence[ServedVersion]) -> LoadedModel | None:
        for served in candidates:
            try:
                return self._get(served)
            except ModelLoadError as exc:
                self.metrics.load_failures.labels(exc.code).inc()
                log.error("fallback %s does not load either: %s", served.version, exc)
        return None

    def _get(self, served: ServedVersion) -> LoadedModel:
        key = (served.version, served.sha256)
        found = self._cache.get(key)
        if found is None:
            found = self._load(served)
            self.metrics.load_seconds.observe(found.load_ms / 1000)
            self._cache[key] = found
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        self._cache.move_to_end(key)
        return found

    def wait_for(self, check: Callable[[Deployment, LoadFailure | None], bool], timeout: float) -> bool:
        """Block until ``check(deployment, last_error)`` holds (True) or ``timeout`` passes (False)."""
        with self._changed:
            return self._changed.wait_for(lambda: check(self.deployment, self.last_error), timeout)

    def wait_live(self, version: str, timeout: float = 30.0) -> bool:
        """Until ``version`` is the champion."""
        return self.wait_for(lambda d, _e: d.champion is not None and d.champion.version == version, timeout)


class ChampionHistory:
    """The champion version of each generation, indexed by ``Deployment.generation`` (``history[g]``,
    ``history[a:b]``), for tests and audits. Bounded: only the newest ``maxlen`` generations are kept (a
    long-lived pod swaps without end); a slice leaves out the ones dropped, ``len`` counts the kept ones."""

    def __init__(self, maxlen: int = 1000) -> None:
        self._kept: deque[str | None] = deque([None], maxlen=maxlen)  # generation 0: nothing loaded
        self._first = 0  # generation of _kept[0]

    def append(self, version: str | None) -> None:
        if len(self._kept) == self._kept.maxlen:
            self._first += 1
        self._kept.append(version)

    def __len__(self) -> int:
        return len(self._kept)

    def __iter__(self) -> Iterator[str | None]:
        return iter(self._kept)

    @overload
    def __getitem__(self, index: int) -> str | None: ...

    @overload
    def __getitem__(self, index: slice) -> list[str | None]: ...

    def __getitem__(self, index: int | slice) -> str | list[str | None] | None:
        end = self._first + len(self._kept)
        if isinstance(index, slice):
            return [self._kept[g - self._first] for g in range(*index.indices(end)) if g >= self._first]
        generation = index + end if index < 0 else index
        if not self._first <= generation < end:
            raise IndexError(f"generation {index} is not kept (kept: {self._first}..{end - 1})")
        return self._kept[generation - self._first]


def _same(new: Deployment, old: Deployment) -> bool:
    """The same models and fallback: swapping ``new`` in would change nothing."""
    return (new.champion is old.champion and new.canary is old.canary and new.shadow is old.shadow
            and new.canary_traffic == old.canary_traffic
            and (new.fallback and new.fallback.version) == (old.fallback and old.fallback.version))


def _v(model: LoadedModel | None) -> str:
    return "-" if model is None else f"{model.version} ({model.served.semver})"
