"""``smollm2-lora``: a LoRA adapter (peft; r=8 on q_proj/v_proj by default) on a shared, frozen base model
(:mod:`kinds.base_models`: SmolLM2-135M-Instruct, or ``tiny-random`` in tests).

Prompts go through the base's chat template: persona and context become the system text, the prompt the
user turn; training puts the loss on the response tokens only (plus the end-of-turn token, so the model
learns to stop). ``fit`` starts a fresh adapter (seeded), ``partial_fit`` continues the current one.

Many adapters share one base in a process (champion, candidate, canary): each generator owns a named peft
adapter on the base's one ``PeftModel`` and activates it under the base's lock for every forward pass or
training step (a step, not a whole fit, holds the lock, so serving in the same process is not starved).
A generator that is garbage collected deletes its adapter.

Generation runs :mod:`kinds._decode` (a decode loop with a preallocated KV cache and the LoRA delta added
unmerged), not transformers' ``generate``, on ``GeneratorResources.threads`` intra-op torch threads (1 unless
bound otherwise: a serving pod binds ``FLYWHEEL_GENERATE_THREADS``, set in the thread that runs the forward
passes, per call: :func:`kinds._threads.torch_threads`); fits and ``perplexity`` run on one. On SmolLM2 it
serves (``precision="auto"``) 4-bit products in groups of 32 with a float16 head (:data:`kinds._decode.INT4`):
SmolLM2's layers ship as GGUF Q4_1, so the codes are the GGUF's own. Measured in one process
(bench/decode_speed.py, 6 prompts x 64 forced tokens, load 5-14): 28.2 CPU ms per token against 53.5 for the
float16 products served before and 37.4 for weight-only int8 (``precision="int8"``); on one trained adapter's
48 held-out answers the weighted score was 0.0804 against float32's 0.0816 (46 answers the same), where the
int8 path's per-row int8 head lost a quarter of it (bench/decode_quality.py; docs/benchmarks.md).
``precision="float16"`` serves the products of before. In float32 (tiny-random) its greedy tokens are
transformers'; in 16 or fewer bits a near tie can flip a later token. ``perplexity`` runs the decode loop's
forward pass too (the served products: a perplexity gate scores what is served); training stays on the peft
model (float32), ``_reference_perplexity`` is the peft model's.

The artifact is ``adapter.safetensors`` (the LoRA weights) + ``adapter.json`` (the LoRA configuration and the
base model's name and weights digest: an adapter is refused on another base), pinned by the manifest.
"""

from __future__ import annotations

import itertools
import json
import math
import queue
import random
import threading
import time
import warnings
import weakref
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Self

import torch
from safetensors.torch import load_file, save_file

from kinds._decode import INT4, INT8, Adapter, Weights, decode, lora_adapter, next_token_nll
from kinds._threads import one_torch_thread, torch_threads
from kinds.base_models import BaseModel
from kinds.exceptions import ArtifactError, KindError
from kinds.generation import Generation, GeneratorKind, GeneratorResources, Pair, Prompt, check_pairs

ADAPTER, ADAPTER_CONFIG = "adapter.safetensors", "adapter.json"
_names = itertools.count()
_peft_models: weakref.WeakKeyDictionary[BaseModel, Any] = weakref.WeakKeyDictionary()
_weights: weakref.WeakKeyDictionary[BaseModel, dict[str, Weights]] = weakref.WeakKeyDictionary()
PRECISIONS = ("auto", "int4", "float16", "int8")
"""``auto``: ``int4`` for a base converted from a GGUF Q4_1 file (SmolLM2), float16 for another base stored
in 16 bits, float32 otherwise; ``int4``: weight-only 4-bit products in groups of 32 (the layout SmolLM2's
layers ship in) and a float16 head (:data:`kinds._decode.INT4`); ``float16``: float16 products (the default
before issue 20's int4); ``int8``: weight-only int8 products (:data:`kinds._decode.INT8`)."""


_HALF = ("bfloat16", "float16")


def _config(base: BaseModel) -> dict[str, Any]:
    try:
        config = json.loads((base.directory / "config.json").read_text())
    except (OSError, ValueError):
        return {}
    return config if isinstance(config, dict) else {}


