"""Near-duplicate signatures: MinHash over character shingles of the normalised text, banded for
locality-sensitive hashing (LSH).

Feedback texts are short (a sentence), so the features are character ``shingle_size``-grams of the
normalised text rather than word shingles: a typo, an emoji or a changed word keeps most shingles. Two
texts whose signatures agree on a share ``>= jaccard`` of positions are near-duplicates (that share
estimates their Jaccard similarity). With ``bands`` bands of ``num_perm / bands`` rows, a pair of
Jaccard ``s`` shares at least one band with probability ``1 - (1 - s**rows)**bands`` (64/16: 0.988 at
s = 0.7, 0.9998 at s = 0.8, 0.025 at s = 0.2), so candidates come from an index on the band keys and
only they are compared. Everything is deterministic across processes (crc32 + seeded permutations).
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
import zlib
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from curation.config import DuplicatesConfig

_PRIME = (1 << 31) - 1  # Mersenne prime: every permuted value fits a signed int32 (stored packed)
_NON_WORD = re.compile(r"[\W_]+", re.UNICODE)
_BAND_BITS = 48


def normalise(text: str) -> str:
    """Case-folded, NFKC, punctuation and runs of whitespace as one space. A text with no letters or
    digits (emoji only) keeps its stripped NFKC form, so such texts do not all collide."""
    folded = unicodedata.normalize("NFKC", text).casefold()
    words = _NON_WORD.sub(" ", folded).strip()
    return words or folded.strip()


def text_hash(normalised: str) -> bytes:
    """16-byte key of a normalised text: equal keys = exact duplicates."""
    return hashlib.md5(normalised.encode("utf-8", "surrogatepass"), usedforsecurity=False).digest()


@dataclass(frozen=True)
class Signature:
    text_hash: bytes
    minhash: tuple[int, ...]
    bands: tuple[int, ...]


class MinHasher:
    """Signatures and similarity under one ``DuplicatesConfig`` (its parameters are the whole state)."""

    def __init__(self, config: DuplicatesConfig) -> None:
        self.config = config
        self.rows = config.num_perm // config.bands
        rng = np.random.default_rng(config.seed)
        self._a = rng.integers(1, _PRIME, size=config.num_perm, dtype=np.uint64)
        self._b = rng.integers(0, _PRIME, size=config.num_perm, dtype=np.uint64)

    def shingles(self, normalised: str) -> set[str]:
        k = self.config.shingle_size
        padded = f" {normalised} "
        if len(padded) <= k:
            return {padded}
        return {padded[i:i + k] for i in range(len(padded) - k + 1)}

    def minhash(self, normalised: str) -> npt.NDArray[np.int64]:
        hashed = np.fromiter((zlib.crc32(s.encode("utf-8", "surrogatepass")) for s in self.shingles(normalised)),
                             dtype=np.uint64)
        # (a * x + b) mod p for every permutation (rows) and shingle (columns); a < 2**31, x < 2**32: no overflow
        permuted = (self._a[:, None] * hashed[None, :] + self._b[:, None]) % np.uint64(_PRIME)
        signature: npt.NDArray[np.int64] = permuted.min(axis=1).astype(np.int64)
        return signature

    def band_keys(self, minhash: npt.NDArray[np.int64]) -> tuple[int, ...]:
        """One signed 64-bit key per band: band index in the high bits, a 48-bit hash of its rows below."""
        keys = []
        for band in range(self.config.bands):
            chunk = minhash[band * self.rows:(band + 1) * self.rows].astype("<i8").tobytes()
            digest = int.from_bytes(hashlib.blake2b(chunk, digest_size=_BAND_BITS // 8).digest(), "big")
            keys.append((band << _BAND_BITS) | digest)
        return tuple(keys)

    def signature(self, text: str) -> Signature:
        norm = normalise(text)
        mh = self.minhash(norm)
        return Signature(text_hash(norm), tuple(int(v) for v in mh), self.band_keys(mh))

    def similarity(self, a: tuple[int, ...] | list[int], b: tuple[int, ...] | list[int]) -> float:
        """Estimated Jaccard similarity: the share of equal signature positions."""
        if len(a) != len(b) or not a:
            return 0.0
        return float(np.mean(np.asarray(a) == np.asarray(b)))

    def near(self, a: Signature, b: Signature) -> bool:
        return a.text_hash == b.text_hash or self.similarity(a.minhash, b.minhash) >= self.config.jaccard
