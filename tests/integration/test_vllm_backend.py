"""VLLMBackend on the tiny Llama: guidance-constrained JSON and LoRA (engine start ~15-60 s)."""

from __future__ import annotations

import json
import logging

import pytest

from speed.llm.cache import CompletionCache
from speed.llm.client import LLMClient
from speed.llm.schema import string_fields
from speed.llm.types import Request, Sampling

pytest.importorskip("vllm")
pytestmark = pytest.mark.slow

SCHEMA = string_fields({"query": 40, "document": 40})
GREEDY = [
    Request.chat([{"role": "user", "content": f"Write example {i}."}], Sampling(0.0, 1.0, 24))
    for i in range(4)
]


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
def engines(tiny_models, tmp_path_factory):
    """One engine with the adapter enabled, built once for the module: the base outputs come
    from the same engine with the LoRA request left off (a second engine would double the
    start time)."""
    from speed.llm.vllm_backend import VLLMBackend

    lora = build_lora(tiny_models["base"], str(tmp_path_factory.mktemp("lora")))
    backend = VLLMBackend(
        tiny_models["base"],
        adapter=lora,
        dtype="float32",
        max_model_len=1024,
        kv_cache_gib=1,
        enforce_eager=True,
        # Throughput knobs set off vLLM's CPU defaults (256 sequences, 4096 tokens a step), so
        # the test below sees them reach the engine.
        max_num_seqs=8,
        max_num_batched_tokens=1536,
        enable_prefix_caching=True,
    )
    yield backend
    backend.close()


def texts(backend, requests: list[Request], lora: bool = True) -> list[str]:
    saved = backend._lora
    backend._lora = saved if lora else None
    try:
        return [cs[0].text for cs in backend.generate(requests)]
    finally:
        backend._lora = saved


def test_schema_outputs_are_strict_json(engines):
    requests = [
        Request.chat(
            [{"role": "user", "content": f"Write a query and a document, example {i}."}],
            Sampling(temperature=1.0, max_tokens=200, seed=i),
            SCHEMA,
        )
        for i in range(32)
    ]
    outputs = engines.generate(requests)
    valid = 0
    for (c,) in outputs:
        try:
            value = json.loads(c.text)  # strict: no raw control characters in strings
        except json.JSONDecodeError:
            continue
        valid += isinstance(value, dict) and set(value) == {"query", "document"}
    print(f"vllm+guidance valid JSON: {valid}/32")
    assert valid == 32, [c.text for (c,) in outputs]
    assert all(c.parsed == json.loads(c.text) for (c,) in outputs)
    assert all(c.prompt_tokens > 0 and 0 < c.completion_tokens <= 200 for (c,) in outputs)


def test_lora_changes_greedy_output(engines):
    base = texts(engines, GREEDY, lora=False)
    assert base == texts(engines, GREEDY, lora=False)
    adapted = texts(engines, GREEDY, lora=True)
    assert adapted != base
    assert adapted == texts(engines, GREEDY, lora=True)


def test_throughput_knobs_reach_the_engine_and_size_the_calls(engines, tmp_path, caplog):
    config = engines.llm.llm_engine.vllm_config
    assert config.scheduler_config.max_num_seqs == engines.max_num_seqs == 8
    assert config.scheduler_config.max_num_batched_tokens == 1536
    assert config.cache_config.enable_prefix_caching is True
    assert engines.chunk_size == 4 * 8
    # The client hands the engine chunk_size samples per call and commits each call's answers.
    requests = [
        Request.chat([{"role": "user", "content": f"Say {i}."}], Sampling(1.0, 1.0, 8, seed=i))
        for i in range(40)
    ]
    client = LLMClient(engines, CompletionCache(tmp_path / "completions"))
    with caplog.at_level(logging.INFO, logger="speed.llm.client"):
        chunked = [cs[0].text for cs in client.generate(requests)]
    assert "generated 32/40 (in the cache)" in caplog.text
    assert "generated 40/40 (in the cache)" in caplog.text
    assert len(CompletionCache(tmp_path / "completions")) == 40
    # Seeded samples decode alike in calls of 32 + 8 and in one call of 40.
    assert chunked == [cs[0].text for cs in engines.generate(requests)]
