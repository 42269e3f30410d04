"""Conformance of the ``smollm2-lora`` generator kind on the ``tiny-random`` base: learning (fit is fresh,
partial_fit continues), generation (max_new_tokens, stop strings, streaming, batches with left padding),
perplexity, and artifacts (round trip, tampering, the shared base)."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import torch

from kinds import (
    ArtifactError,
    GeneratorResources,
    KindError,
    NotFitted,
    Pair,
    Prompt,
    SmolLM2LoRA,
    TamperedArtifact,
    create,
    load_base,
    load_model,
)
from kinds._decode import INT8, Adapter, Weights, decode, next_token_nll
from kinds.base_models import BaseModel
from kinds.smollm2_lora import _left_padded, _response_nll, _response_nll_of, _right_padded

PARAMS = {"base": "tiny-random", "lr": 5e-3, "epochs": 3, "batch_size": 8}


def pairs(offset: int, n: int, persona: str | None = None) -> list[Pair]:
    return [Pair(Prompt(f"What comes after {i}?", persona=persona), f"After {i} comes {i + 1}, my friend.")
            for i in range(offset, offset + n)]


@pytest.fixture(scope="module")
def fitted(resources: GeneratorResources) -> SmolLM2LoRA:
    return SmolLM2LoRA(**PARAMS).bind(resources).fit(pairs(0, 24, persona="A shopkeeper"))


def adapter_tensors(model: SmolLM2LoRA) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model._adapter_state().items()}


def test_fit_lowers_the_training_perplexity_and_marks_fitted(resources: GeneratorResources) -> None:
    train = pairs(0, 24)
    model = SmolLM2LoRA(**PARAMS).bind(resources)
    assert not model.fitted
    before = model.perplexity(train)  # an unfitted generator runs the bare base
    model.fit(train)
    assert model.fitted
    assert model.perplexity(train) < before * 0.9


def test_training_applies_the_output_layer_at_the_response_positions_only_with_the_same_loss_and_gradients(
        fitted: SmolLM2LoRA) -> None:
    """A step's loss from the logits at the response positions (what ``_train`` runs) is the loss from the
    logits at every position, and so are the adapter's gradients."""
    examples = [fitted._example(p) for p in pairs(300, 5, persona="A shopkeeper") + pairs(400, 3)]
    ids, mask, labels = _right_padded(examples, fitted.base.tokenizer.pad_token_id)
    assert len({int(m.sum()) for m in mask}) > 1  # rows of several lengths: padding inside the batch
    peft, trainable = fitted._peft(), fitted._trainable()
    results = []
    for loss_of in (lambda: _response_nll(peft(input_ids=ids, attention_mask=mask).logits, labels),
                    lambda: _response_nll_of(peft, ids, mask, labels)):
        with fitted.base.lock, torch.enable_grad():
            peft.set_adapter(fitted._adapter)
            fitted._mark_trainable(trainable)
            per_example = loss_of()
            grads = torch.autograd.grad(per_example.mean(), trainable)
            for p in trainable:
                p.requires_grad_(False)
        results.append((per_example.detach(), grads))
    (full, full_grads), (selected, selected_grads) = results
    assert torch.allclose(selected, full, rtol=1e-5, atol=1e-6)
    for g_full, g_selected in zip(full_grads, selected_grads, strict=True):
        assert torch.allclose(g_selected, g_full, rtol=1e-4, atol=1e-7)


def test_fit_is_fresh_and_partial_fit_continues(resources: GeneratorResources) -> None:
    a1, a2, b = pairs(0, 16), pairs(100, 16, persona="A pirate"), pairs(200, 8)
    m1 = SmolLM2LoRA(**PARAMS).bind(resources).fit(a1)
    m2 = SmolLM2LoRA(**PARAMS).bind(resources).fit(a2)
    m1.fit(b)
    m2.fit(b)  # fresh, seeded: the same adapter whatever came before
    assert all(torch.equal(x, y) for x, y in zip(adapter_tensors(m1).values(), adapter_tensors(m2).values(),
                                                 strict=True))
    m1.fit(a1)
    m2.fit(a2)
    before = adapter_tensors(m1)
    m1.partial_fit(b)
    m2.partial_fit(b)  # continued: the results differ as their starting points did
    after1, after2 = adapter_tensors(m1), adapter_tensors(m2)
    assert any(not torch.equal(after1[k], after2[k]) for k in after1)
    assert any(not torch.equal(after1[k], before[k]) for k in after1)
    with pytest.raises(NotFitted):
        SmolLM2LoRA(**PARAMS).bind(resources).partial_fit(b)