def _stored_dtype(base: BaseModel) -> str:
    """The dtype the base's weights are saved in (its config.json; the loaded model is float32 whatever)."""
    config = _config(base)
    return str(config.get("dtype") or config.get("torch_dtype") or "float32")


def _from_q4_1(base: BaseModel) -> bool:
    """Whether the base was converted from a GGUF file quantised to Q4_1 (its config.json says which file)."""
    quantization = _config(base).get("quantization_config") or {}
    return isinstance(quantization, dict) and str(quantization.get("gguf_file", "")).endswith(".Q4_1.gguf")


def _decode_dtype(base: BaseModel, precision: str = "auto") -> torch.dtype:
    """The decode loop's product dtype for ``precision`` (:data:`PRECISIONS`) on ``base``. ``auto``: 4-bit for
    a base converted from Q4_1 (SmolLM2: its layers' own layout; a real model's decode time is reading its
    weights), float16 for another stored in 16 bits, float32 for one stored in float32 (tiny-random: the
    decode loop gives transformers' tokens exactly)."""
    if precision == "auto":
        if _stored_dtype(base) not in _HALF:
            return torch.float32
        precision = "int4" if _from_q4_1(base) else "float16"
    return {"int8": INT8, "int4": INT4, "float16": torch.float16}[precision]


def _decode_weights(base: BaseModel, precision: str = "auto") -> Weights:
    """The base's decode weights for ``precision``, built once per base and precision (call with its lock
    held) and shared by every adapter on it."""
    built = _weights.setdefault(base, {})
    if precision not in built:  # "auto" and the precision it stands for share one copy
        dtype = _decode_dtype(base, precision)
        built[precision] = next((w for w in built.values() if w.dtype == dtype), None) or Weights(base.model, dtype)
    return built[precision]


