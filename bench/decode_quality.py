"""What the decode loop's product dtype does to a trained ``smollm2-lora`` adapter's gate scores on the real
SmolLM2-135M base (issue 20): one adapter, fitted on chatterbot-corpus pairs, scored on held-out pairs with
the decode weights in float32, float16, weight-only int8 (:data:`kinds._decode.INT8`) and weight-only 4-bit
in groups of 32 (:data:`kinds._decode.INT4`, what the kind serves on SmolLM2 by default) in turn: the
perplexity (the kind's, computed by the decode loop's forward pass), the weighted BLEU/ROUGE-L-precision score
of greedy answers (``generate``, batches of 8) and how many answers are token-for-token the float32 ones; also
the peft model's float32 perplexity (the reference), and the CPU ms per new token of each dtype (one torch
thread; greedy; the answers end at their end-of-turn token).

    .venv/bin/python -m bench.decode_quality [--train 64] [--steps 16] [--holdout 48] [--data-dir DIR]

Last line: {"dtypes": {"float32"|"float16"|"int8"|"int4": {"perplexity", "score", "same_answers",
"cpu_ms_per_token"}}, "reference_perplexity", "train_pairs", "steps", "holdout_pairs", "host"}.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as `python bench/decode_quality.py`: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import logging
import os
import random
import time
from typing import Any

from bench._host import HostProbe, emit


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--train", type=int, default=64)
    parser.add_argument("--steps", type=int, default=16)
    parser.add_argument("--holdout", type=int, default=48)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-dir", type=Path, default=Path(os.environ.get("FLYWHEEL_DATA_DIR", "data")))
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    probe = HostProbe()

    import torch

    from kinds import smollm2_lora
    from kinds._decode import INT4, INT8, Weights
    from kinds.base_models import SMOLLM2, load_base
    from kinds.generation import GeneratorResources
    from kinds.smollm2_lora import SmolLM2LoRA
    from trainer.dialogue_data import chatterbot_pairs
    from trainer.gates.generation_metrics import weighted_score

    torch.set_num_threads(1)
    pairs = [p.pair for p in chatterbot_pairs()]
    random.Random(args.seed).shuffle(pairs)
    holdout, train = pairs[:args.holdout], pairs[args.holdout:args.holdout + args.train]
    base = load_base(SMOLLM2, args.data_dir)
    model = SmolLM2LoRA(max_steps=args.steps, batch_size=4, seed=args.seed).bind(GeneratorResources(base))
    model.fit(train)
    references = [p.response for p in holdout]
    result: dict[str, Any] = {"reference_perplexity": round(model._reference_perplexity(holdout), 4)}
    answers: dict[str, list[str]] = {}
    dtypes = {"float32": torch.float32, "float16": torch.float16, "int8": INT8, "int4": INT4}
    scores: dict[str, Any] = {}
    for name, dtype in dtypes.items():
        with base.lock:
            smollm2_lora._weights.setdefault(base, {})["auto"] = Weights(base.model, dtype)
        perplexity = model.perplexity(holdout)
        cpu = time.process_time()
        texts, tokens = [], 0
        for start in range(0, len(holdout), 8):
            out = model.generate([p.prompt for p in holdout[start:start + 8]], max_new_tokens=args.max_new_tokens)
            texts += [g.text.strip() for g in out]
            tokens += sum(g.completion_tokens for g in out)
        cpu_ms = (time.process_time() - cpu) * 1000 / max(1, tokens)
        answers[name] = texts
        scores[name] = {"perplexity": round(perplexity, 4), "score": round(weighted_score(texts, references), 4),
                        "same_answers": sum(a == b for a, b in zip(texts, answers["float32"], strict=True)),
                        "cpu_ms_per_token": round(cpu_ms, 1)}
        print(name, scores[name], flush=True)
    del smollm2_lora._weights[base]["auto"]  # back to the kind's own choice
    result.update(dtypes=scores, served=str(smollm2_lora._decode_dtype(base)).removeprefix("torch."),
                  train_pairs=len(train), steps=args.steps, holdout_pairs=len(holdout),
                  max_new_tokens=args.max_new_tokens, torch_threads=1)
    emit(result, probe)


if __name__ == "__main__":
    main()