def test_generate_respects_max_new_tokens_and_batches_like_single_prompts(fitted: SmolLM2LoRA) -> None:
    prompts = [Prompt("What comes after 3?", persona="A shopkeeper"), Prompt("Hi"),
               Prompt("A much longer question than the others, to need left padding in the batch?",
                      context="The shop is open.")]
    for limit in (1, 5):
        for generation in fitted.generate(prompts, max_new_tokens=limit):
            assert 1 <= generation.completion_tokens <= limit
            assert generation.prompt_tokens > 0 and generation.latency_ms > 0
            assert generation.finish_reason == ("length" if generation.completion_tokens == limit else "stop")
    batched = fitted.generate(prompts, max_new_tokens=8)
    single = [fitted.generate([p], max_new_tokens=8)[0] for p in prompts]
    assert [g.text for g in batched] == [g.text for g in single]
    assert [g.completion_tokens for g in batched] == [g.completion_tokens for g in single]
    assert fitted.generate([], max_new_tokens=8) == []
    with pytest.raises(KindError):
        fitted.generate(prompts, max_new_tokens=0)


def test_the_decode_loop_gives_transformers_greedy_tokens(fitted: SmolLM2LoRA, resources: GeneratorResources) -> None:
    """kinds._decode replaced transformers' generate: the same greedy tokens (single prompts and a left-padded
    batch; with the adapter, and for an unfitted generator on the bare base), rows padded after their end."""
    prompts = [Prompt("What comes after 3?", persona="A shopkeeper"), Prompt("Hi"),
               Prompt("A much longer question than the others, to need left padding in the batch?",
                      context="The shop is open.")]
    pad = resources.base.tokenizer.pad_token_id
    for model in (fitted, SmolLM2LoRA(**PARAMS).bind(resources)):
        for rows in ([p] for p in prompts):
            ids, mask = _left_padded([model._prompt_ids(p) for p in rows], pad)
            assert torch.equal(model._run_generate(ids, mask, 48, 0.0, (), None),
                               model._reference_generate(ids, mask, 48, 0.0, ()))
        ids, mask = _left_padded([model._prompt_ids(p) for p in prompts], pad)
        assert torch.equal(model._run_generate(ids, mask, 24, 0.0, (), None),
                           model._reference_generate(ids, mask, 24, 0.0, ()))


def test_float16_products_stay_close_to_float32(fitted: SmolLM2LoRA, tiny: BaseModel) -> None:
    """The float16 decode weights (what SmolLM2's bf16 weights use) give logits within rounding of float32;
    tiny-random is saved in float32, so its decode loop multiplies in float32."""
    from kinds.smollm2_lora import _decode_weights

    assert _decode_weights(tiny).dtype == torch.float32
    ids, mask = _left_padded([fitted._prompt_ids(Prompt("What comes after 5?"))], tiny.tokenizer.pad_token_id)
    lora = fitted._lora()
    assert lora, "the fitted adapter is on q_proj and v_proj of every layer"
    with torch.inference_mode():
        full = decode(Weights(tiny.model), lora, ids, mask, max_new_tokens=1, temperature=0.0, eos=-1, pad=0)
        half = decode(Weights(tiny.model, torch.float16), lora, ids, mask, max_new_tokens=1, temperature=0.0,
                      eos=-1, pad=0)
        logits32 = _forward_logits(Weights(tiny.model), lora, ids, mask)
        logits16 = _forward_logits(Weights(tiny.model, torch.float16), lora, ids, mask)
    assert torch.equal(full, half)
    assert (logits32 - logits16).abs().max() < 1e-2 * logits32.abs().max()


@pytest.fixture()
def int8_served(fitted: SmolLM2LoRA, tiny: BaseModel) -> Iterator[Weights]:
    """The fitted generator with ``precision="int8"`` (set on its params for the test, then restored): the
    kind serves int8 products on tiny-random too when asked (its own choice is float32)."""
    from kinds.smollm2_lora import _decode_weights

    fitted.params["precision"] = "int8"
    with tiny.lock:
        weights = _decode_weights(tiny, "int8")
    assert weights.dtype == INT8
    yield weights
    del fitted.params["precision"]


