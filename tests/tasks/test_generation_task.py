"""The text-generation task on the task seam: its spec (no labels), its input/output, and which
feedback it takes (thumbs, rating, correction, signal; never a label), against the classifiers' rules."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from schemas.events import (
    ClassificationOutput,
    FeedbackEventV2,
    GenerationInput,
    GenerationOutput,
    PredictionEventV2,
    TextInput,
)
from schemas.reasons import Reason
from tasks.catalog import task_of
from tasks.exceptions import InputRejected, SpecError
from tasks.spec import parse_spec

NPC = parse_spec({"name": "npc", "task": "text-generation"})
SENTIMENT = parse_spec({"name": "sentiment", "task": "text-classification", "labels": ["neg", "pos"]})


def feedback(**fields: object) -> FeedbackEventV2:
    return FeedbackEventV2.model_validate({"feedback_id": "f1", "prediction_id": "p1", "model": "npc",
                                          "ts": "2026-12-05T10:00:00Z", **fields})


def test_a_generator_has_no_labels_and_a_classifier_needs_two() -> None:
    assert NPC.labels == ()
    assert task_of(NPC).default_kinds == ("smollm2-lora",)
    with pytest.raises(SpecError, match="takes no labels"):
        parse_spec({"name": "npc", "task": "text-generation", "labels": ["a", "b"]})
    with pytest.raises(SpecError, match="at least 2 labels"):
        parse_spec({"name": "s", "task": "text-classification"})


def test_a_generation_prediction_round_trips_and_is_stored_as_its_prompt_document() -> None:
    event = PredictionEventV2.model_validate({
        "prediction_id": "p1", "model": "npc", "model_version": "1.0.0", "latency_ms": 120.0,
        "ts": "2026-12-05T10:00:00Z",
        "input": {"prompt": "Where is the smith?", "persona": "Old guard"},
        "output": {"text": "By the gate.", "prompt_tokens": 12, "completion_tokens": 4, "finish_reason": "stop"}})
    assert isinstance(event.input, GenerationInput) and isinstance(event.output, GenerationOutput)
    assert PredictionEventV2.model_validate_json(event.to_json()) == event
    task = task_of(NPC)
    stored = task.check_input(NPC, event.input)
    assert stored.text is None and stored.data == {"prompt": "Where is the smith?", "persona": "Old guard"}
    assert task.model_input(stored.text, stored.data) == {"prompt": "Where is the smith?", "persona": "Old guard"}
    assert task.check_output(NPC, event.output) == event.output


def test_inputs_and_outputs_of_another_task_are_a_task_mismatch() -> None:
    generation = task_of(NPC)
    with pytest.raises(InputRejected) as caught:
        generation.check_input(NPC, TextInput(text="hello"))
    assert caught.value.reason is Reason.TASK_MISMATCH
    with pytest.raises(InputRejected) as caught:
        generation.check_output(NPC, ClassificationOutput(label="a", probabilities={"a": 1.0}))
    assert caught.value.reason is Reason.TASK_MISMATCH
    classifier = task_of(SENTIMENT)
    with pytest.raises(InputRejected) as caught:
        classifier.check_input(SENTIMENT, GenerationInput(prompt="hi"))
    assert caught.value.reason is Reason.TASK_MISMATCH
    with pytest.raises(InputRejected) as caught:
        classifier.check_output(SENTIMENT, GenerationOutput(text="x", prompt_tokens=1, completion_tokens=1))
    assert caught.value.reason is Reason.TASK_MISMATCH


@pytest.mark.parametrize("fields", [{"rating": 4}, {"thumbs": "down", "correction": "Go left."},
                                    {"signal": "abandoned"}, {"rating": 1, "signal": "continued"}])
def test_a_generator_takes_ratings_corrections_and_signals(fields: dict[str, object]) -> None:
    task_of(NPC).check_feedback(NPC, feedback(**fields))


def test_a_generator_refuses_a_label_and_a_classifier_refuses_generation_feedback() -> None:
    with pytest.raises(InputRejected) as caught:
        task_of(NPC).check_feedback(NPC, feedback(label="pos"))
    assert caught.value.reason is Reason.FEEDBACK_WRONG_FOR_TASK
    for fields in ({"rating": 5}, {"correction": "better"}, {"signal": "continued"}, {"label": "pos", "rating": 2}):
        with pytest.raises(InputRejected) as caught:
            task_of(SENTIMENT).check_feedback(SENTIMENT, feedback(**fields))
        assert caught.value.reason is Reason.FEEDBACK_WRONG_FOR_TASK
    with pytest.raises(InputRejected) as caught:
        task_of(SENTIMENT).check_feedback(SENTIMENT, feedback(label="maybe"))
    assert caught.value.reason is Reason.LABEL_NOT_IN_SET
    task_of(SENTIMENT).check_feedback(SENTIMENT, feedback(thumbs="up"))


@pytest.mark.parametrize("fields", [{}, {"label": "a", "thumbs": "up"}, {"rating": 0}, {"rating": 6},
                                    {"rating": "5"}, {"rating": 4.0}, {"correction": ""}, {"signal": "left"}])
def test_feedback_without_a_judgement_or_with_a_bad_one_is_invalid(fields: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        feedback(**fields)
