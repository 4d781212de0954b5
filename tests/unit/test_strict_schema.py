"""The strict subset sent to OpenAI (speed/llm/schema.py): the contract server's checker
(tests/openai_contract.py, written from OpenAI's documentation) refuses every schema the project
asks for and accepts each derived one, and every constraint the subset drops is enforced after
decoding by the validator of the stage that sends the schema."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from typing import Any

import pytest

from speed.data.signals import parse_judgment, parse_revision
from speed.data.tasks import clean_tasks, parse_task_list
from speed.data.validate import check_text
from speed.llm.schema import dropped, strict_subset
from speed.prompts.align import judge_schema, revise_schema
from speed.prompts.brainstorm import MAX_ITEMS, brainstorm_schema
from speed.prompts.families import FAMILIES, field_max_chars, output_schema
from tests.openai_contract import schema_problem

MAX_CHARS, REASON_CHARS, TASK_CHARS, TASK_WORDS = 50, 40, 60, 30


def family_output(family: str) -> dict[str, str]:
    words = ["alpha beta", "gamma delta", "epsilon zeta"]
    return dict(zip(FAMILIES[family].keys, words, strict=False))


# (name, full schema, a valid output, validator: output text -> why it is refused, or None)
Case = tuple[str, dict[str, Any], Any, Callable[[str], str | None]]


def cases() -> list[Case]:
    out: list[Case] = []
    for family in FAMILIES:
        schema = output_schema(family, MAX_CHARS)
        out.append(
            (
                f"{family} example",
                schema,
                family_output(family),
                lambda text, f=family, s=schema: check_text(f, text, field_max_chars(s)).reason,
            )
        )
        revise = revise_schema(family, MAX_CHARS, REASON_CHARS)
        out.append(
            (
                f"{family} revision",
                revise,
                {"reason": "clearer", "revision": family_output(family)},
                lambda text, f=family: parse_revision(text, f, MAX_CHARS, REASON_CHARS).error,
            )
        )
    for k in (2, 5):
        out.append(
            (
                f"judge of {k}",
                judge_schema(k, REASON_CHARS),
                {"reason": "the first is best", "best": 0, "worst": 1},
                lambda text, k=k: parse_judgment(text, [True] * k, REASON_CHARS).error,
            )
        )
    out.append(
        (
            "brainstorm",
            brainstorm_schema(TASK_CHARS),
            {"tasks": ["Given a claim, find evidence.", "Given a title, find its abstract."]},
            brainstorm_refusal,
        )
    )
    return out


def brainstorm_refusal(text: str) -> str | None:
    """A brainstorm answer is refused in part: any task dropped, or no task left."""
    tasks = parse_task_list(text)
    kept, why = clean_tasks(tasks, TASK_WORDS, TASK_CHARS, MAX_ITEMS)
    if not kept:
        return "no tasks"
    return next((reason for reason, n in why.items() if n), None)


CASES = cases()
IDS = [c[0] for c in CASES]


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_the_full_schema_is_refused_and_its_strict_subset_accepted(case):
    name, full, _valid, _check = case
    assert schema_problem(full, "output") is not None, name
    assert "is not permitted" in schema_problem(full, "output")
    strict = strict_subset(full)
    assert schema_problem(strict, "output") is None
    assert dropped(strict) == []
    assert full != strict and dropped(full)


def test_judge_indices_become_an_enum():
    strict = strict_subset(judge_schema(4, 100))
    assert strict["properties"]["best"] == {"type": "integer", "enum": [0, 1, 2, 3]}
    assert strict["properties"]["worst"] == {"type": "integer", "enum": [0, 1, 2, 3]}
    assert strict["properties"]["reason"] == {"type": "string"}
    assert strict["required"] == ["reason", "best", "worst"]


def test_open_objects_are_closed_and_optional_properties_made_nullable():
    full = {
        "type": "object",
        "properties": {
            "a": {"type": "string", "format": "email"},
            "b": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {"x": {"type": "number", "minimum": 0.5}},
                    "required": ["x"],
                },
            },
        },
        "required": ["a"],
    }
    assert "additionalProperties" in schema_problem(full, "output")
    strict = strict_subset(full)
    assert schema_problem(strict, "output") is None
    assert strict["required"] == ["a", "b"] and strict["additionalProperties"] is False
    assert strict["properties"]["b"]["anyOf"][1] == {"type": "null"}
    item = strict["properties"]["b"]["anyOf"][0]["items"]
    assert item == {
        "type": "object",
        "properties": {"x": {"type": "number"}},
        "required": ["x"],
        "additionalProperties": False,
    }
    assert sorted(dropped(full)) == [(("a",), "format"), (("b", "[]", "x"), "minimum")]


def test_a_property_named_like_a_keyword_is_kept():
    full = output_schema("sts", 10)
    full["properties"]["pattern"] = {"type": "string", "maxLength": 3}
    full["required"].append("pattern")
    strict = strict_subset(full)
    assert strict["properties"]["pattern"] == {"type": "string"}
    assert "pattern" in strict["required"]


def _at(output: Any, path: tuple[str, ...]) -> tuple[Any, str | int]:
    """The container and key of the value at `path` ([] is an array's first item)."""
    node, key = output, None
    for i, step in enumerate(path):
        if i:
            node = node[key]
        key = 0 if step == "[]" else step
    return node, key


def violate(output: Any, schema: dict, path: tuple[str, ...], keyword: str) -> Any:
    """`output` with the one constraint `keyword` at `path` broken."""
    bad = copy.deepcopy(output)
    node = schema
    for step in path:
        node = node["items"] if step == "[]" else node["properties"][step]
    bound = node[keyword]
    if not path:
        raise AssertionError("no root constraints expected")
    parent, key = _at(bad, path)
    value = {
        "minLength": "" if bound <= 1 else "x" * (bound - 1),
        "maxLength": "x" * (bound + 1),
        "minimum": bound - 1,
        "maximum": bound + 1,
        "minItems": [],
        "maxItems": [f"Given a case number {i}, find its ruling." for i in range(bound + 1)],
    }[keyword]
    parent[key] = value
    return bad


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_every_dropped_constraint_is_enforced_after_decoding(case):
    """For each keyword strict mode cannot decode, an answer breaking it alone is refused by the
    stage's own validator (which counts it), and the answer that keeps it is not."""
    name, full, valid, check = case
    assert check(json.dumps(valid)) is None, name
    constraints = dropped(full)
    assert constraints
    for path, keyword in constraints:
        bad = violate(valid, full, path, keyword)
        assert check(json.dumps(bad)) is not None, (name, path, keyword, bad)
