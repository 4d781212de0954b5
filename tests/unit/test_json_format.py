"""decoder_json / in_decoder_form against llguidance itself (the grammar both local engines
decode with), and the training targets built on them."""

from __future__ import annotations

import json
import random

import pytest

from speed.llm.json_format import decoder_json, in_decoder_form, parse_pairs
from speed.prompts.align import canonical_output, training_target
from speed.prompts.families import FAMILIES, output_schema

KEYS = ("S1", "S2", "S3")
SCHEMA = output_schema("sts", 400)


@pytest.fixture(scope="module")
def accepts():
    """text -> does the engines' grammar (compact, as both backends build it) take exactly it."""
    import llguidance
    import llguidance.hf

    from tests.hub_models import qwen2_tokenizer

    tok = qwen2_tokenizer()
    ll = llguidance.hf.from_tokenizer(tok, n_vocab=len(tok), eos_token=tok.eos_token_id)
    grammar = llguidance.LLMatcher.grammar_from_json_schema(
        SCHEMA, defaults={"whitespace_flexible": False}
    )

    def run(text: str) -> bool:
        matcher = llguidance.LLMatcher(ll, grammar, log_level=0)
        ids = tok(text, add_special_tokens=False)["input_ids"]
        return matcher.consume_tokens(ids) and matcher.is_accepting()

    return run


def sts(a: str, b: str = "b", c: str = "c") -> str:
    """An STS object with its first value spelled exactly as `a` (raw JSON string body)."""
    return f'{{"S1":"{a}","S2":"{b}","S3":"{c}"}}'


# Spellings of one string body: each is accepted or refused by the grammar, and in_decoder_form
# must say the same (in_decoder_form also needs the value equal to what decoder_json writes).
SPELLINGS = [
    "plain",
    "é ü 漢字 😀",
    "\\t",
    "\\u0009",
    "\\u001f",
    "\\u001F",
    "\\u007f",
    "\\u00e9",
    "\\u0041",
    "\\/",
    "\\b\\f\\n\\r",
    '\\"',
    "\\\\",
    "\\ud83d\\ude00",
    "\x7f",
    "\x80",
]


@pytest.mark.parametrize("body", SPELLINGS)
def test_escapes_as_the_grammar_allows(accepts, body):
    assert in_decoder_form(sts(body), KEYS) == accepts(sts(body))


@pytest.mark.parametrize(
    "text",
    [
        '{"S1": "a", "S2": "b", "S3": "c"}',  # json.dumps' default separators
        '{"S1":"a", "S2":"b","S3":"c"}',
        '{"S2":"b","S1":"a","S3":"c"}',  # not the schema's order
        '{"S1":"a","S2":"b","S3":"c"}\n',
        ' {"S1":"a","S2":"b","S3":"c"}',
        '{"S1":"a","S2":"b"}',
        '{"S1":"a","S1":"a","S2":"b","S3":"c"}',
        '{"S1":"a","S2":"b","S3":"c"}',
    ],
)
def test_structure_as_the_grammar_allows(accepts, text):
    assert in_decoder_form(text, KEYS) == accepts(text)


def test_decoder_json_is_accepted_for_every_character(accepts):
    """Each code point below U+0300 and a few beyond, as decoder_json writes it: the grammar
    takes it, and it is in decoder form."""
    chars = [chr(c) for c in range(0x300)] + ["\u2028", "\ufeff", "\U0001f600"]
    for i in range(0, len(chars), 16):
        obj = {"S1": "x" + "".join(chars[i : i + 16]), "S2": "b", "S3": "c"}
        text = decoder_json(obj)
        assert accepts(text), repr(text)
        assert in_decoder_form(text, KEYS) and json.loads(text) == obj


def test_random_objects_round_trip(accepts):
    rng = random.Random(0)
    alphabet = 'ab "\\/\n\t\x00\x7f\x1féß漢😀{}[],:'
    for _ in range(50):
        obj = {k: "".join(rng.choices(alphabet, k=rng.randint(1, 30))) for k in KEYS}
        text = decoder_json(obj)
        assert accepts(text) and in_decoder_form(text, KEYS)
        assert decoder_json(json.loads(text)) == text


