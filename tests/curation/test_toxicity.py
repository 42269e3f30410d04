"""The toxicity check: the packaged classifier (alt-profanity-check) plus the word list that undoes
obfuscation; clean texts, including words that merely contain a listed one, pass."""

from __future__ import annotations

import pytest

from curation.toxicity import ToxicityCheck, ToxicityError, normalise, word_score

CLEAN = ["Hello there, traveller! What can I get you?", "What is AI?", "The class assessment went well.",
         "Scunthorpe is a town in England.", "That is a good story by Philip K. Dick.", "A cocktail, please.",
         "I will buy your sword for ten gold coins."]
OBFUSCATED = ["sh1t happens", "f u c k this", "f.u.c.k you", "fuuuuck", "f*ck off", "you are a b1tch",
              "what a d0uchebag", "$hit"]
THREATS = ["I will murder your family", "kys", "go kill yourself"]


@pytest.fixture(scope="module")
def check() -> ToxicityCheck:
    return ToxicityCheck()


def test_clean_texts_pass(check: ToxicityCheck) -> None:
    scores = check.scores(CLEAN)
    assert all(s < check.threshold for s in scores), list(zip(CLEAN, scores, strict=True))
    assert check.rate(CLEAN) == 0.0


def test_the_classifier_catches_plain_insults(check: ToxicityCheck) -> None:
    insult = "I hate you, you stupid moron"  # no listed word: the classifier alone
    assert word_score(insult) == 0.0
    assert check.is_toxic(insult)
    assert not ToxicityCheck(classifier=False).is_toxic(insult)


@pytest.mark.parametrize("text", OBFUSCATED + THREATS)
def test_obfuscated_words_and_threats_are_caught(check: ToxicityCheck, text: str) -> None:
    assert word_score(text) == 1.0
    assert check.is_toxic(text)


def test_normalise_undoes_leetspeak_and_spacing() -> None:
    assert normalise("F U C K") == "fuck"
    assert normalise("5h1t") == "shit"
    assert normalise("a b c") == "abc"


def test_rate_and_bad_threshold(check: ToxicityCheck) -> None:
    assert check.rate(["kys", "Hello", "f u c k", "Nice weather"]) == 0.5
    assert check.scores([]) == [] and check.rate([]) == 0.0
    with pytest.raises(ToxicityError):
        ToxicityCheck(threshold=0.0)
