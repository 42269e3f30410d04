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

Per intra-op thread count (``--threads``, default 1, 2 and 0 = auto: a pod's ``FLYWHEEL_GENERATE_THREADS``; auto
asks :class:`kinds._threads.SpareCores` before each answer, as the pod does, ``threads_used`` lists its
answers), the served dtype's forced answers again, run as the kind runs them with
``GeneratorResources(threads=N)`` (:func:`kinds._threads.torch_threads` in the thread that decodes),
``--repeats`` times per prompt, the thread counts alternated (their order reversed every other prompt): wall
p50/p95 and CPU per token (the whole process: the OpenMP threads' spinning counts) and whether the tokens equal
the first count's. ``--busy 0,1`` times them again beside that many one-thread busy loops (a fit on the same
host), the same prompts; ``--served-only`` skips the reference and the other dtypes (only the thread counts are
timed).

    .venv/bin/python -m bench.decode_speed [--tokens 64] [--prompts 6] [--before REV] [--data-dir DIR]
                                           [--threads 1,2,0] [--repeats 1] [--busy 0] [--served-only]

Last line: {"reference_cpu_ms_per_token", "decode_cpu_ms_per_token", "cpu_speedup",
"reference_wall_ms_per_token", "decode_wall_ms_per_token", "identical_greedy", "float16": {...}, "int8": {...},
"int4": {...} (each: "cpu_ms_per_token", "wall_ms_per_token", "identical_greedy", "forced_p50_ms",
"forced_p95_ms", "forced_cpu_ms_per_token", "weights_rss_mb"), "rss_mb", "prompts", "tokens", "matmul_dtype",
"torch_threads", "threads": {"N": {"forced_p50_ms", "forced_p95_ms", "forced_cpu_ms_per_token", "runs",
"identical_to_first", "threads_used"}}, "threads_beside_busy": {"B": {"N": {...}}}, "host"}; the ``decode_*``
keys are the served dtype's (null with ``--served-only``); ``weights_rss_mb`` is what building that dtype's
decode weights added to the resident set; ``threads`` is without busy loops (``--busy`` level 0).
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as `python bench/decode_speed.py`: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import contextlib
import logging
import os
import statistics
import subprocess
import time
from collections.abc import Callable, Iterator
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


