"""End to end on the real SmolLM2-135M-Instruct (slow: the base is converted from the GGUF on first use,
~70 s, into $FLYWHEEL_DATA_DIR or a directory of the test session, once, then LoRA steps of ~10 s each on a busy core):
a LoRA adapter fitted on 40 chatterbot pairs of one category lowers the perplexity of held-out pairs of
that category, and answers in a few tokens."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from kinds import BaseModel, GeneratorResources, SmolLM2LoRA, load_base
from trainer.dialogue_data import chatterbot_pairs


@pytest.fixture(scope="module")
def smollm2(tmp_path_factory: pytest.TempPathFactory) -> BaseModel:
    """The real base, converted once per test session: into $FLYWHEEL_DATA_DIR when set, else into a directory
    of this session that every xdist worker shares (the second worker to ask waits for the first's conversion)."""
    from filelock import FileLock

    configured = os.environ.get("FLYWHEEL_DATA_DIR")
    if configured:
        return load_base("smollm2-135m-instruct", Path(configured))
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # this session's directory, above each worker's own
    with FileLock(root / "smollm2-data.lock"):
        return load_base("smollm2-135m-instruct", root / "smollm2-data")


@pytest.mark.slow
def test_lora_on_40_pairs_lowers_held_out_perplexity(smollm2: BaseModel) -> None:
    pairs = [p.pair for p in chatterbot_pairs() if p.topic in ("emotion", "psychology")]
    random.Random(0).shuffle(pairs)
    train, held_out = pairs[:40], pairs[40:56]
    base = smollm2
    model = SmolLM2LoRA(epochs=2, lr=1e-3).bind(GeneratorResources(base=base))
    before = model.perplexity(held_out)  # the bare base
    model.fit(train)
    after = model.perplexity(held_out)
    assert after < before * 0.9, (before, after)
    generation = model.generate([held_out[0].prompt], max_new_tokens=32)[0]
    assert generation.text.strip() and generation.completion_tokens <= 32


@pytest.mark.slow
def test_the_decode_loop_answers_like_transformers_on_the_real_base(smollm2: BaseModel) -> None:
    """On SmolLM2, with a LoRA adapter whose B is not zero: the decode loop in float32 gives transformers' greedy
    tokens exactly; in 4-bit groups (served by default: SmolLM2's Q4_1 layout), in float16 (SmolLM2's weights are
    bf16 values) and in weight-only int8 (``precision="int8"``) the first step's logits stay close and the answers
    agree on their first tokens (a near tie later may flip: measured on these 2 prompts x 32 tokens, float16 left
    the reference at token 19 on one, int8 at token 25 on the other; bench/decode_speed.py counts them on 6 prompts
    x 64 tokens, bench/decode_quality.py scores a trained adapter)."""
    import torch

    from kinds import Pair, Prompt
    from kinds._decode import INT4, INT8, Weights, _Cache, _forward, _fuse, decode
    from kinds.smollm2_lora import _decode_weights, _left_padded

    base = smollm2
    model = SmolLM2LoRA(max_steps=1, batch_size=2, seed=1).bind(GeneratorResources(base=base))
    model.fit([Pair(Prompt("Hello there"), "Hi! How are you?"),
               Pair(Prompt("What is AI?"), "Artificial intelligence.")])
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, tensor in model._adapter_state().items():
            if "lora_B" in name:
                tensor.copy_(torch.randn(tensor.shape, generator=generator) * 0.02)
    assert _decode_weights(base).dtype == INT4  # converted from Q4_1: 4-bit groups of 32 by default
    assert _decode_weights(base, "float16").dtype == torch.float16  # precision="float16"
    assert _decode_weights(base, "int8").dtype == INT8  # precision="int8": weight-only int8 products
    full = Weights(base.model)
    half = Weights(base.model, torch.float16)
    pad, eos = base.tokenizer.pad_token_id, base.tokenizer.eos_token_id
    for prompt in (Prompt("Tell me a story about a dragon."),
                   Prompt("What is your favourite colour?", context="A tavern.", persona="Bob the innkeeper.")):
        ids, mask = _left_padded([model._prompt_ids(prompt)], pad)
        reference = model._reference_generate(ids, mask, 32, 0.0, ())
        with torch.inference_mode():
            exact = decode(full, model._lora(), ids, mask, max_new_tokens=32, temperature=0.0, eos=eos, pad=pad)
        assert torch.equal(exact, reference)
        fast = model._run_generate(ids, mask, 32, 0.0, (), None)  # the served products: int4
        with torch.inference_mode():
            int8 = decode(_decode_weights(base, "int8"), model._lora(), ids, mask, max_new_tokens=32,
                          temperature=0.0, eos=eos, pad=pad)
        with torch.inference_mode():
            int4 = decode(_decode_weights(base, "int4"), model._lora(), ids, mask, max_new_tokens=32,
                          temperature=0.0, eos=eos, pad=pad)
        with torch.inference_mode():
            rounded = decode(half, model._lora(), ids, mask, max_new_tokens=32, temperature=0.0, eos=eos, pad=pad)
        width = ids.shape[1]
        assert torch.equal(fast[:, :width + 8], reference[:, :width + 8])
        assert torch.equal(int8[:, :width + 8], reference[:, :width + 8])
        assert torch.equal(int4[:, :width + 8], reference[:, :width + 8])
        assert torch.equal(rounded[:, :width + 8], reference[:, :width + 8])
        causal = torch.ones(width, width, dtype=torch.bool).tril()[None, None]
        with torch.inference_mode():
            logits = {w.dtype: _forward(w, _fuse(w, model._lora()), ids, mask.cumsum(-1) - 1, 0, causal,
                                        _Cache(w, 1, width))[0]
                      for w in (full, half, _decode_weights(base, "int8"), _decode_weights(base, "int4"))}
        exact_logits = logits[torch.float32]
        for dtype, bound in ((torch.float16, 0.005), (INT8, 0.1), (INT4, 0.05)):  # measured ~0.001, ~0.04, ~0.013
            assert (logits[dtype] - exact_logits).abs().max() < bound * exact_logits.abs().max()
            # the prompt through 4-bit products (as perplexity runs it; decode runs a prompt in float32) took
            # float32's second token on the first prompt: float32's top two are 0.057 apart there (of ~13)
            chosen = exact_logits[int(logits[dtype].argmax())]
            assert chosen >= exact_logits.max() - (0.1 if dtype == INT4 else 0.0)