def test_perplexity_runs_the_decode_loops_products(fitted: SmolLM2LoRA, resources: GeneratorResources) -> None:
    """perplexity (a gate's figure) is computed by the decode loop's forward pass, so it scores the products
    that are served; in float32 it is the peft model's (the reference), fitted or bare, batches padded."""
    held_out = [*pairs(30, 5, persona="A shopkeeper"), Pair(Prompt("Hi"), "Hello! A long answer, " * 6)]
    for model in (fitted, SmolLM2LoRA(**PARAMS).bind(resources)):
        assert model.perplexity(held_out) == pytest.approx(model._reference_perplexity(held_out), rel=1e-4)


def test_int8_products_stay_close_to_float32_and_are_what_the_kind_serves(
        fitted: SmolLM2LoRA, tiny: BaseModel, int8_served: Weights, tmp_path: Path) -> None:
    """int8 products (weight-only: int8 weights with per-row scales, bfloat16 activations): logits within
    rounding of float32's, the kind's generate / stream / perplexity all run them (the perplexity is the
    int8 forward pass's own, near the float32 reference), and a saved adapter answers the same."""
    lora = fitted._lora()
    ids, mask = _left_padded([fitted._prompt_ids(Prompt("What comes after 5?"))], tiny.tokenizer.pad_token_id)
    with torch.inference_mode():
        logits32 = _forward_logits(Weights(tiny.model), lora, ids, mask)
        logits8 = _forward_logits(int8_served, lora, ids, mask)
    assert (logits32 - logits8).abs().max() < 0.02 * logits32.abs().max()  # measured 0.0087
    assert torch.corrcoef(torch.stack([logits32[0], logits8[0]]))[0, 1] > 0.9995  # measured 0.99996

    held_out = pairs(30, 6, persona="A shopkeeper")
    ids, mask, labels = _right_padded([fitted._example(p) for p in held_out], tiny.tokenizer.pad_token_id)
    with torch.inference_mode():
        nll, count = next_token_nll(int8_served, lora, ids, mask, labels)
    assert fitted.perplexity(held_out) == pytest.approx(math.exp(nll / count), rel=1e-6)
    assert fitted.perplexity(held_out) == pytest.approx(fitted._reference_perplexity(held_out), rel=0.002)  # 0.01%

    prompt = Prompt("What comes after 9?", persona="A shopkeeper")
    whole = fitted.generate([prompt], max_new_tokens=16)[0]
    ids, mask = _left_padded([fitted._prompt_ids(prompt)], tiny.tokenizer.pad_token_id)
    eos = tiny.tokenizer.eos_token_id
    with torch.inference_mode():
        direct = decode(int8_served, lora, ids, mask, max_new_tokens=16, temperature=0.0, eos=eos,
                        pad=tiny.tokenizer.pad_token_id)[0, ids.shape[1]:].tolist()
    assert whole.text == tiny.tokenizer.decode(direct, skip_special_tokens=True)
    assert "".join(fitted.stream(prompt, max_new_tokens=16)) == whole.text
    fitted.save(tmp_path / "v1")
    loaded = load_model(tmp_path / "v1", resources=GeneratorResources(base=tiny))
    assert loaded.generate([prompt], max_new_tokens=16)[0].text == whole.text


def test_int4_holds_weights_quantised_like_gguf_q4_1() -> None:
    """SmolLM2's layers ship as GGUF Q4_1 (groups of 32: w = code * d + m): the 4-bit layout finds the same
    codes and scales again (the zero, m + 8d, is rounded to bfloat16)."""
    from kinds._decode import GROUP, _int4_grid

    generator = torch.Generator().manual_seed(0)
    rows, groups = 32, 4
    codes = torch.randint(0, 16, (rows, groups, GROUP), generator=generator).float()
    codes[..., 0], codes[..., 1] = 0, 15  # Q4_1 puts each group's minimum and maximum on the grid
    d = (torch.rand(rows, groups, 1, generator=generator) * 0.01 + 1e-3).bfloat16().float()
    m = (torch.randn(rows, groups, 1, generator=generator) * 0.05).bfloat16().float()
    found, scale, zero = _int4_grid((codes * d + m).view(rows, groups * GROUP))
    assert torch.equal(found, codes)
    assert torch.equal(scale, d[..., 0])
    assert torch.equal(zero, (m + 8 * d)[..., 0].bfloat16().float())
    with pytest.raises(ValueError, match="groups of 32"):
        _int4_grid(torch.zeros(16, 40))


