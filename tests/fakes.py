"""Fakes for the seams production code exposes: never imported by production code."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence

import numpy as np

from kinds.encoder import Vectors


class HashingEncoder:
    """The fake encoder: hashed bag of lower-cased words, signed, L2-normalised. Deterministic and
    instant; ``texts_encoded`` counts every text it was asked to encode (cache tests count misses)."""

    def __init__(self, dim: int = 384, *, salt: str = "") -> None:
        self._dim, self.salt, self.texts_encoded = dim, salt, 0

    @property
    def encoder_id(self) -> str:
        return f"hashing:{self._dim}:{self.salt}"

    @property
    def dim(self) -> int:
        return self._dim

    def encode(self, texts: Sequence[str]) -> Vectors:
        self.texts_encoded += len(texts)
        out = np.zeros((len(texts), self._dim), dtype=np.float32)
        for row, text in enumerate(texts):
            for word in re.findall(r"\w+", text.lower()) or [""]:
                h = int.from_bytes(hashlib.sha256(f"{self.salt}\0{word}".encode()).digest()[:8], "little")
                out[row, h % self._dim] += 1.0 if h >> 63 else -1.0
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        out[:, :1] += norms == 0  # a text whose words cancel out: a fixed unit vector, never NaN
        normalised: Vectors = out / np.linalg.norm(out, axis=1, keepdims=True)
        return normalised
