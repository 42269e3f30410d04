"""What the MiniLM encoder precisions cost in accuracy and buy in CPU (``minilm-head`` param ``precision``).

A ``minilm-head`` (default params) is trained on the same 1,500 vader_movies rows as ``bench/serve.py`` at
each precision and scored on held-out rows: 2,000 other vader_movies rows, 1,500 vader_tweets and 1,500
vader_products rows (other domains). Also: the cosine of each precision's vectors to fp32's on 500
held-out texts, and the CPU time per text of one-text encodes (one torch thread).

    .venv/bin/python bench/encoder_precision.py

Last line: {"<precision>": {"accuracy": {domain: acc}, "cosine_mean", "cosine_min", "cpu_ms_per_text"}}.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as `python bench/encoder_precision.py`: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import csv
import random
import time
from typing import Any

import numpy as np
import torch

from bench._host import HostProbe, emit
from kinds.embeddings import Embedder, MemoryEmbeddingCache
from kinds.encoder import PRECISIONS, Encoder
from kinds.minilm import MiniLMHead

DATA = Path(__file__).resolve().parents[1] / "data"


def rows(name: str) -> list[tuple[str, str]]:
    with (DATA / f"{name}.csv").open(newline="", encoding="utf-8") as fh:
        return [(r["text"], r["label3"]) for r in csv.DictReader(fh)]


def main() -> None:
    probe = HostProbe()
    torch.set_num_threads(1)
    movies = rows("vader_movies")
    random.Random(7).shuffle(movies)  # the training split of bench/serve.py
    train = movies[:1500]
    held_out = {"movies": movies[1500:3500], "tweets": rows("vader_tweets")[:1500],
                "products": rows("vader_products")[:1500]}
    probe = [t for t, _ in held_out["tweets"][:250] + held_out["products"][:250]]
    report: dict[str, Any] = {}
    reference: np.ndarray[Any, Any] | None = None
    for precision in PRECISIONS:
        encoder = Encoder(precision=precision, threads=1)  # type: ignore[arg-type]
        head = MiniLMHead(precision=precision).use(Embedder(encoder, MemoryEmbeddingCache()))  # type: ignore[arg-type]
        head.fit([t for t, _ in train], [y for _, y in train])
        accuracy = {domain: round(float(np.mean([p == y for p, (_, y) in zip(
            head.predict([t for t, _ in found]), found, strict=True)])), 4) for domain, found in held_out.items()}
        vectors = encoder.encode(probe)
        reference = vectors if reference is None else reference
        cosine = (reference * vectors).sum(axis=1)
        started = time.process_time()
        for text in probe[:200]:
            encoder.encode([text])
        cpu_ms = (time.process_time() - started) / 200 * 1000
        report[precision] = {"accuracy": accuracy, "cosine_mean": round(float(cosine.mean()), 4),
                             "cosine_min": round(float(cosine.min()), 4), "cpu_ms_per_text": round(cpu_ms, 2)}
        sys.stdout.write(f"{precision}: {report[precision]}\n")
        sys.stdout.flush()
    emit(report, probe)


if __name__ == "__main__":
    main()
