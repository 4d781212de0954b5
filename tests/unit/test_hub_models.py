"""The hub-shaped fixture models keep the traps of the bases they stand for."""

from __future__ import annotations

import json

import pytest
from transformers import AutoConfig, AutoTokenizer, GenerationConfig

from tests.hub_models import HUGE_MAX_LENGTH, SHAPES, build_hub_model


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("hub")
    return {s: build_hub_model(s, root / s) for s in SHAPES}


def test_qwen2_shape_has_chatml_without_markers_no_bos_and_pad_is_eos(hub):
    tok = AutoTokenizer.from_pretrained(hub["qwen2"])
    assert "{% generation %}" not in tok.chat_template and "<|im_start|>" in tok.chat_template
    assert tok.bos_token is None and tok.pad_token == tok.eos_token == "<|endoftext|>"
    assert tok("hi").input_ids[0] != tok.eos_token_id  # nothing prepended
    config = AutoConfig.from_pretrained(hub["qwen2"])
    assert config.model_type == "qwen2" and config.tie_word_embeddings
    text = tok.apply_chat_template([{"role": "user", "content": "x"}], tokenize=False)
    assert text.startswith("<|im_start|>system\n")  # a default system turn the user never wrote


def test_llama3_shape_has_no_template_no_pad_a_bos_and_two_stop_ids(hub):
    tok = AutoTokenizer.from_pretrained(hub["llama3"])
    assert tok.chat_template is None and tok.pad_token is None
    assert tok("hi").input_ids[0] == tok.convert_tokens_to_ids("<|begin_of_text|>")
    assert tok.model_max_length == HUGE_MAX_LENGTH
    gen = GenerationConfig.from_pretrained(hub["llama3"])
    assert isinstance(gen.eos_token_id, list) and len(gen.eos_token_id) == 2


def test_mistral_shape_runs_the_real_v01_sentencepiece_model(hub):
    tok = AutoTokenizer.from_pretrained(hub["mistral"])
    assert len(tok) == 32000 and tok.chat_template is None and tok.pad_token is None
    assert tok("Hello world").input_ids == [1, 22557, 1526]  # Mistral-7B-v0.1's own ids
    assert (hub["mistral"] / "tokenizer.model").exists()
    config = json.loads((hub["mistral"] / "config.json").read_text())
    assert config["architectures"] == ["MistralForCausalLM"]
    assert config["hidden_size"] // config["num_attention_heads"] >= 32  # vLLM runs it
