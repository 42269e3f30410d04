"""What the MiniLM encoder precisions cost in accuracy and buy in CPU (``minilm-head`` param ``precision``).

At each precision a ``minilm-head`` (default params, trained at that precision) is scored on held-out rows:

- trained on the same 1,500 vader_movies rows as ``bench/serve.py``, scored on every other vader_movies row
  and on all of vader_tweets and vader_products (three labels; two of them other domains);
- trained on uci_imdb (1,000 movie sentences, two labels), scored on uci_amazon and uci_yelp (other domains).

Each precision's accuracy is compared with fp32's on the same rows, paired: the difference and its 95%
interval (normal approximation over the rows where exactly one of the two is right), per domain and over all
five, and the share of rows whose predicted label equals fp32's. Also: the cosine of each precision's vectors
to fp32's on 500 held-out texts, and the CPU time per text of one-text encodes (one thread).

    .venv/bin/python bench/encoder_precision.py [--precisions fp32,int8-pc]

Last line: {"<precision>": {"accuracy": {domain: acc}, "vs_fp32": {domain: {"diff", "ci95", "agree"}},
"cosine_mean", "cosine_min", "cpu_ms_per_text"}}.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as `python bench/encoder_precision.py`: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import csv
import math
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


def rows(name: str, label: str = "label3") -> list[tuple[str, str]]:
    """(text, label) of ``data/<name>.csv``; the uci files' labels are in ``label``."""
    with (DATA / f"{name}.csv").open(newline="", encoding="utf-8") as fh:
        return [(r["text"], r[label]) for r in csv.DictReader(fh)]


def paired(right: np.ndarray[Any, Any], reference: np.ndarray[Any, Any]) -> dict[str, Any]:
    """Accuracy difference of ``right`` over ``reference`` (booleans, the same rows) and its 95% interval."""
    n = len(right)
    gained, lost = int(np.sum(right & ~reference)), int(np.sum(~right & reference))
    diff = (gained - lost) / n
    se = math.sqrt(max(gained + lost - (gained - lost) ** 2 / n, 0.0)) / n
    return {"diff": round(diff, 4), "ci95": [round(diff - 1.96 * se, 4), round(diff + 1.96 * se, 4)], "rows": n}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--precisions", default=",".join(PRECISIONS),
                        help="comma-separated; fp32 is always measured (the reference)")
    asked = ["fp32", *(p for p in parser.parse_args().precisions.split(",") if p != "fp32")]
    if unknown := [p for p in asked if p not in PRECISIONS]:
        parser.error(f"unknown precisions {unknown}; known: {list(PRECISIONS)}")
    probe = HostProbe()
    torch.set_num_threads(1)
    movies = rows("vader_movies")
    random.Random(7).shuffle(movies)  # the training split of bench/serve.py
    tasks = [(movies[:1500], {"movies": movies[1500:], "tweets": rows("vader_tweets"),
                              "products": rows("vader_products")}),
             (rows("uci_imdb", "label"), {"amazon": rows("uci_amazon", "label"), "yelp": rows("uci_yelp", "label")})]
    texts_probe = [t for t, _ in rows("vader_tweets")[:250] + rows("vader_products")[:250]]
    report: dict[str, Any] = {}
    reference: dict[str, Any] = {}
    for precision in asked:
        at = Encoder(precision=precision, threads=1)  # type: ignore[arg-type]
        right: dict[str, np.ndarray[Any, Any]] = {}
        predicted: dict[str, list[str]] = {}
        for train, held_out in tasks:
            head = MiniLMHead(precision=precision).use(Embedder(at, MemoryEmbeddingCache()))  # type: ignore[arg-type]
            head.fit([t for t, _ in train], [y for _, y in train])
            for domain, found in held_out.items():
                predicted[domain] = head.predict([t for t, _ in found])
                right[domain] = np.array([p == y for p, (_, y) in zip(predicted[domain], found, strict=True)])
        encoder = head.embedder.encoder  # what the head embeds with (int8-pc: its quantised ONNX graph)
        vectors = encoder.encode(texts_probe)
        if precision == "fp32":
            reference = {"vectors": vectors, "right": right, "predicted": predicted}
        cosine = (reference["vectors"] * vectors).sum(axis=1)
        started = time.process_time()
        for text in texts_probe[:200]:
            encoder.encode([text])
        cpu_ms = (time.process_time() - started) / 200 * 1000
        versus = {domain: {**paired(right[domain], reference["right"][domain]),
                           "agree": round(float(np.mean([a == b for a, b in zip(
                               predicted[domain], reference["predicted"][domain], strict=True)])), 4)}
                  for domain in right}
        versus["all"] = paired(np.concatenate(list(right.values())), np.concatenate(list(reference["right"].values())))
        report[precision] = {"accuracy": {d: round(float(r.mean()), 4) for d, r in right.items()}, "vs_fp32": versus,
                             "cosine_mean": round(float(cosine.mean()), 4), "cosine_min": round(float(cosine.min()), 4),
                             "cpu_ms_per_text": round(cpu_ms, 2)}
        sys.stdout.write(f"{precision}: {report[precision]}\n")
        sys.stdout.flush()
    emit(report, probe)


if __name__ == "__main__":
    main()
