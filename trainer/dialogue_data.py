"""Dialogue pairs from the two offline corpora the venv ships, as :class:`~kinds.generation.Pair` s with
their topic and date kept (so drift can be simulated by topic or by time).

- ``chitchat-dataset`` 0.9.0 (MIT licence): ``chitchat_dataset/dataset.json``, 7,168 conversations of
  informal open-domain chat (April-November 2018), each opened by one of ~36 topic prompts. A turn is the
  consecutive messages of one sender, joined with spaces; every pair of consecutive turns is a pair
  (the earlier turn is the prompt, the later the response), dated by the response's first message.
- ``chatterbot-corpus`` 1.3.3 (BSD licence per its metadata): ``chatterbot_corpus/data/english/*.yml``,
  assistant-style conversations by category (the file name is the topic: ai, trivia, emotion, ...);
  consecutive lines of a conversation are a pair. Exact duplicate pairs are dropped (``tech_support.yml``
  repeats 10 pairs 105 times).

The packages are located with ``importlib.util.find_spec`` and read as data files (never imported).
"""

from __future__ import annotations

import importlib.util
import itertools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from kinds.generation import Pair, Prompt
from trainer.exceptions import TrainerError

CHITCHAT, CHATTERBOT = "chitchat", "chatterbot"
LICENCES = {CHITCHAT: "MIT (chitchat-dataset 0.9.0)", CHATTERBOT: "BSD (chatterbot-corpus 1.3.3)"}


class DialogueDataError(TrainerError):
    """A dialogue corpus is not installed or not readable."""


@dataclass(frozen=True, slots=True)
class DialoguePair:
    """One pair and where it came from: ``source`` (chitchat / chatterbot), ``topic`` (the conversation's
    topic prompt, or the corpus category), ``date`` (ISO 8601 of the response, chitchat only) and
    ``conversation`` (its id)."""

    pair: Pair
    source: str
    topic: str
    date: str | None
    conversation: str


def package_dir(package: str) -> Path:
    spec = importlib.util.find_spec(package)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    if not locations:
        raise DialogueDataError(f"package {package!r} is not installed")
    return Path(locations[0])


def chitchat_pairs(path: Path | None = None, *, max_chars: int = 2000) -> list[DialoguePair]:
    """Every consecutive-turn pair of chitchat-dataset (turns longer than ``max_chars`` are skipped)."""
    path = path or package_dir("chitchat_dataset") / "dataset.json"
    try:
        data: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise DialogueDataError(f"cannot read {path}: {exc}") from exc
    pairs: list[DialoguePair] = []
    for conversation, record in data.items():
        topic = str(record.get("prompt") or "none")
        turns = [(" ".join(str(m.get("text", "")).strip() for m in turn).strip(), turn[0].get("timestamp"))
                 for turn in record.get("messages", []) if turn]
        for (prompt, _), (response, date) in itertools.pairwise(turns):
            if prompt and response and len(prompt) <= max_chars and len(response) <= max_chars:
                pairs.append(DialoguePair(Pair(Prompt(prompt), response), CHITCHAT, topic, date, conversation))
    return pairs


def chatterbot_pairs(directory: Path | None = None) -> list[DialoguePair]:
    """Every distinct consecutive-line pair of chatterbot-corpus's English files, topic = file name."""
    directory = directory or package_dir("chatterbot_corpus") / "data" / "english"
    pairs: list[DialoguePair] = []
    seen: set[tuple[str, str]] = set()
    for file in sorted(directory.glob("*.yml")):
        try:
            conversations = (yaml.safe_load(file.read_text()) or {}).get("conversations", [])
        except (OSError, yaml.YAMLError) as exc:
            raise DialogueDataError(f"cannot read {file}: {exc}") from exc
        for i, lines in enumerate(conversations):
            texts = [str(line).strip() for line in lines if line is not None]
            for prompt, response in itertools.pairwise(texts):
                if prompt and response and (prompt, response) not in seen:
                    seen.add((prompt, response))
                    pairs.append(DialoguePair(Pair(Prompt(prompt), response), CHATTERBOT, file.stem, None,
                                              f"{file.stem}:{i}"))
    return pairs
