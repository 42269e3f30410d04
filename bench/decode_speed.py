"""Per-token generation speed of ``smollm2-lora`` on the real SmolLM2-135M base, before and after the
decode loop (:mod:`kinds._decode`), in one process: transformers' ``generate`` on the peft model (the
reference) and the decode loop, alternated per prompt, greedy, one torch thread, with a LoRA adapter whose
B matrices are non-zero (so the adapter is on the path). Reported per path: CPU and wall ms per new token
(medians over the prompts), and whether every greedy answer was token-for-token the reference's.

    .venv/bin/python bench/decode_speed.py [--tokens 64] [--prompts 6] [--data-dir DIR]

Last line: {"reference_cpu_ms_per_token", "decode_cpu_ms_per_token", "cpu_speedup", "reference_wall_ms_per_token",
"decode_wall_ms_per_token", "identical_greedy", "prompts", "tokens", "matmul_dtype", "torch_threads", "host"}.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as `python bench/decode_speed.py`: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import logging
import os
import statistics
import time
from collections.abc import Callable
from typing import Any

from bench._host import HostProbe, emit

PROMPTS = [("Tell me a long story about a dragon and a knight.", None, None),
           ("What is your favourite colour?", "The player is in a tavern.", "You are Bob the innkeeper."),
           ("How do I cook rice?", None, None),
           ("Where can I buy a sword?", "A village square at noon.", "A blacksmith"),
           ("Explain how rain forms.", None, None),
           ("What happened to the old mill?", "The mill burned down last winter.", "An old farmer")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--prompts", type=int, default=len(PROMPTS))
    parser.add_argument("--data-dir", type=Path, default=Path(os.environ.get("FLYWHEEL_DATA_DIR", "data")))
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    probe = HostProbe()

    import torch

    from kinds.base_models import SMOLLM2, load_base
    from kinds.generation import GeneratorResources, Pair, Prompt
    from kinds.smollm2_lora import SmolLM2LoRA, _decode_weights, _left_padded

    torch.set_num_threads(1)
    base = load_base(SMOLLM2, args.data_dir)
    model = SmolLM2LoRA(max_steps=1, batch_size=2, seed=1).bind(GeneratorResources(base))
    model.fit([Pair(Prompt("Hello there"), "Hi! How are you?"),
               Pair(Prompt("What is AI?"), "Artificial intelligence.")])
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, tensor in model._adapter_state().items():
            if "lora_B" in name:
                tensor.copy_(torch.randn(tensor.shape, generator=generator) * 0.02)

    def timed(run: Callable[..., torch.Tensor], ids: torch.Tensor, mask: torch.Tensor, *extra: Any
              ) -> tuple[torch.Tensor, float, float]:
        width = ids.shape[1]
        cpu, wall = time.process_time(), time.perf_counter()
        out = run(ids, mask, args.tokens, 0.0, (), *extra)
        new = max(1, out.shape[1] - width)
        return out, (time.process_time() - cpu) * 1000 / new, (time.perf_counter() - wall) * 1000 / new

    ref_cpu, ref_wall, new_cpu, new_wall, same = [], [], [], [], []
    for prompt, context, persona in PROMPTS[:args.prompts]:
        ids, mask = _left_padded([model._prompt_ids(Prompt(prompt, context, persona))], base.tokenizer.pad_token_id)
        model._run_generate(ids, mask, 2, 0.0, (), None)  # warm (the decode weights are built once per base)
        ref, c, w = timed(model._reference_generate, ids, mask)
        ref_cpu.append(c)
        ref_wall.append(w)
        new, c, w = timed(model._run_generate, ids, mask, None)
        new_cpu.append(c)
        new_wall.append(w)
        same.append(bool(ref.shape == new.shape and torch.equal(ref, new)))
    result: dict[str, Any] = {
        "reference_cpu_ms_per_token": round(statistics.median(ref_cpu), 1),
        "decode_cpu_ms_per_token": round(statistics.median(new_cpu), 1),
        "cpu_speedup": round(statistics.median(r / n for r, n in zip(ref_cpu, new_cpu, strict=True)), 2),
        "reference_wall_ms_per_token": round(statistics.median(ref_wall), 1),
        "decode_wall_ms_per_token": round(statistics.median(new_wall), 1),
        "identical_greedy": same, "prompts": len(same), "tokens": args.tokens,
        "matmul_dtype": str(_decode_weights(base).dtype).removeprefix("torch."), "torch_threads": 1}
    emit(result, probe)


if __name__ == "__main__":
    main()
