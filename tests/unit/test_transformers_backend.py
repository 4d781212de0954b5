"""TransformersBackend on the tiny Llama: llguidance-constrained JSON, LoRA, seeded sampling."""

from __future__ import annotations

import json

import pytest

from speed.llm.schema import string_fields
from speed.llm.transformers_backend import TransformersBackend
from speed.llm.types import Request, Sampling

SCHEMA = string_fields({"query": 40, "document": 40})


def build_lora(base: str, out: str) -> str:
    """A random LoRA on q/v: init_lora_weights=False makes B non-zero, so it is no no-op."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(base)
    config = LoraConfig(r=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    get_peft_model(model, config).save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def backend(tiny_models) -> TransformersBackend:
    return TransformersBackend(tiny_models["base"], batch_size=16)


@pytest.fixture(scope="module")
def lora(tiny_models, tmp_path_factory) -> str:
    return build_lora(tiny_models["base"], str(tmp_path_factory.mktemp("lora")))


def prompts(k: int, sampling: Sampling, schema=None, n: int = 1) -> list[Request]:
    return [
        Request.chat([{"role": "user", "content": f"Write example {i}."}], sampling, schema, n)
        for i in range(k)
    ]


def test_schema_outputs_are_strict_json(backend):
    requests = [
        Request.chat(
            [{"role": "user", "content": f"Write a query and a document, example {i}."}],
            Sampling(temperature=1.0, max_tokens=200, seed=i),
            SCHEMA,
        )
        for i in range(32)
    ]
    outputs = backend.generate(requests)
    valid = 0
    for (c,) in outputs:
        try:
            value = json.loads(c.text)  # strict: no raw control characters in strings
        except json.JSONDecodeError:
            continue
        valid += isinstance(value, dict) and set(value) == {"query", "document"}
    print(f"transformers+llguidance valid JSON: {valid}/32")
    assert valid == 32, [c.text for (c,) in outputs]
    for (c,) in outputs:
        assert c.finish_reason == "stop"
        assert c.parsed == json.loads(c.text)
        assert all(len(v) <= 40 for v in c.parsed.values())
        assert c.prompt_tokens > 0 and 0 < c.completion_tokens <= 200


def test_usage_and_finish_reasons(backend):
    (short,), (long_,) = backend.generate(
        [
            Request.chat([{"role": "user", "content": "a"}], Sampling(temperature=0, max_tokens=3)),
            Request.chat([{"role": "user", "content": "b"}], Sampling(temperature=0, max_tokens=9)),
        ]
    )
    # The random model never says EOS this early: each stops at its own max_tokens.
    assert (short.finish_reason, short.completion_tokens) == ("length", 3)
    assert (long_.finish_reason, long_.completion_tokens) == ("length", 9)
    text = backend.tokenizer.apply_chat_template(
        [{"role": "user", "content": "a"}], add_generation_prompt=True, tokenize=False
    )
    assert short.prompt_tokens == len(
        backend.tokenizer(text, add_special_tokens=False)["input_ids"]
    )


def test_n_samples_and_seeds(backend):
    sampled = prompts(4, Sampling(temperature=1.0, max_tokens=16, seed=7), n=3)
    first = [[c.text for c in cs] for cs in backend.generate(sampled)]
    again = [[c.text for c in cs] for cs in backend.generate(sampled)]
    assert first == again  # same seed, same samples
    assert all(len(cs) == 3 and len(set(cs)) == 3 for cs in first)  # n distinct samples
    alone = [c.text for c in backend.generate(sampled[:1])[0]]
    assert alone == first[0]  # a request's samples do not depend on its batch
    other = [[c.text for c in cs] for cs in backend.generate(prompts(4, Sampling(1.0, 1.0, 16, 8)))]
    assert [cs[0] for cs in other] != [cs[0] for cs in first]


def test_lora_changes_greedy_output(backend, tiny_models, lora):
    greedy = prompts(4, Sampling(temperature=0, max_tokens=24))
    base = [cs[0].text for cs in backend.generate(greedy)]
    assert base == [cs[0].text for cs in backend.generate(greedy)]
    adapted = TransformersBackend(tiny_models["base"], adapter=lora)
    assert adapted.identity["adapter_hash"] != backend.identity["adapter_hash"]
    assert adapted.identity["engine"] == "transformers"
    assert [cs[0].text for cs in adapted.generate(greedy)] != base
