"""Near-duplicate signatures: normalisation, exact and near duplicates, LSH bands, determinism."""

from __future__ import annotations

from curation import MinHasher, normalise
from curation.config import DuplicatesConfig
from curation.minhash import text_hash

HASHER = MinHasher(DuplicatesConfig())


def test_normalise_folds_case_punctuation_and_spacing() -> None:
    assert normalise("  What a LOVELY   film!!! ") == "what a lovely film"
    assert normalise("\uff26\uff55\uff4c\uff4c width, ok?") == normalise("full width ok")  # NFKC folds full-width
    assert normalise("😀😀") == "😀😀"  # no letters: kept, so emoji-only texts do not all collide
    assert text_hash(normalise("Great movie.")) == text_hash(normalise("great   MOVIE"))


def test_exact_duplicates_after_normalisation_have_equal_signatures() -> None:
    a, b = HASHER.signature("What a lovely film!"), HASHER.signature("what a lovely film")
    assert a == b and HASHER.near(a, b)


def test_a_typo_or_an_added_word_is_a_near_duplicate_and_shares_a_band() -> None:
    base = HASHER.signature("The gorgeously elaborate continuation of the trilogy is so huge that words fail")
    for variant in ("The gorgeously elaborate continuation of the trilogy is so huge that word fail",
                    "The gorgeously elaborate continuation of the trilogy is so huge that words fail!!",
                    "The gorgeously elaborate continuation of the trilogy is so very huge that words fail"):
        sig = HASHER.signature(variant)
        assert HASHER.near(base, sig), (variant, HASHER.similarity(base.minhash, sig.minhash))
        assert set(base.bands) & set(sig.bands)


def test_different_sentences_are_not_near_duplicates() -> None:
    a = HASHER.signature("The Rock is destined to be the new Conan")
    b = HASHER.signature("A very slow-moving, aimless movie about a drifting young man")
    c = HASHER.signature("The Rock is destined to be a bore")
    assert not HASHER.near(a, b) and not HASHER.near(a, c)
    assert HASHER.similarity(a.minhash, b.minhash) < 0.2


def test_signatures_are_deterministic_and_fit_postgres_columns() -> None:
    again = MinHasher(DuplicatesConfig())
    text = "Same text, another process"
    assert again.signature(text) == HASHER.signature(text)
    sig = HASHER.signature(text)
    assert len(sig.minhash) == 64 and all(0 <= v < 2**31 for v in sig.minhash)  # packed as int32
    assert len(sig.bands) == 16 and all(-(2**63) <= b < 2**63 for b in sig.bands)  # bigint[]
    assert len({b >> 48 for b in sig.bands}) == 16  # the band index is part of the key
    other = MinHasher(DuplicatesConfig(seed=2)).signature(text)
    assert other.minhash != sig.minhash


def test_very_short_texts_get_a_signature() -> None:
    sig = HASHER.signature("ok")
    assert len(sig.minhash) == 64
    assert HASHER.near(sig, HASHER.signature("OK!"))
