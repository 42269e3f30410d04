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


@dataclass(frozen=True)
class _Layer:
    norm_in: torch.Tensor
    qkv: Any
    o: Any
    norm_post: torch.Tensor
    gate_up: Any
    down: Any


class Weights:
    """The base's decode weights: q/k/v and gate/up concatenated, every product's weight in
    ``matmul_dtype`` (float32, float16, bfloat16, or :data:`INT8`: int8 values and per-row scales);
    embeddings, norms and rotary frequencies in float32."""

    def __init__(self, model: Any, matmul_dtype: torch.dtype = torch.float32) -> None:
        config, inner = model.config, model.model
        self.dtype = matmul_dtype
        convert = _int8_weight if matmul_dtype == INT8 else (lambda t: t.to(matmul_dtype).contiguous())
        self.heads, self.kv_heads = config.num_attention_heads, config.num_key_value_heads
        self.head_dim = getattr(config, "head_dim", None) or config.hidden_size // self.heads
        self.eps = float(config.rms_norm_eps)
        self.embed = inner.embed_tokens.weight.detach()
        self.head = convert(_linear(model.lm_head).weight.detach())
        self.norm = inner.norm.weight.detach()
        self.inv_freq = inner.rotary_emb.inv_freq.detach().float()
        self.rope_scale = float(getattr(inner.rotary_emb, "attention_scaling", 1.0))

        def cat(*modules: Any) -> Any:
            return convert(torch.cat([_linear(m).weight.detach() for m in modules]))

        self.layers = [
            _Layer(
                layer.input_layernorm.weight.detach(),
                cat(layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj),
                cat(layer.self_attn.o_proj),
                layer.post_attention_layernorm.weight.detach(),
                cat(layer.mlp.gate_proj, layer.mlp.up_proj),
                cat(layer.mlp.down_proj),
            )
            for layer in inner.layers
        ]

    def mm(self, x: torch.Tensor, weight: Any) -> torch.Tensor:
        if self.dtype == torch.float32:
            return F.linear(x, weight)
        if self.dtype == INT8:
            values, scale = weight
            rows = x.reshape(-1, x.shape[-1]).to(torch.bfloat16).contiguous()
            return torch._weight_int8pack_mm(rows, values, scale).float().reshape(*x.shape[:-1], -1)
        return F.linear(x.to(self.dtype), weight).float()

    def rms(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        return weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps))


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
    adapter: Adapter,
    ids: torch.Tensor,
    positions: torch.Tensor,
    start: int,
    mask: torch.Tensor,
    cache: _Cache,
) -> torch.Tensor:
    """float32 logits of the last position, for ``ids`` ([batch, steps]) written at cache columns
    ``start:start+steps``; ``mask`` [batch, 1, steps, start+steps] says which columns each may see."""
    h = _hidden(w, adapter, ids, positions, start, mask, cache)
    return w.mm(w.rms(h[:, -1], w.norm), w.head)


def _hidden(
    w: Weights,
    adapter: Adapter,
    ids: torch.Tensor,
    positions: torch.Tensor,
    start: int,
    mask: torch.Tensor,
    cache: _Cache,
) -> torch.Tensor:
    """The residual stream after the last layer (before the final norm), every position: ``_forward``'s
    body."""
    batch, steps = ids.shape
    end = start + steps
    h = F.embedding(ids, w.embed)
    freqs = positions[..., None].float() * w.inv_freq
    emb = torch.cat((freqs, freqs), dim=-1)[:, None]
    cos, sin = emb.cos() * w.rope_scale, emb.sin() * w.rope_scale
    nq, nkv, d = w.heads * w.head_dim, w.kv_heads * w.head_dim, w.head_dim
    for i, layer in enumerate(w.layers):
        x = w.rms(h, layer.norm_in)
        qkv = w.mm(x, layer.qkv)
        q, k, v = qkv[..., :nq], qkv[..., nq : nq + nkv], qkv[..., nq + nkv :]
        lora = adapter.get(i)
        if lora is not None:
            (aq, bq), (av, bv), scale = lora
            q = q + F.linear(F.linear(x, aq), bq) * scale
            v = v + F.linear(F.linear(x, av), bv) * scale
        q = _rotate(q.view(batch, steps, w.heads, d).transpose(1, 2), cos, sin)
        cache.k[i][:, :, start:end] = _rotate(k.view(batch, steps, w.kv_heads, d).transpose(1, 2), cos, sin)
        cache.v[i][:, :, start:end] = v.view(batch, steps, w.kv_heads, d).transpose(1, 2)
        attn = F.scaled_dot_product_attention(
            q,
            cache.k[i][:, :, :end],
            cache.v[i][:, :, :end],
            attn_mask=mask,
            scale=d**-0.5,
            enable_gqa=w.heads != w.kv_heads,
        )
        h = h + w.mm(attn.transpose(1, 2).reshape(batch, steps, nq), layer.o)
        gate, up = w.mm(w.rms(h, layer.norm_post), layer.gate_up).chunk(2, dim=-1)
        h = h + w.mm(F.silu(gate) * up, layer.down)
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
    h = _hidden(w, adapter, ids, positions, 0, mask, _Cache(w, batch, width))
    targets = labels[:, 1:]
    counted = targets != -100
    logits = w.mm(w.rms(h[:, :-1][counted], w.norm), w.head)
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
    logits = _forward(w, adapter, ids, positions, 0, mask, cache)
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
        logits = _forward(w, adapter, token[:, None], next_position, column, valid[:, None, None, : column + 1], cache)
        next_position = next_position + 1
    return torch.cat(out, dim=1)