def test_int4_products_stay_close_to_float32_and_are_what_the_kind_serves(
        fitted: SmolLM2LoRA, tiny: BaseModel) -> None:
    """precision="int4": 4-bit layers (head float16) give logits near float32's and the kind's generate and
    perplexity run them."""
    from kinds._decode import INT4
    from kinds.smollm2_lora import _decode_weights

    with tiny.lock:
        weights = _decode_weights(tiny, "int4")
    assert weights.dtype == INT4
    lora = fitted._lora()
    ids, mask = _left_padded([fitted._prompt_ids(Prompt("What comes after 5?"))], tiny.tokenizer.pad_token_id)
    with torch.inference_mode():
        logits32 = _forward_logits(Weights(tiny.model), lora, ids, mask)
        logits4 = _forward_logits(weights, lora, ids, mask)
    # tiny-random's float32 weights are not on a 4-bit grid, so this is 4-bit rounding of random weights
    assert torch.corrcoef(torch.stack([logits32[0], logits4[0]]))[0, 1] > 0.99
    held_out = pairs(30, 6, persona="A shopkeeper")
    fitted.params["precision"] = "int4"
    try:
        ids, mask, labels = _right_padded([fitted._example(p) for p in held_out], tiny.tokenizer.pad_token_id)
        with torch.inference_mode():
            nll, count = next_token_nll(weights, lora, ids, mask, labels)
        assert fitted.perplexity(held_out) == pytest.approx(math.exp(nll / count), rel=1e-6)
        prompt = Prompt("What comes after 9?", persona="A shopkeeper")
        ids, mask = _left_padded([fitted._prompt_ids(prompt)], tiny.tokenizer.pad_token_id)
        with torch.inference_mode():
            direct = decode(weights, lora, ids, mask, max_new_tokens=16, temperature=0.0,
                            eos=tiny.tokenizer.eos_token_id, pad=tiny.tokenizer.pad_token_id)[0, ids.shape[1]:]
        assert fitted.generate([prompt], max_new_tokens=16)[0].text == tiny.tokenizer.decode(
            direct.tolist(), skip_special_tokens=True)
    finally:
        del fitted.params["precision"]


