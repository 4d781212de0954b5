"""The chat template generators train and serve with, on the hub-shaped tokenizers: which
template is chosen, how it renders (BOS, EOS, prefixes), the labels trl builds with it when pad
is EOS, the stop ids a trained folder saves, and stopping on any of several EOS ids."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from speed.llm.chat_template import (
    PROJECT_TEMPLATE,
    add_stop_ids,
    end_of_turn_id,
    prepare_generator_tokenizer,
    training_template,
)
from speed.llm.types import Request, Sampling
from tests.hub_models import build_hub_model, llama3_tokenizer, mistral_tokenizer, qwen2_tokenizer

FAST = {"per_device_batch_size": 2, "gradient_accumulation": 1, "max_length": 128}
MESSAGES = [
    {"role": "system", "content": "Answer in JSON."},
    {"role": "user", "content": "Write an example."},
]


def answered(answer: str) -> list[dict[str, str]]:
    return [*MESSAGES, {"role": "assistant", "content": answer}]


@pytest.fixture(scope="module")
def tokenizers(tmp_path_factory) -> dict:
    return {
        "qwen2": qwen2_tokenizer(),
        "llama3": llama3_tokenizer(),
        "mistral": mistral_tokenizer(tmp_path_factory.mktemp("mistral_tok")),
    }


@pytest.fixture(scope="module")
def llama3(tmp_path_factory) -> Path:
    return build_hub_model("llama3", tmp_path_factory.mktemp("hub") / "llama3")


@pytest.mark.parametrize("shape", ["qwen2", "llama3", "mistral"])
def test_bases_without_markers_get_the_project_template(tokenizers, shape):
    tok = tokenizers[shape]
    template, source = training_template(tok)
    assert (template, source) == (PROJECT_TEMPLATE, "project")
    eot = prepare_generator_tokenizer(tok, template)
    assert eot == tok.eos_token_id and tok.pad_token is not None
    prompt = tok.apply_chat_template(MESSAGES, add_generation_prompt=True, return_dict=True)
    full = tok.apply_chat_template(answered('{"a":"b"}'), return_dict=True)
    prompt_ids, ids = prompt["input_ids"], full["input_ids"]
    assert ids[: len(prompt_ids)] == prompt_ids  # decoding continues the tokens training saw
    assert ids[-1] == tok.eos_token_id and tok.decode(ids[len(prompt_ids) : -1]) == '{"a":"b"}'
    text = tok.apply_chat_template(answered("x"), tokenize=False)
    assert "None" not in text
    bos = [i for i in ids if tok.bos_token_id is not None and i == tok.bos_token_id]
    assert len(bos) == (0 if shape == "qwen2" else 1)  # Qwen has no BOS; no second one elsewhere


def test_a_template_with_markers_is_kept(tiny_models):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_models["base"])
    template, source = training_template(tok)
    assert source == "base" and template == tok.chat_template


def test_override_file(tokenizers, tmp_path):
    tok = tokenizers["llama3"]
    plain = tmp_path / "plain.jinja"
    plain.write_text("{% for m in messages %}{{ m['content'] }}{% endfor %}")
    with pytest.raises(ValueError, match="generation"):
        training_template(tok, plain)
    marked = tmp_path / "marked.jinja"
    marked.write_text(PROJECT_TEMPLATE.replace("Assistant:", "Answer:").replace("User", "Ask"))
    template, source = training_template(tok, marked)
    assert source == "file" and template == marked.read_text()


def test_answer_span_must_end_on_a_special_token(tokenizers):
    """A template whose EOS falls outside the markers would never teach the model to stop."""
    tok = tokenizers["llama3"]
    outside = PROJECT_TEMPLATE.replace(
        "{{ message['content'] }}{{ eos_token }}{% endgeneration %}",
        "{{ message['content'] }}{% endgeneration %}{{ eos_token }}",
    )
    assert outside != PROJECT_TEMPLATE
    with pytest.raises(ValueError, match="stop"):
        end_of_turn_id(tok, outside)


def test_add_stop_ids_keeps_order_and_drops_duplicates():
    from transformers import GenerationConfig

    config = GenerationConfig(eos_token_id=[5, 7])
    assert add_stop_ids(config, 7, 9, None) == [5, 7, 9] and config.eos_token_id == [5, 7, 9]
    single = GenerationConfig(eos_token_id=3)
    assert add_stop_ids(single, 3) == [3] and single.eos_token_id == 3


def test_sft_labels_keep_the_eos_when_pad_is_eos(llama3, tmp_path):
    """Llama 3 has no pad: it pads with EOS, and the EOS that ends each answer keeps its label
    (trl labels by the assistant mask), while the padding does not."""
    from speed.train.sft import sft_trainer

    answers = ['{"a":"short"}', '{"a":"a much longer answer than the other one"}']
    trainer = sft_trainer(str(llama3), [{"messages": answered(a)} for a in answers], tmp_path, FAST)
    tok = trainer.processing_class
    assert tok.pad_token_id == tok.eos_token_id
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(2)])
    for ids, labels, mask, answer in zip(
        batch["input_ids"], batch["labels"], batch["attention_mask"], answers, strict=True
    ):
        kept = [int(t) for t, lab in zip(ids, labels, strict=True) if lab != -100]
        assert kept[-1] == tok.eos_token_id and tok.decode(kept[:-1]) == answer
        assert (labels[mask == 0] == -100).all() and (ids[mask == 0] == tok.eos_token_id).all()
    assert (batch["attention_mask"] == 0).any()  # the short one was padded


def test_dpo_completion_mask_covers_the_eos(llama3, tmp_path):
    from speed.train.dpo import dpo_trainer

    pairs = [
        {
            "prompt": MESSAGES,
            "chosen": [{"role": "assistant", "content": '{"a":"yes"}'}],
            "rejected": [{"role": "assistant", "content": "a rejected answer, longer"}],
        }
    ]
    trainer = dpo_trainer(str(llama3), pairs, tmp_path, 0.1, FAST)
    tok = trainer.processing_class
    batch = trainer.data_collator([trainer.train_dataset[0]])
    chosen_ids, chosen_mask = batch["input_ids"][0], batch["completion_mask"][0]
    completion = chosen_ids[chosen_mask == 1].tolist()
    assert completion[-1] == tok.eos_token_id and tok.decode(completion[:-1]) == '{"a":"yes"}'


def test_trained_folder_saves_its_template_and_stop_ids(llama3, tmp_path):
    from transformers import AutoTokenizer, GenerationConfig

    from speed.train.sft import train_sft

    examples = [{"messages": answered(json.dumps({"a": i}))} for i in range(2)]
    spec = {**FAST, "max_steps": 1}
    metrics = train_sft(str(llama3), examples, tmp_path / "junior", tmp_path / "ckpt", spec)
    assert metrics["chat_template"] == "project"
    tok = AutoTokenizer.from_pretrained(tmp_path / "junior")
    assert tok.chat_template == PROJECT_TEMPLATE and tok.pad_token == tok.eos_token
    eos = GenerationConfig.from_pretrained(tmp_path / "junior").eos_token_id
    base_eos = GenerationConfig.from_pretrained(llama3).eos_token_id
    assert eos[: len(base_eos)] == base_eos and tok.eos_token_id in eos


def test_transformers_backend_stops_on_any_eos_id(llama3, tmp_path):
    """A token the model emits greedily, listed as one more EOS id, ends the answer there."""
    from transformers import GenerationConfig

    from speed.llm.transformers_backend import TransformersBackend, _Row

    request = Request.chat(MESSAGES, Sampling(temperature=0.0, max_tokens=12))
    backend = TransformersBackend(str(llama3))
    enc = backend.tokenizer.apply_chat_template(
        MESSAGES, add_generation_prompt=True, return_dict=True
    )
    prompt = enc["input_ids"]
    # The backend's own decoding step, for the token ids (a Completion holds the text).
    ids, finish = backend._run([_Row(0, 0, prompt, 0.0, 1.0, 12, 0, None)])[0]
    backend.close()
    assert finish == "length" and len(ids) == 12, (ids, finish)
    k = next(i for i in range(2, len(ids)) if ids[i] not in ids[:i])
    copy = Path(shutil.copytree(llama3, tmp_path / "more_eos"))
    config = GenerationConfig.from_pretrained(copy)
    add_stop_ids(config, ids[k])
    config.save_pretrained(copy)
    stopped = TransformersBackend(str(copy)).generate([request])[0][0]
    assert stopped.finish_reason == "stop" and stopped.completion_tokens == k + 1
    assert stopped.text == backend.tokenizer.decode(ids[:k])