class SmolLM2LoRA(GeneratorKind):
    """LoRA rank ``r`` (scale ``alpha``/``r``) on ``target_modules`` of the base ``base``; trained with
    AdamW (``lr``) for ``epochs`` epochs of ``batch_size`` pairs (``max_steps`` caps the steps; 0 = no cap),
    examples truncated to ``max_length`` tokens (the prompt's start is dropped first), each pair's loss
    scaled by its weight. ``seed`` fixes the adapter's initialisation and the shuffling."""

    kind = "smollm2-lora"

    def __init__(self, *, base: str = "smollm2-135m-instruct", r: int = 8, alpha: int = 16,
                 target_modules: Sequence[str] = ("q_proj", "v_proj"), lr: float = 1e-3, epochs: int = 1,
                 batch_size: int = 8, max_steps: int = 0, max_length: int = 256, seed: int = 0,
                 precision: str = "auto") -> None:
        if isinstance(target_modules, str) or not target_modules:
            raise KindError(f"target_modules must be a non-empty list of module names, got {target_modules!r}")
        for name, value in (("r", r), ("epochs", epochs), ("batch_size", batch_size), ("max_length", max_length)):
            if not (isinstance(value, int) and value >= 1):
                raise KindError(f"{name} must be a positive integer, got {value!r}")
        if not (isinstance(lr, int | float) and math.isfinite(lr) and lr > 0):
            raise KindError(f"lr must be a positive number, got {lr!r}")
        if precision not in PRECISIONS:
            raise KindError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
        extra = {"precision": precision} if precision != "auto" else {}  # earlier artifacts read as before
        super().__init__(base=base, r=r, alpha=alpha, target_modules=list(target_modules), lr=lr, epochs=epochs,
                         batch_size=batch_size, max_steps=max_steps, max_length=max_length, seed=seed, **extra)
        self._base: BaseModel | None = None
        self._threads: Callable[[], int] = lambda: 1  # the served forward passes' intra-op threads, per call
        self._timed: Callable[[int, int, float], None] = lambda threads, steps, seconds: None  # ... and their time
        self._adapter = ""  # the peft adapter name on the base, once fitted or loaded
        self._source = Path(f"<unsaved {self.kind}>")

    # -- collaborators -------------------------------------------------------------------------
    def bind(self, resources: GeneratorResources) -> Self:
        if resources.base.name != self.params["base"]:
            raise KindError(f"{self.kind} is configured for base {self.params['base']!r}, "
                            f"not {resources.base.name!r}")
        if self._base is not None and self._base is not resources.base and self._adapter:
            raise KindError("a fitted generator cannot move to another base; load its artifact there")
        self._base = resources.base
        self._threads, self._timed = resources.threads_now, resources.observed
        return self

    @property
    def base(self) -> BaseModel:
        if self._base is None:
            raise KindError(f"{self!r} is not bound to a base model: bind(GeneratorResources(base=...)) first")
        return self._base

    @property
    def fitted(self) -> bool:
        return bool(self._adapter)

    def clone(self) -> Self:
        twin = super().clone()
        twin._base, twin._threads, twin._timed = self._base, self._threads, self._timed
        return twin

    # -- learning ------------------------------------------------------------------------------
    def fit(self, pairs: Sequence[Pair]) -> Self:
        check_pairs(pairs)
        self._new_adapter()
        self._train(pairs)
        return self

    def partial_fit(self, pairs: Sequence[Pair]) -> Self:
        self._require_fitted()
        check_pairs(pairs)
        self._train(pairs)
        return self

    def _train(self, pairs: Sequence[Pair]) -> None:
        base, peft = self.base, self._peft()
        examples = [self._example(pair) for pair in pairs]
        mean_weight = sum(p.weight for p in pairs) / len(pairs)
        if mean_weight <= 0:
            raise KindError("the pairs' weights sum to zero")
        weights = [p.weight / mean_weight for p in pairs]
        batch, rng = self.params["batch_size"], random.Random(self.params["seed"])
        steps_per_epoch = math.ceil(len(examples) / batch)
        steps = steps_per_epoch * self.params["epochs"]
        if self.params["max_steps"]:
            steps = min(steps, self.params["max_steps"])
        trainable = self._trainable()
        optimiser = torch.optim.AdamW(trainable, lr=self.params["lr"], weight_decay=0.0)
        order: list[int] = []
        with one_torch_thread():
            for _ in range(steps):
                if not order:
                    order = list(range(len(examples)))
                    rng.shuffle(order)
                rows, order = order[:batch], order[batch:]
                ids, mask, labels = _right_padded([examples[i] for i in rows], base.tokenizer.pad_token_id)
                w = torch.tensor([weights[i] for i in rows])
                with base.lock, torch.enable_grad():
                    peft.set_adapter(self._adapter)
                    self._mark_trainable(trainable)
                    loss = (_response_nll_of(peft, ids, mask, labels) * w).mean()
                    optimiser.zero_grad()
                    torch.autograd.backward(loss)
                    optimiser.step()
                    for p in trainable:
                        p.requires_grad_(False)

    # -- inference -----------------------------------------------------------------------------
    def generate(self, prompts: Sequence[Prompt], *, max_new_tokens: int = 64, temperature: float = 0.0,
                 stop: Sequence[str] = ()) -> list[Generation]:
        if not prompts:
            return []
        started = time.perf_counter()
        tokenizer = self.base.tokenizer
        encoded = [self._prompt_ids(p) for p in prompts]
        ids, mask = _left_padded(encoded, tokenizer.pad_token_id)
        out = self._run_generate(ids, mask, max_new_tokens, temperature, stop, streamer=None)
        latency = (time.perf_counter() - started) * 1000
        return [self._finish(row[ids.shape[1]:].tolist(), len(e), max_new_tokens, stop, latency)
                for row, e in zip(out, encoded, strict=True)]

    def stream(self, prompt: Prompt, *, max_new_tokens: int = 64, temperature: float = 0.0,
               stop: Sequence[str] = ()) -> Iterator[str]:
        """Pieces of text as generated; text that could be the start of a stop string is held back until it
        is known not to be one. Closing the iterator early stops the generation."""
        ids, mask = _left_padded([self._prompt_ids(prompt)], self.base.tokenizer.pad_token_id)
        streamer = _TokenQueue()
        errors: list[BaseException] = []

        def run() -> None:
            try:
                self._run_generate(ids, mask, max_new_tokens, temperature, stop, streamer=streamer)
            except BaseException as exc:
                errors.append(exc)
            finally:
                streamer.end()

        worker = threading.Thread(target=run, name="smollm2-lora-stream", daemon=True)
        worker.start()
        return self._pieces(streamer, worker, errors, stop)

    def _pieces(self, streamer: _TokenQueue, worker: threading.Thread, errors: list[BaseException],
                stop: Sequence[str]) -> Iterator[str]:
        tokenizer, eos = self.base.tokenizer, self.base.tokenizer.eos_token_id
        tokens: list[int] = []
        sent = 0
        try:
            for token in streamer:
                if token == eos:
                    break
                tokens.append(token)
                text = tokenizer.decode(tokens, skip_special_tokens=True)
                cut = _first_stop(text, stop)
                if cut is not None:
                    if cut > sent:
                        yield text[sent:cut]
                    return
                safe = len(text) - _held_back(text, stop)
                if text.endswith("\ufffd"):  # an incomplete UTF-8 character: wait for its other bytes
                    safe = min(safe, len(text) - 1)
                if safe > sent:
                    yield text[sent:safe]
                    sent = safe
            text = tokenizer.decode(tokens, skip_special_tokens=True)
            if len(text) > sent:
                yield text[sent:]
        finally:
            streamer.cancel()
            worker.join()
            if errors:
                raise KindError(f"generation failed: {errors[0]}") from errors[0]

    def _run_generate(self, ids: torch.Tensor, mask: torch.Tensor, max_new_tokens: int, temperature: float,
                      stop: Sequence[str], streamer: _TokenQueue | None) -> torch.Tensor:
        if max_new_tokens < 1:
            raise KindError(f"max_new_tokens must be at least 1, got {max_new_tokens}")
        if temperature < 0 or not math.isfinite(temperature):
            raise KindError(f"temperature must be finite and >= 0, got {temperature}")
        base, tokenizer = self.base, self.base.tokenizer
        pad, eos = tokenizer.pad_token_id, tokenizer.eos_token_id

        def stopped(_row: int, new: Sequence[int]) -> bool:
            return _first_stop(tokenizer.decode(list(new), skip_special_tokens=True), stop) is not None

        def on_tokens(tokens: torch.Tensor) -> bool:
            if streamer is None:
                return True
            streamer.put(tokens)
            return not streamer.cancelled

        if streamer is not None:
            streamer.put(ids)
        threads = self._threads()
        with torch_threads(threads), base.lock, torch.inference_mode():
            started = time.perf_counter()
            weights, adapter = self._served_weights(), self._lora()
            out = decode(weights, adapter, ids, mask, max_new_tokens=max_new_tokens, temperature=temperature,
                         eos=eos, pad=pad, stopped=stopped if stop else None, on_tokens=on_tokens)
            self._timed(threads, out.shape[1] - ids.shape[1], time.perf_counter() - started)
            return out

    def _reference_generate(self, ids: torch.Tensor, mask: torch.Tensor, max_new_tokens: int, temperature: float,
                            stop: Sequence[str]) -> torch.Tensor:
        """transformers' ``generate`` on the peft model: what :func:`decode` replaced, kept as the reference
        its tests compare with."""
        base, tokenizer = self.base, self.base.tokenizer
        options: dict[str, Any] = {"max_new_tokens": max_new_tokens, "pad_token_id": tokenizer.pad_token_id,
                                   "eos_token_id": tokenizer.eos_token_id}
        if temperature > 0:
            options.update(do_sample=True, temperature=temperature, top_k=0, top_p=1.0)
        else:
            options.update(do_sample=False, temperature=None, top_k=None, top_p=None)
        if stop:
            options.update(stop_strings=list(stop), tokenizer=tokenizer)
        with base.lock, torch.inference_mode():
            model = self._active()
            out: torch.Tensor = model.generate(input_ids=ids, attention_mask=mask, **options)
        return out

    def _finish(self, new: list[int], prompt_tokens: int, max_new_tokens: int, stop: Sequence[str],
                latency_ms: float) -> Generation:
        tokenizer, eos = self.base.tokenizer, self.base.tokenizer.eos_token_id
        if eos in new:
            new = new[:new.index(eos) + 1]
        text = tokenizer.decode(new, skip_special_tokens=True)
        cut = _first_stop(text, stop)
        ended = cut is not None or (bool(new) and new[-1] == eos) or len(new) < max_new_tokens
        return Generation(text=text if cut is None else text[:cut], prompt_tokens=prompt_tokens,
                          completion_tokens=len(new), finish_reason="stop" if ended else "length",
                          latency_ms=latency_ms)

    def perplexity(self, pairs: Sequence[Pair]) -> float:
        check_pairs(pairs)
        return self._perplexity(pairs, lambda ids, mask, labels: next_token_nll(
            self._served_weights(), self._lora(), ids, mask, labels))

    def _reference_perplexity(self, pairs: Sequence[Pair]) -> float:
        """The perplexity from the peft model's forward pass in float32 (what :meth:`perplexity` computed
        before it ran the decode loop's products): kept as the reference its tests compare with."""
        return self._perplexity(pairs, lambda ids, mask, labels: _summed_nll(
            self._active()(input_ids=ids, attention_mask=mask).logits, labels))

    def _perplexity(self, pairs: Sequence[Pair],
                    summed_nll: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], tuple[float, int]]) -> float:
        """exp of the mean of ``summed_nll`` (summed NLL and token count of a right-padded batch, run with the
        base's lock held) over batches of ``batch_size`` pairs."""
        base = self.base
        examples = [self._example(pair) for pair in pairs]
        total, count = 0.0, 0
        with one_torch_thread():
            for start in range(0, len(examples), self.params["batch_size"]):
                ids, mask, labels = _right_padded(examples[start:start + self.params["batch_size"]],
                                                  base.tokenizer.pad_token_id)
                with base.lock, torch.inference_mode():
                    nll, n = summed_nll(ids, mask, labels)
                total, count = total + nll, count + n
        return math.exp(total / count)

    def _served_weights(self) -> Weights:
        """The decode weights this generator's ``precision`` runs on (call with the base's lock held)."""
        return _decode_weights(self.base, self.params.get("precision", "auto"))

    # -- tokens --------------------------------------------------------------------------------
    def _prompt_ids(self, prompt: Prompt) -> list[int]:
        system = "\n\n".join(part for part in (prompt.persona, prompt.context) if part)
        messages = ([{"role": "system", "content": system}] if system else []) + [
            {"role": "user", "content": prompt.prompt}]
        ids = self.base.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True,
                                                      return_dict=False)
        limit = self.params["max_length"] * 4  # generation: a generous cap on the prompt, its end kept
        return list(ids)[-limit:]

    def _example(self, pair: Pair) -> tuple[list[int], int]:
        """The token ids of prompt + response + end of turn, and where the response starts (the prompt's
        start is dropped to fit ``max_length``; the response keeps at least half of it)."""
        tokenizer, limit = self.base.tokenizer, self.params["max_length"]
        response = tokenizer(pair.response, add_special_tokens=False)["input_ids"][:limit // 2]
        response = [*response, tokenizer.eos_token_id]
        prompt = self._prompt_ids(pair.prompt)[-(limit - len(response)):]
        return prompt + response, len(prompt)

    # -- adapters ------------------------------------------------------------------------------
    def _lora(self) -> Adapter:
        if not self._adapter:
            return {}
        return lora_adapter(self._peft(), self._adapter)

    def _peft(self) -> Any:
        return _peft_models[self.base]

    def _active(self) -> Any:
        """The base's peft model with this generator's adapter active (the base alone when unfitted);
        call with the base's lock held."""
        base = self.base
        peft = _peft_models.get(base)
        if not self._adapter:
            if peft is None:
                return base.model
            return _Disabled(peft)
        assert peft is not None  # made with the adapter
        peft.set_adapter(self._adapter)
        return peft

    def _new_adapter(self, config: dict[str, Any] | None = None) -> None:
        from peft import LoraConfig, get_peft_model

        base = self.base
        lora = LoraConfig(r=self.params["r"], lora_alpha=self.params["alpha"], lora_dropout=0.0, bias="none",
                          target_modules=list(self.params["target_modules"]), task_type="CAUSAL_LM",
                          **(config or {}))
        name = f"g{next(_names)}"
        with base.lock, torch.random.fork_rng(), warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # peft 0.21 calls a deprecated transformers name
            torch.manual_seed(self.params["seed"])
            self._drop_adapter()
            peft = _peft_models.get(base)
            if peft is None:
                _peft_models[base] = get_peft_model(base.model, lora, adapter_name=name)
            else:
                peft.add_adapter(name, lora)
            for p in self._trainable_of(name):
                p.requires_grad_(False)
        self._adapter = name
        weakref.finalize(self, _delete_adapter, weakref.ref(base), name)

    def _drop_adapter(self) -> None:
        if self._adapter:
            _delete_adapter(weakref.ref(self.base), self._adapter)
            self._adapter = ""

    def _trainable_of(self, name: str) -> list[torch.nn.Parameter]:
        marker = f".{name}."
        return [p for n, p in _peft_models[self.base].named_parameters() if "lora_" in n and marker in n]

    def _trainable(self) -> list[torch.nn.Parameter]:
        params = self._trainable_of(self._adapter)
        if not params:
            raise KindError(f"no LoRA parameters matched target_modules {self.params['target_modules']}")
        return params

    @staticmethod
    def _mark_trainable(params: list[torch.nn.Parameter]) -> None:
        for p in params:
            p.requires_grad_(True)

    # -- artifacts -----------------------------------------------------------------------------
    def _save_files(self, directory: Path) -> list[str]:
        state = {n: p.detach().clone().contiguous() for n, p in self._adapter_state().items()}
        save_file(state, directory / ADAPTER)
        record = {"base": self.base.name, "base_digest": self.base.digest, "r": self.params["r"],
                  "alpha": self.params["alpha"], "target_modules": self.params["target_modules"]}
        (directory / ADAPTER_CONFIG).write_text(json.dumps(record, indent=2, sort_keys=True))
        return [ADAPTER, ADAPTER_CONFIG]

    def _adapter_state(self) -> dict[str, torch.Tensor]:
        """The adapter's tensors by names free of the adapter's process-local name."""
        marker = f".{self._adapter}."
        return {n.replace(marker, "."): p for n, p in _peft_models[self.base].named_parameters()
                if "lora_" in n and marker in n}

    def _load_files(self, directory: Path) -> None:
        try:
            record: dict[str, Any] = json.loads((directory / ADAPTER_CONFIG).read_text())
            state = load_file(directory / ADAPTER)
        except (OSError, ValueError) as exc:
            raise ArtifactError(directory, f"unreadable {self.kind} files: {exc}") from exc
        base = self.base
        if record.get("base") != base.name or record.get("base_digest") != base.digest:
            raise ArtifactError(directory, f"the adapter was trained on base {record.get('base')!r} "
                                f"({str(record.get('base_digest'))[:12]}), not {base.name!r} ({base.digest[:12]})")
        self._source = directory
        self._new_adapter()
        own = self._adapter_state()
        if set(own) != set(state) or any(own[n].shape != state[n].shape for n in own):
            self._drop_adapter()
            raise ArtifactError(directory / ADAPTER, f"does not fit params {self.params}")
        with base.lock, torch.no_grad():
            for n, tensor in state.items():
                own[n].copy_(tensor)


class _Disabled:
    """The peft model with every adapter disabled: an unfitted generator runs the bare base."""

    def __init__(self, peft: Any) -> None:
        self._peft = peft

    def __call__(self, **kwargs: Any) -> Any:
        with self._peft.disable_adapter():
            return self._peft(**kwargs)

    def generate(self, **kwargs: Any) -> Any:
        with self._peft.disable_adapter():
            return self._peft.generate(**kwargs)


def _delete_adapter(base_ref: weakref.ref[BaseModel], name: str) -> None:
    base = base_ref()
    peft = _peft_models.get(base) if base is not None else None
    if base is None or peft is None:
        return
    with base.lock, warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "adapter was active, now deleted": it is re-set below
        if name in peft.peft_config and len(peft.peft_config) > 1:
            active = peft.active_adapter
            peft.delete_adapter(name)
            if active != name and active in peft.peft_config:
                peft.set_adapter(active)


class _TokenQueue:
    """Hands generated token ids to another thread (the prompt, put first, is skipped); ``cancel`` stops
    the generation at its next step."""

    def __init__(self) -> None:
        self._queue: queue.Queue[int | None] = queue.Queue()
        self._cancelled = threading.Event()
        self._first = True

    def put(self, value: torch.Tensor) -> None:
        if self._first:  # the prompt comes first
            self._first = False
            return
        for token in value.reshape(-1).tolist():
            self._queue.put(int(token))

    def end(self) -> None:
        self._queue.put(None)

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()

    def cancel(self) -> None:
        self._cancelled.set()

    def __iter__(self) -> Iterator[int]:
        while (token := self._queue.get()) is not None:
            yield token


def _first_stop(text: str, stop: Sequence[str]) -> int | None:
    hits = [i for s in stop if s and (i := text.find(s)) >= 0]
    return min(hits) if hits else None


def _held_back(text: str, stop: Sequence[str]) -> int:
    """How many characters at the end of ``text`` could begin a stop string."""
    held = 0
    for s in stop:
        for k in range(min(len(s) - 1, len(text)), 0, -1):
            if text.endswith(s[:k]):
                held = max(held, k)
                break
    return held


def _left_padded(rows: Sequence[list[int]], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(r) for r in rows)
    ids = torch.tensor([[pad] * (width - len(r)) + r for r in rows], dtype=torch.long)
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows], dtype=torch.long)
    return ids, mask