@contextlib.contextmanager
def busy_loops(n: int) -> Iterator[None]:
    """``n`` one-thread busy loops (separate processes) running while the block runs: a CPU-bound neighbour
    of the pod on the same host, as a trainer's fit on one core is."""
    loops = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]
    try:
        if loops:
            time.sleep(0.3)  # running before the first timed token
        yield
    finally:
        for loop in loops:
            loop.kill()
            loop.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--prompts", type=int, default=len(PROMPTS))
    parser.add_argument("--data-dir", type=Path, default=Path(os.environ.get("FLYWHEEL_DATA_DIR", ".flywheel")))
    parser.add_argument("--before", default="", help="a git revision whose kinds/_decode.py (float16, int8) is "
                        "also timed, in this process: before/after in the same run")
    parser.add_argument("--threads", default="1,2,0", help="intra-op thread counts the served dtype's forced "
                        "answers are timed at (comma-separated; 0: auto, kinds._threads.SpareCores per answer)")
    parser.add_argument("--repeats", type=int, default=1, help="forced answers per prompt and thread count")
    parser.add_argument("--busy", default="0", help="busy loops (one-thread CPU hogs, e.g. a fit beside the pod) "
                        "run beside the thread counts' answers, per level (comma-separated, e.g. 0,1)")
    parser.add_argument("--served-only", action="store_true", help="time only the thread counts (no reference, "
                        "no other dtype)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    probe = HostProbe()

    import torch

    from bench.generate_pod import nearest_rank
    from kinds._decode import INT4, INT8, Weights, decode
    from kinds._threads import SpareCores, torch_threads
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
                 eos: int, threads: int = 1) -> tuple[torch.Tensor, float, float]:
        """Greedy up to ``--tokens`` new tokens on one path ``(decode, weights)`` as the kind runs it
        (``threads`` intra-op torch threads, the base's lock, inference mode); the output and its CPU and wall
        seconds."""
        run, weights = path
        cpu, wall = time.process_time(), time.perf_counter()
        if threads == 0:  # auto: what a pod with FLYWHEEL_GENERATE_THREADS=0 asks before each generation
            chosen.append(spare())
        with torch_threads(threads or chosen[-1]), base.lock, torch.inference_mode():
            out = run(weights, model._lora(), ids, mask, max_new_tokens=args.tokens, temperature=0.0, eos=eos,
                      pad=base.tokenizer.pad_token_id)
        if threads == 0:  # as the kind reports a served call's time
            spare.observe(chosen[-1], out.shape[1] - ids.shape[1], time.perf_counter() - wall)
        return out, time.process_time() - cpu, time.perf_counter() - wall

    served = _decode_weights(base)
    served_name = {INT8: "int8", INT4: "int4"}.get(served.dtype, "float16")
    thread_counts = [int(t) for t in args.threads.split(",") if t.strip()]
    spare, chosen = SpareCores(len(os.sched_getaffinity(0))), [0]
    spare()  # a pod's first call is its warm-up generation (untimed): the window of the first timed answer starts here
    paths: dict[str, tuple[Callable[..., torch.Tensor], Any]] = {}
    rss_mb = {}
    levels = [int(b) for b in args.busy.split(",") if b.strip()]
    if args.before and not args.served_only:  # an earlier revision's decode loop, in this process (its own weights)
        before = _module_at(args.before, "kinds/_decode.py")
        for name, dtype in (("float16", torch.float16), ("int8", before.INT8)):
            paths[f"before_{name}"] = (before.decode, before.Weights(base.model, dtype))
    for name, dtype in (("float16", torch.float16), ("int8", INT8), ("int4", INT4)):
        if args.served_only and name != served_name:
            continue
        rss = _rss_mb()
        paths[name] = (decode, Weights(base.model, dtype))
        rss_mb[name] = round(_rss_mb() - rss, 1)  # what one copy of the decode weights adds to the process
    ref_cpu, ref_wall = [], []
    runs: dict[str, dict[str, list[Any]]] = {name: {"cpu": [], "wall": [], "same": [], "forced": [], "forced_cpu": []}
                                             for name in paths}
    per_threads: dict[tuple[int, int], dict[str, list[Any]]] = {
        (b, t): {"forced": [], "forced_cpu": [], "same": [], "chosen": []} for b in levels for t in thread_counts}
    eos = base.tokenizer.eos_token_id
    for index, (prompt, context, persona) in enumerate(PROMPTS[:args.prompts]):
        ids, mask = _left_padded([model._prompt_ids(Prompt(prompt, context, persona))], base.tokenizer.pad_token_id)
        model._run_generate(ids, mask, 2, 0.0, (), None)  # warm
        outs: list[tuple[tuple[int, int], torch.Tensor]] = []
        for busy in levels:
            with busy_loops(busy):
                for _ in range(args.repeats):
                    for threads in thread_counts if index % 2 == 0 else thread_counts[::-1]:
                        out, cpu_s, wall_s = run_path(paths[served_name], ids, mask, -1, threads)
                        assert out.shape[1] == ids.shape[1] + args.tokens
                        record = per_threads[(busy, threads)]
                        record["chosen"].append(chosen[-1] if threads == 0 else threads)
                        record["forced"].append(wall_s * 1000)
                        record["forced_cpu"].append(cpu_s * 1000 / args.tokens)
                        outs.append(((busy, threads), out))
        first = next(out for key, out in outs if key[1] == thread_counts[0])  # every answer against it
        for key, out in outs:
            per_threads[key]["same"].append(bool(torch.equal(out, first)))
        if args.served_only:
            continue
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
    per_dtype = {} if args.served_only else {name: {"cpu_ms_per_token": round(statistics.median(run["cpu"]), 1),
                        "wall_ms_per_token": round(statistics.median(run["wall"]), 1),
                        "cpu_speedup": round(statistics.median(
                            r / n for r, n in zip(ref_cpu, run["cpu"], strict=True)), 2),
                        "identical_greedy": run["same"],
                        "forced_p50_ms": round(statistics.median(run["forced"]), 1),
                        "forced_p95_ms": round(nearest_rank(run["forced"], 0.95), 1),
                        "forced_cpu_ms_per_token": round(statistics.median(run["forced_cpu"]), 1),
                        **({"weights_rss_mb": rss_mb[name]} if name in rss_mb else {})}
                 for name, run in runs.items()}
    by_threads = {b: {str(t): {"forced_p50_ms": round(statistics.median(run["forced"]), 1),
                               "forced_p95_ms": round(nearest_rank(run["forced"], 0.95), 1),
                               "forced_cpu_ms_per_token": round(statistics.median(run["forced_cpu"]), 1),
                               "runs": len(run["forced"]), "identical_to_first": all(run["same"]),
                               "threads_used": run["chosen"]}
                      for (level, t), run in per_threads.items() if level == b} for b in levels}
    served_keys = per_dtype.get(served_name, {})
    result: dict[str, Any] = {
        "reference_cpu_ms_per_token": round(statistics.median(ref_cpu), 1) if ref_cpu else None,
        "decode_cpu_ms_per_token": served_keys.get("cpu_ms_per_token"),
        "cpu_speedup": served_keys.get("cpu_speedup"),
        "reference_wall_ms_per_token": round(statistics.median(ref_wall), 1) if ref_wall else None,
        "decode_wall_ms_per_token": served_keys.get("wall_ms_per_token"),
        "identical_greedy": served_keys.get("identical_greedy"), **per_dtype,
        "rss_mb": round(_rss_mb(), 1), "prompts": args.prompts, "tokens": args.tokens, "before": args.before,
        "matmul_dtype": served_name, "torch_threads": 1, "threads": by_threads.get(0, {}),
        "threads_beside_busy": {str(b): by for b, by in by_threads.items() if b}}
    emit(result, probe)


if __name__ == "__main__":
    main()
