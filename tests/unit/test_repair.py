"""parse_json_object on a corpus of malformed model outputs, and the family checks built on it."""
# ruff: noqa: E501  (the corpus keeps whole model outputs on one line)

from __future__ import annotations

import json

import pytest

from speed.data.repair import clean_string, parse_json_object
from speed.data.validate import Checked, check_example, check_text, training_record
from speed.prompts.families import FAMILIES

CLS = {
    "input_text": "The pump hums louder after each refill.",
    "label": "maintenance request",
    "misleading_label": "warranty claim",
}
RET = {
    "user_query": "lichen dye mordant",
    "positive_document": "Lichens give wool rust and purple tones.",
    "hard_negative_document": "Mordants fix synthetic dyes to cotton.",
}
STS = {"S1": "The ferry left at dawn.", "S2": "At dawn the ferry departed.", "S3": "Dawn ferries."}
S2S = {"input": "cheap flights Lisbon", "positive_document": "Budget airfare to Portugal"}

# (model output, expected value or None, repair labels that must be reported)
CORPUS: list[tuple[str, dict | None, set[str]]] = [
    # clean output: nothing to repair
    (
        '{"S1": "The ferry left at dawn.", "S2": "At dawn the ferry departed.", "S3": "Dawn ferries."}',
        STS,
        set(),
    ),
    # markdown fences
    (
        '```json\n{"input": "cheap flights Lisbon", "positive_document": "Budget airfare to Portugal"}\n```',
        S2S,
        {"markdown fence"},
    ),
    (
        '```\n{"input": "cheap flights Lisbon", "positive_document": "Budget airfare to Portugal"}\n```',
        S2S,
        {"markdown fence"},
    ),
    (
        '```JSON\n{"input": "cheap flights Lisbon", "positive_document": "Budget airfare to Portugal"}```',
        S2S,
        {"markdown fence"},
    ),
    (
        'Sure! Here is the example you asked for:\n\n```json\n{"input": "cheap flights Lisbon", '
        '"positive_document": "Budget airfare to Portugal"}\n```\n\nLet me know if you need more.',
        S2S,
        {"markdown fence"},
    ),
    (
        '```json\n{"input": "cheap flights Lisbon", "positive_document": "Budget airfare to Portugal",\n}\n```',
        S2S,
        {"markdown fence", "trailing comma"},
    ),
    # unterminated fence (the model stopped after the object)
    (
        '```json\n{"input": "cheap flights Lisbon", "positive_document": "Budget airfare to Portugal"}',
        S2S,
        {"markdown fence"},
    ),
    # prose before / after the object
    (
        'Here is one training example:\n{"input": "cheap flights Lisbon", '
        '"positive_document": "Budget airfare to Portugal"}',
        S2S,
        {"text around object"},
    ),
    (
        '{"input": "cheap flights Lisbon", "positive_document": "Budget airfare to Portugal"}\n\n'
        "I kept both texts short as requested.",
        S2S,
        {"text around object"},
    ),
    (
        '{"input": "cheap flights Lisbon", "positive_document": "Budget airfare to Portugal"}\n'
        "Note: placeholders such as {city} were filled in.",
        S2S,
        {"text around object"},
    ),
    # truncation
    (
        '{"S1": "The ferry left at dawn.", "S2": "At dawn the ferry departed.", "S3": "Dawn ferries."',
        STS,
        {"truncated object"},
    ),
    (
        '{"S1": "The ferry left at dawn.", "S2": "At dawn the ferry departed.", "S3": "Dawn fer',
        {"S1": "The ferry left at dawn.", "S2": "At dawn the ferry departed.", "S3": "Dawn fer"},
        {"truncated object"},
    ),
    (
        '{"S1": "The ferry left at dawn.", "S2": "At dawn the ferry departed.",',
        {"S1": "The ferry left at dawn.", "S2": "At dawn the ferry departed."},
        {"truncated object"},
    ),
    (
        '{"S1": "The ferry left at dawn.", "S2": "At dawn the ferry departed.", "S3":',
        {"S1": "The ferry left at dawn.", "S2": "At dawn the ferry departed.", "S3": None},
        {"truncated object"},
    ),
    (
        'Example:\n{"S1": "The ferry left at dawn.", "S2": "At dawn the ferry departed.", "S3": "Dawn',
        {"S1": "The ferry left at dawn.", "S2": "At dawn the ferry departed.", "S3": "Dawn"},
        {"text around object", "truncated object"},
    ),
    # a brace inside a string must not end the truncated object early
    (
        '{"input_text": "Use {name} in the template", "label": "templating", "misleading_label": "form',
        {
            "input_text": "Use {name} in the template",
            "label": "templating",
            "misleading_label": "form",
        },
        {"truncated object"},
    ),
    # raw newlines and tabs inside strings
    (
        '{"user_query": "lichen dye mordant", "positive_document": "Lichens give wool\nrust and\tpurple '
        'tones.", "hard_negative_document": "Mordants fix synthetic dyes to cotton."}',
        {**RET, "positive_document": "Lichens give wool\nrust and\tpurple tones."},
        {"control characters"},
    ),
    # smart quotes as delimiters
    (
        "{\u201cinput\u201d: \u201ccheap flights Lisbon\u201d, \u201cpositive_document\u201d: "
        "\u201cBudget airfare to Portugal\u201d}",
        S2S,
        {"smart quotes"},
    ),
    (
        "{\u201cinput\u201d: \u201ccheap flights Lisbon\u201d, \u201cpositive_document\u201d: "
        "\u201cBudget airfare to Portugal\u201d,}",
        S2S,
        {"smart quotes", "trailing comma"},
    ),
    # smart quotes inside content survive untouched
    (
        '{"input_text": "She called it \u201cthe best pump\u201d and it\u2019s loud.", '
        '"label": "maintenance request", "misleading_label": "warranty claim"}',
        {**CLS, "input_text": "She called it \u201cthe best pump\u201d and it\u2019s loud."},
        set(),
    ),
    (
        '{"input_text": "She called it \u201cthe best pump\u201d.", "label": "maintenance request", '
        '"misleading_label": "warranty claim",}',
        {**CLS, "input_text": "She called it \u201cthe best pump\u201d."},
        {"trailing comma"},
    ),
    # trailing commas
    (
        '{"input": "cheap flights Lisbon", "positive_document": "Budget airfare to Portugal",}',
        S2S,
        {"trailing comma"},
    ),
    (
        '{\n  "input": "cheap flights Lisbon",\n  "positive_document": "Budget airfare to Portugal",\n}',
        S2S,
        {"trailing comma"},
    ),
    # single-quoted Python dict
    (
        "{'input': 'cheap flights Lisbon', 'positive_document': 'Budget airfare to Portugal'}",
        S2S,
        {"python literal"},
    ),
    (
        "Output: {'input': \"cheap flights Lisbon\", 'positive_document': 'Budget airfare to Portugal',}",
        S2S,
        {"python literal", "text around object"},
    ),
    # nested braces inside strings, escaped quotes, unicode
    (
        '{"input_text": "Replace {user} and {id} } in the mail", "label": "templating", '
        '"misleading_label": "formatting"}',
        {
            "input_text": "Replace {user} and {id} } in the mail",
            "label": "templating",
            "misleading_label": "formatting",
        },
        set(),
    ),
    (
        '{"input_text": "He wrote \\"fix it\\" on the ticket", "label": "repair", '
        '"misleading_label": "complaint"}',
        {
            "input_text": 'He wrote "fix it" on the ticket',
            "label": "repair",
            "misleading_label": "complaint",
        },
        set(),
    ),
    (
        '{"S1": "Caf\u00e9 au lait \u00e0 Paris \u2014 \u4e2d\u6587", "S2": "\\u00e9t\u00e9 \U0001f600",'
        ' "S3": "na\u00efve"}',
        {
            "S1": "Caf\u00e9 au lait \u00e0 Paris \u2014 \u4e2d\u6587",
            "S2": "\u00e9t\u00e9 \U0001f600",
            "S3": "na\u00efve",
        },
        set(),
    ),
    # two objects in one output: the first is the answer
    (
        '{"input": "cheap flights Lisbon", "positive_document": "Budget airfare to Portugal"}\n'
        '{"input": "train Porto", "positive_document": "Rail tickets to Porto"}',
        S2S,
        {"text around object"},
    ),
    # a JSON list holding the object
    (
        '[{"input": "cheap flights Lisbon", "positive_document": "Budget airfare to Portugal"}]',
        S2S,
        {"text around object"},
    ),
    # numbers as values stay numbers here (the validator turns them into text)
    ('{"S1": 4, "S2": 4.5, "S3": "three"}', {"S1": 4, "S2": 4.5, "S3": "three"}, set()),
    # nested object, then truncation
    (
        '{"meta": {"lang": "en"}, "input": "cheap flights Lisbon", "positive_document": "Budget',
        {"meta": {"lang": "en"}, "input": "cheap flights Lisbon", "positive_document": "Budget"},
        {"truncated object"},
    ),
    # a fence around something else, the object outside it
    (
        'Run `jq .` on it:\n```\njq .\n```\n{"input": "cheap flights Lisbon", '
        '"positive_document": "Budget airfare to Portugal"}',
        S2S,
        {"text around object"},
    ),
    # failures
    ("", None, set()),
    ("   \n\t ", None, set()),
    ("I'm sorry, but I can't produce that example.", None, set()),
    ('["cheap flights Lisbon", "Budget airfare to Portugal"]', None, set()),
    ('{"input": "cheap flights Lisbon", "positive_document" "Budget airfare" : : }', None, set()),
    ("{input: cheap flights, positive_document: budget airfare}", None, set()),
]