def _right_padded(examples: Sequence[tuple[list[int], int]], pad: int
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """ids, attention mask and labels (-100 outside the response) of right-padded examples."""
    width = max(len(ids) for ids, _ in examples)
    ids = torch.tensor([r + [pad] * (width - len(r)) for r, _ in examples], dtype=torch.long)
    mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r, _ in examples], dtype=torch.long)
    labels = torch.tensor([[-100] * start + r[start:] + [-100] * (width - len(r)) for r, start in examples],
                          dtype=torch.long)
    return ids, mask, labels


def _token_nll(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token negative log-likelihood of the next token, and the mask of the tokens that count."""
    shifted, targets = logits[:, :-1].float(), labels[:, 1:]
    counted = targets != -100
    nll = torch.nn.functional.cross_entropy(shifted.transpose(1, 2), targets.clamp(min=0), reduction="none")
    return nll * counted, counted


def _response_nll(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean NLL over each example's response tokens (one value per example), from the logits at every position:
    the reference :func:`_response_nll_of` is tested against."""
    nll, counted = _token_nll(logits, labels)
    return nll.sum(dim=1) / counted.sum(dim=1).clamp(min=1)


def _response_nll_of(peft: Any, ids: torch.Tensor, mask: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """:func:`_response_nll` of the peft model's active adapter on a right-padded batch, the output layer applied
    at the positions that predict a response token only: the logits over the whole vocabulary at every prompt
    and padding position cost a training step ~30% of its CPU for nothing (4.4 -> 3.1 CPU s a step of 8
    SmolLM2 pairs, one thread; the losses equal to 1e-4)."""
    causal = peft.get_base_model()
    hidden = causal.get_decoder()(input_ids=ids, attention_mask=mask, use_cache=False).last_hidden_state
    targets = labels[:, 1:]
    counted = targets != -100
    rows, cols = counted.nonzero(as_tuple=True)
    logits = causal.get_output_embeddings()(hidden[rows, cols])  # position t predicts token t + 1
    nll = torch.nn.functional.cross_entropy(logits.float(), targets[rows, cols], reduction="none")
    summed = torch.zeros(ids.shape[0], dtype=nll.dtype).index_add(0, rows, nll)
    return summed / counted.sum(dim=1).clamp(min=1)


def _summed_nll(logits: torch.Tensor, labels: torch.Tensor) -> tuple[float, int]:
    nll, counted = _token_nll(logits, labels)
    return float(nll.sum()), int(counted.sum())

