"""Tiny random-weight models saved in the shapes of the hub bases users bring.

The DAG's own tiny models carry a friendly tokenizer (a pad token, a BOS token, a chat template
with `{% generation %}` markers). Real bases do not, and each shape here keeps the traps of the
model it stands for, so a code path that works on these works on the class of real bases:

| shape   | stands for        | architecture | chat template            | BOS  | pad   | EOS |
|---------|-------------------|--------------|--------------------------|------|-------|-----|
| qwen2   | Qwen2.5 base      | Qwen2, tied  | ChatML, no markers       | none | = EOS | 1   |
| llama3  | Meta-Llama-3 base | Llama        | none                     | yes  | none  | 2   |
| mistral | Mistral-7B-v0.1   | Mistral      | none                     | yes  | none  | 1   |

Further traps: `model_max_length` of 1e30 (llama3, mistral: what their hub configs say), tied
input/output embeddings (qwen2), a generation config listing several EOS ids (llama3, as its
instruct sibling does), the context lengths the hub configs state (32768, 8192, 32768), and the
mistral shape runs the real Mistral-7B-v0.1 sentencepiece model that `mistral_common` ships.
Weights are random: shapes, not skills. head_dim is 32 so vLLM's CPU kernels run them.
Built in tests only, never as DAG targets.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

from speed.models.tiny import train_byte_bpe

SHAPES = ("qwen2", "llama3", "mistral")
# The context each base's hub config states: a config that sets max_model_len as the real model
# allows (config/quickstart.yaml: 8192) runs on the fixture too.
MAX_POSITIONS = {"qwen2": 32768, "llama3": 8192, "mistral": 32768}
HUGE_MAX_LENGTH = int(1e30)  # what a tokenizer_config.json says when its author set no limit

# ChatML as Qwen's base models carry it: a default system turn, no generation markers.
CHATML = (
    "{%- if messages[0]['role'] != 'system' -%}"
    "{{ '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}"
    "{%- endif -%}"
    "{%- for message in messages -%}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\n' }}{%- endif -%}"
)
QWEN_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
LLAMA_SPECIALS = [
    "<|begin_of_text|>",
    "<|end_of_text|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|eot_id|>",
    *(f"<|reserved_special_token_{i}|>" for i in range(4)),
]


def qwen2_tokenizer(vocab_size: int = 2048):
    """Byte-level BPE, no BOS, pad = eos = <|endoftext|>, ChatML without generation markers."""
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(
        tokenizer_object=train_byte_bpe(QWEN_SPECIALS, vocab_size),
        eos_token="<|endoftext|>",
        pad_token="<|endoftext|>",
        chat_template=CHATML,
        model_max_length=32768,
    )


def llama3_tokenizer(vocab_size: int = 2048):
    """Byte-level BPE whose post-processor prepends <|begin_of_text|>; no pad, no template."""
    from tokenizers import processors
    from transformers import PreTrainedTokenizerFast

    tok = train_byte_bpe(LLAMA_SPECIALS, vocab_size)
    bos = "<|begin_of_text|>"
    tok.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A",
        pair=f"{bos} $A {bos} $B",
        special_tokens=[(bos, tok.token_to_id(bos))],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=bos,
        eos_token="<|end_of_text|>",
        model_max_length=HUGE_MAX_LENGTH,
    )


def mistral_tokenizer(folder: Path):
    """The real Mistral-7B-v0.1 sentencepiece model: <s> added, no pad, no template. Saved as the
    hub repo has it (tokenizer.model beside the config), then loaded the way users load it."""
    from transformers import AutoTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    model = resources.files("mistral_common").joinpath("data", "tokenizer.model.v1")
    (folder / "tokenizer.model").write_bytes(model.read_bytes())
    config = {
        "tokenizer_class": "LlamaTokenizer",
        "bos_token": "<s>",
        "eos_token": "</s>",
        "unk_token": "<unk>",
        "add_bos_token": True,
        "add_eos_token": False,
        "legacy": True,
        "model_max_length": HUGE_MAX_LENGTH,
    }
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2))
    return AutoTokenizer.from_pretrained(folder)


def _model_config(shape: str, tok, hidden: int, layers: int):
    from transformers import LlamaConfig, MistralConfig, Qwen2Config

    common = dict(
        vocab_size=len(tok),
        hidden_size=hidden,
        intermediate_size=hidden * 2,
        num_hidden_layers=layers,
        num_attention_heads=hidden // 32,
        num_key_value_heads=max(1, hidden // 64),  # grouped-query attention, as all three use
        max_position_embeddings=MAX_POSITIONS[shape],
        eos_token_id=tok.eos_token_id,
    )
    if shape == "qwen2":  # no BOS id at all; small Qwens tie the embeddings
        return Qwen2Config(**common, bos_token_id=None, tie_word_embeddings=True)
    if shape == "llama3":
        return LlamaConfig(**common, bos_token_id=tok.bos_token_id, tie_word_embeddings=False)
    return MistralConfig(
        **common, bos_token_id=tok.bos_token_id, sliding_window=4096, tie_word_embeddings=False
    )


def _generation_config(shape: str, tok):
    from transformers import GenerationConfig

    if shape == "llama3":  # several stop ids, as Llama-3 instruct lists them
        eos = [tok.eos_token_id, tok.convert_tokens_to_ids("<|eot_id|>")]
        return GenerationConfig(bos_token_id=tok.bos_token_id, eos_token_id=eos)
    return GenerationConfig(bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)


def build_hub_model(
    shape: str, out_dir: str | Path, hidden: int = 64, layers: int = 2, seed: int = 0
) -> Path:
    """Save a random `shape` model with its tokenizer to `out_dir`; returns `out_dir`."""
    import torch
    from transformers import AutoModelForCausalLM

    out_dir = Path(out_dir)
    if shape == "mistral":
        tok = mistral_tokenizer(out_dir)
    else:
        tok = {"qwen2": qwen2_tokenizer, "llama3": llama3_tokenizer}[shape]()
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(_model_config(shape, tok, hidden, layers))
    model.generation_config = _generation_config(shape, tok)
    model.save_pretrained(out_dir)
    tok.save_pretrained(out_dir)
    return out_dir
