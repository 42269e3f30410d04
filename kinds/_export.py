"""The child process of ``Encoder(isolated=True)``: build the encoder (transformers, quantisation,
trace) and save its TorchScript, so that the parent never imports transformers' model code.

    python -m kinds._export <model_dir> <precision> <out.pt>
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import cast

import torch

from kinds.encoder import TORCH_PRECISIONS, Precision, build


def main(argv: list[str]) -> int:
    model_dir, precision, out = Path(argv[0]), argv[1], Path(argv[2])
    if precision not in ("fp32", *TORCH_PRECISIONS):
        sys.stderr.write(f"unknown precision {precision!r}\n")
        return 2
    model = build(model_dir, cast(Precision, precision))
    if not isinstance(model, torch.jit.ScriptModule):
        sys.stderr.write("the encoder could not be traced\n")
        return 1
    torch.jit.save(model, str(out))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