def test_corpus_is_large_enough():
    assert len(CORPUS) >= 30
    assert sum(expected is None for _, expected, _ in CORPUS) >= 5


@pytest.mark.parametrize(("text", "expected", "labels"), CORPUS, ids=range(len(CORPUS)))
def test_parse_corpus(text, expected, labels):
    parsed = parse_json_object(text)
    if expected is None:
        assert not parsed.ok
        assert parsed.value is None
        assert parsed.error
    else:
        assert parsed.ok, parsed.error
        assert parsed.value == expected
        assert parsed.error is None
        assert labels <= set(parsed.repairs)
        if not labels:
            assert parsed.repairs == []


def test_failure_reasons():
    assert parse_json_object("").error == "empty output"
    assert parse_json_object("no braces here").error == "no JSON object in output"
    assert parse_json_object('["a", "b"]').error == "no JSON object in output"
    assert parse_json_object('{"a" "b" : : }').error == "invalid JSON"
    # A Python literal that cannot be built (a set of dicts) is invalid, not a crash.
    assert parse_json_object('text {{"a": 1} }').error == "invalid JSON"


def test_python_literal_is_never_evaluated():
    assert not parse_json_object("{'a': __import__('os').getcwd()}").ok


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("  x  ", "x"),
        (5, "5"),
        (4.5, "4.5"),
        ("", None),
        ("   ", None),
        (None, None),
        (True, None),
        ([1], None),
        ({"a": 1}, None),
    ],
)
def test_clean_string(value, expected):
    assert clean_string(value) == expected