def test_parse_pairs_keeps_order_and_duplicates():
    assert parse_pairs('{"b":1,"a":2,"b":3}') == [("b", 1), ("a", 2), ("b", 3)]
    assert parse_pairs('[["a", 1]]') is None  # an array of pairs is no object
    assert parse_pairs("{not json") is None


def test_canonical_output_is_the_decoder_form():
    fields = {"S3": "three", "S1": "one", "S2": "two"}
    assert canonical_output("sts", fields) == '{"S1":"one","S2":"two","S3":"three"}'


@pytest.mark.parametrize(
    "text, as_is",
    [
        ('{"S1":"one","S2":"two","S3":"tab\\u0009"}', True),  # a spelling the decoder can write
        ('{"S1": "one", "S2": "two", "S3": "tab\\t"}', False),
        ('{"S2":"two","S1":"one","S3":"tab\\t"}', False),
        ('```json\n{"S1":"one","S2":"two","S3":"tab\\t"}\n```', False),
    ],
)
def test_training_target_keeps_the_teachers_text_only_in_decoder_form(text, as_is):
    fields = {"S1": "one", "S2": "two", "S3": "tab\t"}
    target = training_target("sts", text, fields)
    assert target == (text if as_is else '{"S1":"one","S2":"two","S3":"tab\\t"}')
    assert in_decoder_form(target, FAMILIES["sts"].keys)


def test_training_target_uses_the_validated_fields():
    """A value the validator trimmed is trained as validated, not as written."""
    text = '{"S1":" one ","S2":"two","S3":"three"}'
    fields = {"S1": "one", "S2": "two", "S3": "three"}
    assert training_target("sts", text, fields) == '{"S1":"one","S2":"two","S3":"three"}'


def test_seed_records_train_on_the_decoder_form(tmp_path):
    """run_seed on a scripted teacher: its text is the junior's target when the decoder could
    have written it, and the compact, schema-ordered form of the same fields otherwise."""
    from speed.io import read_jsonl, write_jsonl
    from speed.stages.align import seed_sft_examples
    from speed.stages.teacher import run_seed
    from tests.scripted import ScriptedBackend, registered

    answers = {
        "[as-is]": '{"S1":"o\\u0009ne","S2":"two","S3":"three"}',  # \\u0009: a tab, decoder-legal
        "[spaced]": '{"S1": "one", "S2": "two", "S3": "three"}',
        "[fenced]": '```json\n{"S3":"three","S1":"one","S2":"two"}\n```',
    }
    prompts = [
        {
            "id": pid,
            "family": "sts",
            "instruction": "Retrieve semantically similar text.",
            "messages": [{"role": "user", "content": f"Write an STS example. {pid}"}],
            "schema": SCHEMA,
            "topic": "t",
            "topic_id": "t0",
            "task": None,
        }
        for pid in answers
    ]
    write_jsonl(tmp_path / "prompts.jsonl", prompts)
    with registered(ScriptedBackend(answers)) as llm:
        run_seed(
            llm=llm,
            prompts_path=str(tmp_path / "prompts.jsonl"),
            sampling={"temperature": 1.0, "top_p": 1.0, "max_tokens": 200},
            seed=0,
            price={"prompt_per_m": 0.0, "completion_per_m": 0.0},
            cache_dir=str(tmp_path / "cache"),
            output=str(tmp_path / "seed.jsonl"),
            rejects_output=str(tmp_path / "rejects.jsonl"),
            stats_output=str(tmp_path / "stats.json"),
            ledger=str(tmp_path / "ledger.jsonl"),
        )
    outputs = {r["prompt_id"]: r["output"] for r in read_jsonl(tmp_path / "seed.jsonl")}
    assert outputs == {
        "[as-is]": answers["[as-is]"],
        "[spaced]": '{"S1":"one","S2":"two","S3":"three"}',
        "[fenced]": '{"S1":"one","S2":"two","S3":"three"}',
    }
    examples = seed_sft_examples(str(tmp_path / "seed.jsonl"), str(tmp_path / "prompts.jsonl"))
    assert [e["messages"][-1]["content"] for e in examples] == list(outputs.values())
