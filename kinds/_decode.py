"""A hand-written decode loop for the Llama bases (SmolLM2, tiny-random) with a LoRA adapter on top:
what ``SmolLM2LoRA.generate`` runs instead of transformers' ``generate``.

Why: profiled on SmolLM2-135M with one torch thread, transformers' ``generate`` (peft-wrapped) spends
~70 ms of CPU per new token, ~70 % of it in the fp32 matrix-vector products (540 MB of weights read per
token: the time is memory bandwidth) and the rest in per-token Python (decorators, hooks, the dynamic
cache, peft's wrappers). This loop runs the same operations (RMSNorm, rotary, SDPA with grouped KV
heads, SiLU MLP, the tied head on the last position only) with a preallocated KV cache, fused q/k/v and
gate/up projections and the LoRA delta ``B(A(x)) * scale`` added to q and v unmerged (the base's weights
stay shared and unmodified; an adapter is a couple of MB). ``matmul_dtype`` float16 halves the bytes read
(the weights are bf16 values, so only the activations entering a product are rounded); :data:`INT8`
(weight-only int8, ``smollm2-lora``'s ``precision="int8"``) halves them again. The norms, the residual
stream, attention, the LoRA delta and the logits stay float32 whatever the products' dtype.
:func:`next_token_nll` runs the same forward pass over whole sequences, so a perplexity gate scores the
products that are served.

:class:`Weights` is built once per base and dtype (the fused copies) and shared by every adapter.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch.nn import functional as F

Adapter = dict[int, tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor], float]]
"""Per layer index: ((A_q, B_q), (A_v, B_v), scale) of a LoRA adapter on q_proj and v_proj."""


def _linear(module: Any) -> Any:
    """The plain ``nn.Linear`` under a peft LoRA wrapper (or the module itself)."""
    return getattr(module, "base_layer", module)


INT8 = torch.int8
"""``matmul_dtype`` of weight-only int8 products: each weight int8 with one symmetric scale per output row,
the activations entering a product rounded to bfloat16 (not quantised), accumulated in float32
(``torch._weight_int8pack_mm``, ATen's CPU kernel for this, vectorised for AVX2 and AVX-512). Half
float16's bytes per token. Quantising the activations too (fbgemm's dynamic int8 linear, one 7-bit scale
per product) was faster still but wrecked SmolLM2: its activations have outlier channels (a trained
adapter's held-out perplexity 10.0 -> 44.1; bench/decode_quality.py, docs/benchmarks.md)."""


def _int8_weight(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A float ``weight`` [out, in] as int8 [out, in] and one bfloat16 scale per output row (symmetric)."""
    weight = weight.float()
    scale = (weight.abs().amax(dim=1) / 127).clamp(min=1e-12)
    return (weight / scale[:, None]).round().clamp(-127, 127).to(torch.int8).contiguous(), scale.to(torch.bfloat16)


INT4 = torch.quint4x2
"""``matmul_dtype`` of weight-only 4-bit products: each group of :data:`GROUP` inputs of a weight row
stored as 4-bit codes with a bfloat16 scale and zero (``w = (code - 8) * scale + zero``), the activations
rounded to bfloat16, accumulated in float32 (``torch._weight_int4pack_mm_for_cpu``, vectorised for AVX2
and AVX-512). SmolLM2's layers ship as GGUF Q4_1 (groups of 32, 4-bit codes, a scale and a minimum per
group), so this layout holds them again: the codes are the GGUF's, only the scales and zeros are rounded
to bfloat16. A quarter of float16's bytes per token for the layers. The tied head (Q8_0 in the GGUF)
multiplies in float16 (its bf16 values exactly): the weight-only int8 head (one scale per row, bfloat16
activations) is what cost the int8 path its score. On one trained adapter's 48 held-out answers
(``bench/decode_quality.py``'s adapter, 2026-12-05): float32 0.0816; int4 layers + int8 head 0.0602 (38 of
48 answers float32's); float32 layers + int8 head 0.0612 (38); int4 layers + float16 head 0.0804 (46)."""

GROUP = 32


def _int4_grid(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A float ``weight`` [out, in] as 4-bit codes [out, in / GROUP, GROUP] (0..15) and a scale and zero
    [out, in / GROUP] per group of :data:`GROUP` inputs, both bfloat16 values: ``w ~ (code - 8) * scale +
    zero``. Asymmetric, each group's minimum and maximum on its grid, as GGUF's Q4_1 quantises: on weights
    that came from Q4_1 the codes are Q4_1's."""
    rows, width = weight.shape
    if width % GROUP or rows % 16:
        raise ValueError(f"4-bit products need inputs in groups of {GROUP} and outputs in 16s, not {rows}x{width}")
    groups = weight.float().view(rows, width // GROUP, GROUP)
    low, high = groups.amin(-1), groups.amax(-1)
    scale = ((high - low) / 15).clamp(min=1e-12).to(torch.bfloat16).float()
    zero = (low + 8 * scale).to(torch.bfloat16).float()  # the grid's 8th point, as the kernel wants it
    codes = ((groups - (zero - 8 * scale)[..., None]) / scale[..., None]).round().clamp(0, 15)
    return codes, scale, zero


def _int4_weight(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A float ``weight`` [out, in] packed for ``torch._weight_int4pack_mm_for_cpu``: the codes of
    :func:`_int4_grid`, and (scale, zero) as bfloat16 [in / GROUP, out, 2]."""
    codes, scale, zero = _int4_grid(weight)
    packed = torch._convert_weight_to_int4pack_for_cpu(codes.to(torch.int32).view(weight.shape), 2)
    return packed, torch.stack([scale, zero], -1).transpose(0, 1).to(torch.bfloat16).contiguous()


Product = Callable[[torch.Tensor], torch.Tensor]
"""One matrix product ``x @ weight.T`` in its served form: float32 activations in, float32 out."""


def _product(weight: torch.Tensor, dtype: torch.dtype) -> Product:
    """``weight`` ([out, in], float) as a :data:`Product` whose weight is held in ``dtype``."""
    if dtype == torch.float32:
        full = weight.float().contiguous()
        return lambda x: F.linear(x, full)
    if dtype == INT8:
        values, scale = _int8_weight(weight)

        def int8(x: torch.Tensor) -> torch.Tensor:
            rows = x.reshape(-1, x.shape[-1]).to(torch.bfloat16)
            return torch._weight_int8pack_mm(rows, values, scale).float().reshape(*x.shape[:-1], -1)
        return int8
    if dtype == INT4:
        packed, scale_zero = _int4_weight(weight)

        def int4(x: torch.Tensor) -> torch.Tensor:
            rows = x.reshape(-1, x.shape[-1]).to(torch.bfloat16)
            return torch._weight_int4pack_mm_for_cpu(rows, packed, GROUP, scale_zero).float().reshape(
                *x.shape[:-1], -1)
        return int4
    rounded = weight.to(dtype).contiguous()
    return lambda x: F.linear(x.to(dtype), rounded).float()


@dataclass(frozen=True)
class _Layer:
    norm_in: torch.Tensor
    qkv: Product
    o: Product
    norm_post: torch.Tensor
    gate_up: Product
    down: Product
    prompt: tuple[Product, Product, Product, Product]
    """qkv, o, gate_up and down on the base's own float32 weights (no copy), for a prompt's rows."""


def _full(*weights: torch.Tensor) -> Product:
    """The product with the float32 ``weights`` (unfused, as stored) whose outputs are concatenated."""
    if len(weights) == 1:
        return lambda x: F.linear(x, weights[0])
    return lambda x: torch.cat([F.linear(x, w) for w in weights], dim=-1)


class Weights:
    """The base's decode weights: q/k/v and gate/up concatenated, every product's weight in ``matmul_dtype`` (float32,
    float16, bfloat16, :data:`INT8` or :data:`INT4`), the tied head's in ``head_dtype`` (by default
    ``matmul_dtype``, float16 for :data:`INT4`); embeddings, norms and rotary frequencies in float32. A prompt (more
    than one row at once, :func:`decode`'s first pass) multiplies in float32 with the base's own weights whatever
    ``matmul_dtype``: there the products are bound by arithmetic, not by reading the weights, and float32 (MKL) was
    faster than the int8/int4 kernels (42 rows: 73 ms vs 114 / 109 ms) and the same on AVX2."""

    def __init__(self, model: Any, matmul_dtype: torch.dtype = torch.float32,
                 head_dtype: torch.dtype | None = None) -> None:
        config, inner = model.config, model.model
        self.dtype = matmul_dtype
        if head_dtype is None:
            head_dtype = torch.float16 if matmul_dtype == INT4 else matmul_dtype
        self.heads, self.kv_heads = config.num_attention_heads, config.num_key_value_heads
        self.head_dim = getattr(config, "head_dim", None) or config.hidden_size // self.heads
        self.eps = float(config.rms_norm_eps)
        self.embed = inner.embed_tokens.weight.detach()
        self.head = _product(_linear(model.lm_head).weight.detach(), head_dtype)
        self.norm = inner.norm.weight.detach()
        self.inv_freq = inner.rotary_emb.inv_freq.detach().float()
        self.rope_scale = float(getattr(inner.rotary_emb, "attention_scaling", 1.0))

        def weights(*modules: Any) -> list[torch.Tensor]:
            return [_linear(m).weight.detach() for m in modules]

        def served(*modules: Any) -> Product:
            return _product(torch.cat(weights(*modules)), matmul_dtype)

        self.layers = []
        for layer in inner.layers:
            attn, mlp = layer.self_attn, layer.mlp
            parts = ((attn.q_proj, attn.k_proj, attn.v_proj), (attn.o_proj,), (mlp.gate_proj, mlp.up_proj),
                     (mlp.down_proj,))
            self.layers.append(_Layer(
                layer.input_layernorm.weight.detach(), served(*parts[0]), served(*parts[1]),
                layer.post_attention_layernorm.weight.detach(), served(*parts[2]), served(*parts[3]),
                (_full(*weights(*parts[0])), _full(*weights(*parts[1])), _full(*weights(*parts[2])),
                 _full(*weights(*parts[3])))))

    def rms(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """RMSNorm (one fused op; the same bits as transformers' ``weight * x * rsqrt(mean(x^2) + eps)``)."""
        return F.rms_norm(x, weight.shape, weight, self.eps)


def lora_adapter(peft: Any, name: str) -> Adapter:
    """The LoRA tensors of adapter ``name`` on a peft-wrapped Llama, per layer (q_proj and v_proj)."""
    found: Adapter = {}
    for i, layer in enumerate(peft.base_model.model.model.layers):
        q, v = layer.self_attn.q_proj, layer.self_attn.v_proj
        if name in getattr(q, "lora_A", {}) and name in getattr(v, "lora_A", {}):
            found[i] = (
                (q.lora_A[name].weight.detach(), q.lora_B[name].weight.detach()),
                (v.lora_A[name].weight.detach(), v.lora_B[name].weight.detach()),
                float(q.scaling[name]),
            )
    return found


_Fused = dict[int, tuple[torch.Tensor, torch.Tensor, float]]
"""Per layer: an :data:`Adapter`'s A_q and A_v stacked [2r, hidden], and B_q and B_v placed on the q and v
rows of the fused q/k/v output [q + k + v, 2r] (zeros elsewhere), and the scale: the delta is two
products and one add per layer instead of four products and two adds."""


def _fuse(w: Weights, adapter: Adapter) -> _Fused:
    nq, nkv = w.heads * w.head_dim, w.kv_heads * w.head_dim
    fused: _Fused = {}
    for i, ((aq, bq), (av, bv), scale) in adapter.items():
        rq, rv = aq.shape[0], av.shape[0]
        b = torch.zeros(nq + 2 * nkv, rq + rv)
        b[:nq, :rq], b[nq + nkv :, rq:] = bq, bv
        fused[i] = (torch.cat([aq, av]).contiguous(), b, scale)
    return fused


class _Cache:
    def __init__(self, w: Weights, batch: int, length: int) -> None:
        shape = (batch, w.kv_heads, length, w.head_dim)
        self.k = [torch.zeros(shape) for _ in w.layers]
        self.v = [torch.zeros(shape) for _ in w.layers]


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return x * cos + torch.cat((-x[..., half:], x[..., :half]), dim=-1) * sin


def _forward(
    w: Weights,
    adapter: _Fused,
    ids: torch.Tensor,
    positions: torch.Tensor,
    start: int,
    mask: torch.Tensor,
    cache: _Cache,
    prompt: bool = False,
) -> torch.Tensor:
    """float32 logits of the last position, for ``ids`` ([batch, steps]) written at cache columns
    ``start:start+steps``; ``mask`` [batch, 1, steps, start+steps] says which columns each may see.
    ``prompt``: the layers' products in float32 on the base's own weights (:class:`Weights`)."""
    h = _hidden(w, adapter, ids, positions, start, mask, cache, prompt)
    return w.head(w.rms(h[:, -1], w.norm))


def _hidden(
    w: Weights,
    adapter: _Fused,
    ids: torch.Tensor,
    positions: torch.Tensor,
    start: int,
    mask: torch.Tensor,
    cache: _Cache,
    prompt: bool = False,
) -> torch.Tensor:
    """The residual stream after the last layer (before the final norm), every position: ``_forward``'s
    body."""
    batch, steps = ids.shape
    end = start + steps
    h = F.embedding(ids, w.embed)
    freqs = positions[..., None].float() * w.inv_freq
    emb = torch.cat((freqs, freqs), dim=-1)[:, None]
    cos, sin = emb.cos() * w.rope_scale, emb.sin() * w.rope_scale
    heads, rotated, d = w.heads, w.heads + w.kv_heads, w.head_dim
    for i, layer in enumerate(w.layers):
        qkv_product, o_product, gate_up_product, down_product = (
            layer.prompt if prompt else (layer.qkv, layer.o, layer.gate_up, layer.down))
        x = w.rms(h, layer.norm_in)
        qkv = qkv_product(x)
        lora = adapter.get(i)
        if lora is not None:
            a, b, scale = lora
            qkv = qkv + F.linear(F.linear(x, a), b) * scale
        heads_qkv = qkv.view(batch, steps, rotated + w.kv_heads, d).transpose(1, 2)
        qk = _rotate(heads_qkv[:, :rotated], cos, sin)  # q's and k's heads in one go
        q = qk[:, :heads]
        cache.k[i][:, :, start:end] = qk[:, heads:]
        cache.v[i][:, :, start:end] = heads_qkv[:, rotated:]
        attn = F.scaled_dot_product_attention(
            q,
            cache.k[i][:, :, :end],
            cache.v[i][:, :, :end],
            attn_mask=mask,
            scale=d**-0.5,
            enable_gqa=w.heads != w.kv_heads,
        )
        h = h + o_product(attn.transpose(1, 2).reshape(batch, steps, heads * d))
        gate, up = gate_up_product(w.rms(h, layer.norm_post)).chunk(2, dim=-1)
        h = h + down_product(F.silu(gate) * up)
    return h


def next_token_nll(w: Weights, adapter: Adapter, ids: torch.Tensor, attention: torch.Tensor,
                   labels: torch.Tensor) -> tuple[float, int]:
    """Summed negative log-likelihood (and count) of the tokens ``labels[:, 1:]`` not -100 given what comes
    before them, computed by the decode loop's own forward pass (the same products, so a perplexity gate
    scores what is served). ``ids`` are right- or left-padded, ``attention`` 1 on real tokens."""
    batch, width = ids.shape
    valid = attention.bool()
    positions = (attention.cumsum(-1) - 1).clamp(min=0)
    columns = torch.arange(width)
    causal = columns[None, :] <= columns[:, None]
    mask = (valid[:, None, None, :] & causal) | torch.eye(width, dtype=torch.bool)  # padding sees itself
    h = _hidden(w, _fuse(w, adapter), ids, positions, 0, mask, _Cache(w, batch, width))
    targets = labels[:, 1:]
    counted = targets != -100
    logits = w.head(w.rms(h[:, :-1][counted], w.norm))
    nll = F.cross_entropy(logits, targets[counted], reduction="sum")
    return float(nll), int(counted.sum())


def decode(
    w: Weights,
    adapter: Adapter,
    ids: torch.Tensor,
    attention: torch.Tensor,
    *,
    max_new_tokens: int,
    temperature: float,
    eos: int,
    pad: int,
    stopped: Callable[[int, Sequence[int]], bool] | None = None,
    on_tokens: Callable[[torch.Tensor], bool] | None = None,
) -> torch.Tensor:
    """Generate up to ``max_new_tokens`` after the left-padded prompts ``ids`` (``attention`` 1 on real
    tokens): greedy at temperature 0, else sampled from softmax(logits / temperature). A row ends at
    ``eos`` or when ``stopped(row, new_tokens)``; ended rows are padded with ``pad``; the loop ends when
    every row has or ``on_tokens(next_tokens)`` returns False. Returns prompts + new tokens, like
    transformers' ``generate``."""
    batch, width = ids.shape
    total = width + max_new_tokens
    cache = _Cache(w, batch, total)
    valid = torch.zeros(batch, total, dtype=torch.bool)
    valid[:, :width] = attention.bool()
    columns = torch.arange(total)
    positions = (attention.cumsum(-1) - 1).masked_fill(attention == 0, 1)
    causal = columns[None, :width] <= columns[:width, None]
    mask = (valid[:, None, None, :width] & causal) | torch.eye(width, dtype=torch.bool)  # padding sees itself
    fused = _fuse(w, adapter)
    logits = _forward(w, fused, ids, positions, 0, mask, cache, prompt=True)
    next_position = positions[:, -1:] + 1
    running = torch.ones(batch, dtype=torch.bool)
    new: list[list[int]] = [[] for _ in range(batch)]
    out = [ids]
    for step in range(max_new_tokens):
        if temperature > 0:
            token = torch.multinomial(torch.softmax(logits / temperature, dim=-1), 1)[:, 0]
        else:
            token = logits.argmax(-1)
        token = torch.where(running, token, torch.full_like(token, pad))
        out.append(token[:, None])
        for row, t in enumerate(token.tolist()):
            if running[row]:
                new[row].append(t)
                if t == eos or (stopped is not None and stopped(row, new[row])):
                    running[row] = False
        if (on_tokens is not None and not on_tokens(token)) or not running.any() or step == max_new_tokens - 1:
            break
        column = width + step
        valid[:, column] = True
        logits = _forward(w, fused, token[:, None], next_position, column, valid[:, None, None, : column + 1], cache)
        next_position = next_position + 1
    return torch.cat(out, dim=1)
