"""Per-token generation speed of ``smollm2-lora`` on the real SmolLM2-135M base, before and after the decode loop
(:mod:`kinds._decode`), in one process: transformers' ``generate`` on the peft model (the reference) and the
decode loop with float16 products (``precision="float16"``), weight-only int8 (``precision="int8"``,
:data:`kinds._decode.INT8`) and weight-only 4-bit in groups of 32 (``precision="int4"``,
:data:`kinds._decode.INT4`, what the kind serves on SmolLM2 by default), alternated per prompt, greedy, one
torch thread, with a LoRA adapter whose B matrices are non-zero (so the adapter is on the path). Reported per
path: CPU and wall ms per new token (medians over the prompts; the answers end at their end-of-turn token),
whether each greedy answer was token-for-token the reference's, and per decode dtype the wall and CPU time of
exactly 64 forced new tokens (the end-of-turn token ignored: the issue's "64 new tokens"), p50 and p95 over
the prompts.

    .venv/bin/python -m bench.decode_speed [--tokens 64] [--prompts 6] [--before REV] [--data-dir DIR]

Last line: {"reference_cpu_ms_per_token", "decode_cpu_ms_per_token", "cpu_speedup",
"reference_wall_ms_per_token", "decode_wall_ms_per_token", "identical_greedy", "float16": {...}, "int8":
{...}, "int4": {...} (each: "cpu_ms_per_token", "wall_ms_per_token", "identical_greedy", "forced_p50_ms",
"forced_p95_ms", "forced_cpu_ms_per_token", "weights_rss_mb"), "rss_mb", "prompts", "tokens", "matmul_dtype",
"torch_threads", "host"}; the ``decode_*`` keys are the served dtype's; ``weights_rss_mb`` is what building
that dtype's decode weights added to the resident set.
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


def _rss_mb() -> float:
    """This process's resident set (MB), from /proc/self/status."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _module_at(revision: str, path: str) -> Any:
    """The module ``path`` of this repository as it was at git ``revision``, loaded under its own name."""
    import subprocess
    import types

    root = Path(__file__).resolve().parents[1]
    source = subprocess.run(["git", "show", f"{revision}:{path}"], cwd=root, check=True, capture_output=True,
                            text=True).stdout
    name = f"_before_{revision}_{Path(path).stem}".replace("-", "_").replace(".", "_")
    module = types.ModuleType(name)
    sys.modules[name] = module  # dataclasses look their module up
    exec(compile(source, f"{revision}:{path}", "exec"), module.__dict__)
    return module


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--prompts", type=int, default=len(PROMPTS))
    parser.add_argument("--data-dir", type=Path, default=Path(os.environ.get("FLYWHEEL_DATA_DIR", "data")))
    parser.add_argument("--before", default="", help="a git revision whose kinds/_decode.py (float16, int8) is "
                        "also timed, in this process: before/after in the same run")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    probe = HostProbe()

    import torch

    from bench.generate_pod import nearest_rank
    from kinds._decode import INT4, INT8, Weights, decode
    from kinds._threads import one_torch_thread
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

    def run_path(path: tuple[Callable[..., torch.Tensor], Any], ids: torch.Tensor, mask: torch.Tensor,
                 eos: int) -> tuple[torch.Tensor, float, float]:
        """Greedy up to ``--tokens`` new tokens on one path ``(decode, weights)`` as the kind runs it (one
        torch thread, the base's lock, inference mode); the output and its CPU and wall seconds."""
        run, weights = path
        cpu, wall = time.process_time(), time.perf_counter()
        with one_torch_thread(), base.lock, torch.inference_mode():
            out = run(weights, model._lora(), ids, mask, max_new_tokens=args.tokens, temperature=0.0, eos=eos,
                      pad=base.tokenizer.pad_token_id)
        return out, time.process_time() - cpu, time.perf_counter() - wall

    served = _decode_weights(base)
    paths: dict[str, tuple[Callable[..., torch.Tensor], Any]] = {}
    rss_mb = {}
    if args.before:  # the decode loop of an earlier revision, in this process (its weights built by its own code)
        before = _module_at(args.before, "kinds/_decode.py")
        for name, dtype in (("float16", torch.float16), ("int8", before.INT8)):
            paths[f"before_{name}"] = (before.decode, before.Weights(base.model, dtype))
    for name, dtype in (("float16", torch.float16), ("int8", INT8), ("int4", INT4)):
        rss = _rss_mb()
        paths[name] = (decode, Weights(base.model, dtype))
        rss_mb[name] = round(_rss_mb() - rss, 1)  # what one copy of the decode weights adds to the process
    ref_cpu, ref_wall = [], []
    runs: dict[str, dict[str, list[Any]]] = {name: {"cpu": [], "wall": [], "same": [], "forced": [], "forced_cpu": []}
                                             for name in paths}
    eos = base.tokenizer.eos_token_id
    for prompt, context, persona in PROMPTS[:args.prompts]:
        ids, mask = _left_padded([model._prompt_ids(Prompt(prompt, context, persona))], base.tokenizer.pad_token_id)
        model._run_generate(ids, mask, 2, 0.0, (), None)  # warm
        cpu, wall = time.process_time(), time.perf_counter()
        ref = model._reference_generate(ids, mask, args.tokens, 0.0, ())
        new_tokens = max(1, ref.shape[1] - ids.shape[1])
        ref_cpu.append((time.process_time() - cpu) * 1000 / new_tokens)
        ref_wall.append((time.perf_counter() - wall) * 1000 / new_tokens)
        for name, path in paths.items():
            run = runs[name]
            out, cpu_s, wall_s = run_path(path, ids, mask, eos)  # ends at the end-of-turn token
            new_tokens = max(1, out.shape[1] - ids.shape[1])
            run["cpu"].append(cpu_s * 1000 / new_tokens)
            run["wall"].append(wall_s * 1000 / new_tokens)
            run["same"].append(bool(ref.shape == out.shape and torch.equal(ref, out)))
            out, cpu_s, wall_s = run_path(path, ids, mask, -1)  # exactly --tokens new tokens: the figure
            assert out.shape[1] == ids.shape[1] + args.tokens
            run["forced"].append(wall_s * 1000)
            run["forced_cpu"].append(cpu_s * 1000 / args.tokens)
    per_dtype = {name: {"cpu_ms_per_token": round(statistics.median(run["cpu"]), 1),
                        "wall_ms_per_token": round(statistics.median(run["wall"]), 1),
                        "cpu_speedup": round(statistics.median(
                            r / n for r, n in zip(ref_cpu, run["cpu"], strict=True)), 2),
                        "identical_greedy": run["same"],
                        "forced_p50_ms": round(statistics.median(run["forced"]), 1),
                        "forced_p95_ms": round(nearest_rank(run["forced"], 0.95), 1),
                        "forced_cpu_ms_per_token": round(statistics.median(run["forced_cpu"]), 1),
                        **({"weights_rss_mb": rss_mb[name]} if name in rss_mb else {})}
                 for name, run in runs.items()}
    name = {INT8: "int8", INT4: "int4"}.get(served.dtype, "float16")
    result: dict[str, Any] = {
        "reference_cpu_ms_per_token": round(statistics.median(ref_cpu), 1),
        "decode_cpu_ms_per_token": per_dtype[name]["cpu_ms_per_token"],
        "cpu_speedup": per_dtype[name]["cpu_speedup"],
        "reference_wall_ms_per_token": round(statistics.median(ref_wall), 1),
        "decode_wall_ms_per_token": per_dtype[name]["wall_ms_per_token"],
        "identical_greedy": per_dtype[name]["identical_greedy"], **per_dtype,
        "rss_mb": round(_rss_mb(), 1), "prompts": len(ref_cpu), "tokens": args.tokens, "before": args.before,
        "matmul_dtype": name, "torch_threads": 1}
    emit(result, probe)


if __name__ == "__main__":
    main()