# --- validate ------------------------------------------------------------------------------

GOOD = {
    "classification": CLS,
    "retrieval": RET,
    "sts": STS,
    "s2s": S2S,
    "p2p": {"input": "A long essay on tides.", "positive_document": "A long essay on the moon."},
}


@pytest.mark.parametrize("family", list(FAMILIES))
def test_valid_example_passes(family):
    checked = check_example(family, {**GOOD[family], "extra": [1, 2], "notes": None})
    assert checked.reason is None
    assert checked.fields == GOOD[family]  # extra keys ignored


@pytest.mark.parametrize("family", list(FAMILIES))
def test_missing_and_empty_keys(family):
    for key in FAMILIES[family].keys:
        missing = {k: v for k, v in GOOD[family].items() if k != key}
        assert check_example(family, missing) == Checked(None, f"missing key {key}")
        for blank in ("", "  \n ", None):
            checked = check_example(family, {**GOOD[family], key: blank})
            assert checked.fields is None
            assert checked.reason == f"empty key {key}"


@pytest.mark.parametrize("family", list(FAMILIES))
def test_non_string_values(family):
    key = FAMILIES[family].keys[0]
    checked = check_example(family, {**GOOD[family], key: 1234})
    assert checked.fields is not None and checked.fields[key] == "1234"
    checked = check_example(family, {**GOOD[family], key: 2.5})
    assert checked.fields is not None and checked.fields[key] == "2.5"
    for bad in (["a", "b"], {"text": "a"}, True):
        checked = check_example(family, {**GOOD[family], key: bad})
        assert checked.fields is None
        assert key in checked.reason


def test_strings_are_trimmed():
    checked = check_example("s2s", {"input": "  a b ", "positive_document": "\nc d\t"})
    assert checked.fields == {"input": "a b", "positive_document": "c d"}