def _forward_logits(weights: Weights, lora: Adapter, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    from kinds._decode import _Cache, _forward, _fuse

    width = ids.shape[1]
    causal = torch.ones(width, width, dtype=torch.bool).tril()[None, None]
    return _forward(weights, _fuse(weights, lora), ids, mask.cumsum(-1) - 1, 0, causal, _Cache(weights, 1, width))


def test_stop_strings_cut_the_text_and_end_the_generation(fitted: SmolLM2LoRA) -> None:
    prompt = Prompt("What comes after 7?")
    free = fitted.generate([prompt], max_new_tokens=24)[0]
    assert len(free.text) >= 8, free
    stop = free.text[4:7]
    stopped = fitted.generate([prompt], max_new_tokens=24, stop=[stop])[0]
    assert stopped.text == free.text[:free.text.find(stop)]
    assert stopped.finish_reason == "stop"
    assert stopped.completion_tokens <= free.completion_tokens


def test_stream_yields_the_generated_text_in_pieces(fitted: SmolLM2LoRA) -> None:
    prompt = Prompt("What comes after 9?", persona="A shopkeeper")
    whole = fitted.generate([prompt], max_new_tokens=16)[0].text
    pieces = list(fitted.stream(prompt, max_new_tokens=16))
    assert len(pieces) > 1 and "".join(pieces) == whole
    stop = whole[5:8]
    assert "".join(fitted.stream(prompt, max_new_tokens=16, stop=[stop])) == whole[:whole.find(stop)]
    first = next(iter(fitted.stream(prompt, max_new_tokens=16)))  # abandoned early: the worker stops
    assert whole.startswith(first)


def test_sampling_with_a_temperature_runs(fitted: SmolLM2LoRA) -> None:
    out = fitted.generate([Prompt("Hi")], max_new_tokens=6, temperature=0.8)
    assert 1 <= out[0].completion_tokens <= 6
    with pytest.raises(KindError):
        fitted.generate([Prompt("Hi")], temperature=-1.0)


def test_save_load_round_trip_gives_identical_greedy_output(fitted: SmolLM2LoRA, resources: GeneratorResources,
                                                            tmp_path: Path) -> None:
    manifest = fitted.save(tmp_path / "v1")
    assert sorted(p.name for p in (tmp_path / "v1").iterdir()) == ["adapter.json", "adapter.safetensors",
                                                                   "manifest.json"]  # pickle-free
    assert manifest["kind"] == "smollm2-lora" and manifest["labels"] == [] and len(manifest["sha256"]) == 64
    loaded = load_model(tmp_path / "v1", resources=resources)
    prompts = [Prompt("What comes after 3?", persona="A shopkeeper"), Prompt("Hello there")]
    expected = fitted.generate(prompts, max_new_tokens=12)
    got = loaded.generate(prompts, max_new_tokens=12)
    assert [(g.text, g.completion_tokens, g.finish_reason) for g in got] == [
        (g.text, g.completion_tokens, g.finish_reason) for g in expected]
    assert loaded.perplexity(pairs(0, 4)) == pytest.approx(fitted.perplexity(pairs(0, 4)), rel=1e-5)


def test_a_tampered_adapter_is_refused(fitted: SmolLM2LoRA, resources: GeneratorResources, tmp_path: Path) -> None:
    fitted.save(tmp_path / "v1")
    adapter = tmp_path / "v1" / "adapter.safetensors"
    data = bytearray(adapter.read_bytes())
    data[-1] ^= 0x01
    adapter.write_bytes(bytes(data))
    with pytest.raises(TamperedArtifact):
        load_model(tmp_path / "v1", resources=resources)


def test_an_adapter_is_refused_on_another_base(fitted: SmolLM2LoRA, tiny: BaseModel, tmp_path: Path) -> None:
    fitted.save(tmp_path / "v1")
    other = dataclasses.replace(tiny, digest="0" * 64)  # the same name, other weights
    with pytest.raises(ArtifactError, match="trained on base"):
        load_model(tmp_path / "v1", resources=GeneratorResources(base=other))
    with pytest.raises(KindError, match="GeneratorResources"):
        load_model(tmp_path / "v1")


def test_versions_share_one_base_and_keep_their_own_adapters(fitted: SmolLM2LoRA, resources: GeneratorResources,
                                                             data_dir: Path, tmp_path: Path) -> None:
    assert load_base("tiny-random", data_dir) is resources.base  # loaded once per process
    other = SmolLM2LoRA(**{**PARAMS, "seed": 1}).bind(resources).fit(pairs(50, 16, persona="A pirate"))
    fitted.save(tmp_path / "a")
    other.save(tmp_path / "b")
    started = time.perf_counter()
    a = load_model(tmp_path / "a", resources=resources)
    b = load_model(tmp_path / "b", resources=resources)
    assert time.perf_counter() - started < 5.0  # an adapter swap, not a base load
    assert isinstance(a, SmolLM2LoRA) and isinstance(b, SmolLM2LoRA)
    assert a.base is b.base is resources.base
    prompt = [Prompt("What comes after 60?", persona="A pirate")]
    assert a.generate(prompt, max_new_tokens=10)[0].text == fitted.generate(prompt, max_new_tokens=10)[0].text
    assert b.generate(prompt, max_new_tokens=10)[0].text == other.generate(prompt, max_new_tokens=10)[0].text
    assert a.perplexity(pairs(50, 4, persona="A pirate")) != b.perplexity(pairs(50, 4, persona="A pirate"))


def test_create_checks_params_and_resources(resources: GeneratorResources) -> None:
    model = create("smollm2-lora", resources=resources, base="tiny-random", r=4)
    assert isinstance(model, SmolLM2LoRA) and model.params["r"] == 4
    with pytest.raises(KindError):
        create("smollm2-lora", nope=1)
    with pytest.raises(KindError, match="configured for base"):
        SmolLM2LoRA(base="smollm2-135m-instruct").bind(resources)
    with pytest.raises(KindError):
        SmolLM2LoRA(base="tiny-random", target_modules=[])
    with pytest.raises(KindError, match="empty response"):
        SmolLM2LoRA(**PARAMS).bind(resources).fit([Pair(Prompt("hi"), "  ")])
    assert json.loads(json.dumps(model.params)) == model.params  # the manifest keeps them as they are


@contextlib.contextmanager
def observed(monkeypatch: pytest.MonkeyPatch, name: str) -> Iterator[list[int]]:
    """The intra-op thread counts ``kinds.smollm2_lora.<name>`` (decode, next_token_nll, _response_nll_of)
    ran with, one per call, read inside the call (where its forward passes run)."""
    import kinds.smollm2_lora as module

    seen: list[int] = []
    real = getattr(module, name)

    def spy(*args: Any, **kwargs: Any) -> Any:
        seen.append(torch.get_num_threads())
        return real(*args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(module, name, spy)
        yield seen


@pytest.mark.parametrize("precision", ["auto", "int4", "float16"])
def test_greedy_tokens_do_not_change_with_the_thread_count(fitted: SmolLM2LoRA, tiny: BaseModel, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch, precision: str) -> None:
    """The same adapter loaded with 1 and 2 intra-op threads (as a pod loads it) gives the same greedy tokens,
    single prompts and a left-padded batch, generate and stream; the 2-thread forward really ran on 2."""
    fitted.save(tmp_path / "a")
    one = load_model(tmp_path / "a", resources=GeneratorResources(tiny, threads=1))
    two = load_model(tmp_path / "a", resources=GeneratorResources(tiny, threads=2))
    prompts = [Prompt("What comes after 3?", persona="A shopkeeper"), Prompt("Hi"),
               Prompt("A much longer question than the others, to need left padding in the batch?",
                      context="The shop is open.")]
    for model in (one, two):
        if precision != "auto":
            model.params["precision"] = precision
    with observed(monkeypatch, "decode") as seen:
        singles = [(one.generate([p], max_new_tokens=32)[0], two.generate([p], max_new_tokens=32)[0])
                   for p in prompts]
        batch = one.generate(prompts, max_new_tokens=32), two.generate(prompts, max_new_tokens=32)
        streams = ["".join(model.stream(prompts[0], max_new_tokens=32)) for model in (one, two)]
    assert seen == [1, 2] * 5
    assert all(a.completion_tokens == 32 or a.finish_reason == "stop" for a, _ in singles)
    assert [(a.text, a.completion_tokens) for a, _ in singles] == [(b.text, b.completion_tokens) for _, b in singles]
    assert [(g.text, g.completion_tokens) for g in batch[0]] == [(g.text, g.completion_tokens) for g in batch[1]]
    assert streams[0] == streams[1] == singles[0][0].text
    assert sum(a.completion_tokens for a, _ in singles) > 24  # tokens to compare, not empty answers


def test_the_bound_thread_count_reaches_the_served_forward_passes_only(
        fitted: SmolLM2LoRA, tiny: BaseModel, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """threads=2 is what torch runs the decode loop's forward passes with, in whichever thread calls (a pool's
    worker that ran torch on 1 thread before, a stream's own thread, beside a fit holding one_torch_thread
    in another thread), restored after the call; fits and perplexity still run on one thread."""
    from tests.kinds.test_threads import fit_beside

    fitted.save(tmp_path / "a")
    two = load_model(tmp_path / "a", resources=GeneratorResources(tiny, threads=2))
    assert isinstance(two, SmolLM2LoRA)

    def in_worker() -> tuple[int, int]:
        torch.set_num_threads(1)
        torch.ones(8).sum()  # this thread's torch state exists, at 1 thread
        two.generate([Prompt("Hi")], max_new_tokens=4)
        return torch.get_num_threads(), len(list(two.stream(Prompt("Hi"), max_new_tokens=4)))

    with fit_beside(), observed(monkeypatch, "decode") as seen, ThreadPoolExecutor(1) as pool:
        after, pieces = pool.submit(in_worker).result()
    assert seen == [2, 2] and pieces >= 1
    assert after == 1  # the worker's own count, restored after the call
    with observed(monkeypatch, "next_token_nll") as scored, observed(monkeypatch, "_response_nll_of") as trained:
        two.perplexity(pairs(0, 4))
        two.partial_fit(pairs(0, 2))
    assert scored and set(scored) == {1} and trained and set(trained) == {1}
    with pytest.raises(KindError, match="threads"):
        GeneratorResources(tiny, threads=0)
