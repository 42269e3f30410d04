"""Dialogue pairs from the packaged corpora (chitchat-dataset, chatterbot-corpus), read as data files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from trainer.dialogue_data import DialogueDataError, chatterbot_pairs, chitchat_pairs


def test_chitchat_pairs_join_turns_and_keep_topic_and_date(tmp_path: Path) -> None:
    conversation = {"c1": {"prompt": "Mozart or Beethoven?", "start": "2018-05-01T10:00:00Z", "ratings": None,
                           "messages": [[{"text": "Hi", "timestamp": "2018-05-01T10:00:00Z", "sender": "a"},
                                         {"text": "Mozart?", "timestamp": "2018-05-01T10:00:02Z", "sender": "a"}],
                                        [{"text": "Beethoven", "timestamp": "2018-05-01T10:00:09Z", "sender": "b"},
                                         {"text": "for sure", "timestamp": "2018-05-01T10:00:10Z", "sender": "b"}],
                                        [{"text": "why?", "timestamp": "2018-05-01T10:01:00Z", "sender": "a"}]]}}
    path = tmp_path / "dataset.json"
    path.write_text(json.dumps(conversation))
    pairs = chitchat_pairs(path)
    assert [(p.pair.prompt.prompt, p.pair.response) for p in pairs] == [("Hi Mozart?", "Beethoven for sure"),
                                                                        ("Beethoven for sure", "why?")]
    assert pairs[0].topic == "Mozart or Beethoven?" and pairs[0].date == "2018-05-01T10:00:09Z"
    assert pairs[0].source == "chitchat" and pairs[0].conversation == "c1"


def test_the_packaged_corpora_load() -> None:
    chitchat = chitchat_pairs()
    assert len(chitchat) > 130_000
    assert len({p.topic for p in chitchat}) >= 30
    chatterbot = chatterbot_pairs()
    assert 1_000 < len(chatterbot) < 1_300  # tech_support.yml's repeats dropped
    assert len({(p.pair.prompt.prompt, p.pair.response) for p in chatterbot}) == len(chatterbot)
    assert {"ai", "trivia", "emotion"} <= {p.topic for p in chatterbot}


def test_an_unreadable_corpus_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "dataset.json").write_text("{not json")
    with pytest.raises(DialogueDataError):
        chitchat_pairs(tmp_path / "dataset.json")