@pytest.mark.parametrize(
    "misleading", ["maintenance request", "Maintenance  Request ", "MAINTENANCE\nrequest"]
)
def test_label_equals_misleading_label(misleading):
    checked = check_example("classification", {**CLS, "misleading_label": misleading})
    assert checked.fields is None
    assert checked.reason == "label equals misleading label"


@pytest.mark.parametrize(
    "change",
    [
        {"S2": "the ferry left  at DAWN."},
        {"S3": "The ferry left at dawn."},
        {"S3": " at dawn the ferry departed. "},
    ],
)
def test_sts_not_distinct(change):
    checked = check_example("sts", {**STS, **change})
    assert checked.fields is None
    assert checked.reason == "S1, S2, S3 not distinct"


@pytest.mark.parametrize("family", ["retrieval", "s2s", "p2p"])
def test_positive_equals_query(family):
    fam = FAMILIES[family]
    output = {**GOOD[family], fam.positive: " " + GOOD[family][fam.query].upper()}
    checked = check_example(family, output)
    assert checked.fields is None
    assert checked.reason == "positive equals query"


def test_negative_equals_positive_or_query():
    for source in ("positive_document", "user_query"):
        checked = check_example("retrieval", {**RET, "hard_negative_document": RET[source].lower()})
        assert checked.fields is None
        assert checked.reason == "negative equals positive or query"


def test_check_text_reports_repairs_and_errors():
    text = "```json\n" + '{"S1": "a b", "S2": "a c", "S3": "d e",}' + "\n```"
    checked = check_text("sts", text)
    assert checked.fields == {"S1": "a b", "S2": "a c", "S3": "d e"}
    assert checked.reason is None
    assert {"markdown fence", "trailing comma"} <= set(checked.repairs)

    assert check_text("sts", "").reason == "empty output"
    assert check_text("sts", "no json").reason == "no JSON object in output"
    truncated = check_text("sts", '{"S1": "a b", "S2": "a c"')
    assert truncated.reason == "missing key S3"
    assert "truncated object" in truncated.repairs
    assert (
        check_text(
            "classification", '{"input_text": "x", "label": "A", "misleading_label": "a"}'
        ).reason
        == "label equals misleading label"
    )


@pytest.mark.parametrize("family", list(FAMILIES))
def test_check_text_per_family(family):
    checked = check_text(family, "Here you go:\n" + json.dumps(GOOD[family]) + "\nDone.")
    assert checked.fields == GOOD[family]
    assert "text around object" in checked.repairs


@pytest.mark.parametrize(
    ("family", "query", "positive", "negative"),
    [
        ("classification", CLS["input_text"], CLS["label"], CLS["misleading_label"]),
        ("retrieval", RET["user_query"], RET["positive_document"], RET["hard_negative_document"]),
        ("sts", STS["S1"], STS["S2"], STS["S3"]),
        ("s2s", S2S["input"], S2S["positive_document"], None),
        ("p2p", GOOD["p2p"]["input"], GOOD["p2p"]["positive_document"], None),
    ],
)
def test_training_record(family, query, positive, negative):
    provenance = {"topic": "Arts/Crafts", "prompt_id": "seed-000001", "generator": "teacher"}
    record = training_record(family, GOOD[family], "Given a text, find its match.", provenance)
    assert record == {
        "query": query,
        "positive": positive,
        "negative": negative,
        "instruction": "Given a text, find its match.",
        "family": family,
        **provenance,
    }


def test_an_answer_cut_at_max_tokens_is_never_data():
    whole = '{"S1": "a b", "S2": "a c", "S3": "d e"}'
    assert check_text("sts", whole, finish_reason="stop").fields is not None
    # Even when the text happens to parse: the model meant to write more.
    assert check_text("sts", whole, finish_reason="length").reason == "truncated"
    assert check_text("sts", '{"S1": "a b", "S2"', finish_reason="length").reason == "truncated"
    assert check_text("sts", whole, finish_reason="context_length").reason == "context_length"


@pytest.mark.parametrize(
    "label, misleading, dropped",
    [
        ("sports", "politics", True),  # the label, any case, as a word of the input
        ("politics", "Sports News", False),
        ("travel", "the match", True),  # the misleading label as a phrase of the input
        ("sport", "politics", False),  # part of a word is not the label
    ],
)
def test_a_label_in_the_input_is_dropped(label, misleading, dropped):
    text = json.dumps(
        {
            "input_text": "Sports: the match ended late.",
            "label": label,
            "misleading_label": misleading,
        }
    )
    checked = check_text("classification", text)
    assert (checked.reason == "label in input") is dropped
