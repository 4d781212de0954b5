import json

import pytest

from speed.data.signals import parse_judgment, parse_revision
from speed.prompts.align import (
    canonical_output,
    judge_messages,
    judge_schema,
    revise_messages,
    revise_schema,
    revisor_messages,
)

VALID4 = [True, True, True, True]


@pytest.mark.parametrize(
    ("text", "best", "worst"),
    [
        ('{"reason": "2 follows the guidelines", "best": 2, "worst": 0}', 2, 0),
        ('```json\n{"reason": "x", "best": 1, "worst": 3}\n```', 1, 3),
        ('Verdict: {"reason": "x", "best": "0", "worst": "[2]"}', 0, 2),
        ('{"reason": "cut off", "best": 3, "worst": 1', 3, 1),
    ],
)
def test_valid_judgments(text, best, worst):
    j = parse_judgment(text, VALID4)
    assert (j.best, j.worst, j.error) == (best, worst, None)


@pytest.mark.parametrize(
    ("text", "valid", "error"),
    [
        ('{"reason": "x", "best": 4, "worst": 0}', VALID4, "index out of range"),
        ('{"reason": "x", "best": -1, "worst": 0}', VALID4, "index out of range"),
        ('{"reason": "x", "best": 1, "worst": 1}', VALID4, "best equals worst"),
        ('{"reason": "x", "best": 1}', VALID4, "best/worst missing or not an index"),
        ('{"reason": "x", "best": true, "worst": 0}', VALID4, "best/worst missing or not an index"),
        ('{"reason": "x", "best": 1.5, "worst": 0}', VALID4, "best/worst missing or not an index"),
        (
            '{"reason": "x", "best": "the second", "worst": 0}',
            VALID4,
            "best/worst missing or not an index",
        ),
        (
            '{"reason": "x", "best": 1, "worst": 0}',
            [True, False, True, True],
            "chosen candidate is invalid",
        ),
        ("I think the second one is best.", VALID4, "judgment: no JSON object in output"),
        ("", VALID4, "judgment: empty output"),
    ],
)
def test_invalid_judgments_are_dropped_never_guessed(text, valid, error):
    j = parse_judgment(text, valid)
    assert j.best is None and j.worst is None
    assert j.error == error


def test_judge_prompt_numbers_candidates_from_zero_and_schema_bounds_indices():
    msgs = judge_messages("Write an example.", ["a", "b", "c"])
    assert "[0]\na" in msgs[0]["content"] and "[2]\nc" in msgs[0]["content"]
    schema = judge_schema(3, 100)
    assert schema["properties"]["best"]["maximum"] == 2


STS = {"S1": "a cat sat", "S2": "a cat was sitting", "S3": "a dog ran"}


@pytest.mark.parametrize(
    "text",
    [
        json.dumps({"reason": "clearer", "revision": STS}),
        json.dumps({"reason": "clearer", "revision": json.dumps(STS)}),
        json.dumps({"reason": "ok", "revision": "```json\n" + json.dumps(STS) + "\n```"}),
        "Here you go:\n" + json.dumps({"reason": "r", "revision": STS}) + "\nThanks",
    ],
)
def test_revision_as_object_or_string(text):
    rev = parse_revision(text, "sts")
    assert rev.error is None and rev.fields == STS


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("no json here", "revision: no JSON object in output"),
        (json.dumps({"reason": "r"}), "revision missing or not an object"),
        (json.dumps({"reason": "r", "revision": ["S1"]}), "revision missing or not an object"),
        (
            json.dumps({"reason": "r", "revision": "just prose"}),
            "revision string holds no JSON object",
        ),
        (
            json.dumps({"reason": "r", "revision": {"S1": "a", "S2": "b"}}),
            "revision invalid: missing key S3",
        ),
        (
            json.dumps({"reason": "r", "revision": {"S1": "a", "S2": "a", "S3": "b"}}),
            "revision invalid: S1, S2, S3 not distinct",
        ),
    ],
)
def test_revision_garbage_is_rejected(text, error):
    rev = parse_revision(text, "sts")
    assert rev.fields is None and rev.error == error


def test_revise_prompts_and_schema():
    teacher = revise_messages("REQUEST", "DRAFT")[0]["content"]
    revisor = revisor_messages("REQUEST", "DRAFT")[0]["content"]
    for text in (teacher, revisor):
        assert "REQUEST" in text and "DRAFT" in text
    assert "reason" in teacher and "reason" not in revisor
    schema = revise_schema("classification", 50, 100)
    assert schema["properties"]["revision"]["required"] == [
        "input_text",
        "label",
        "misleading_label",
    ]


def test_canonical_output_orders_family_keys():
    fields = {"S3": "c", "S1": "a", "S2": "b"}
    assert list(json.loads(canonical_output("sts", fields))) == ["S1", "S2", "S3"]
