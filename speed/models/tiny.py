"""Tiny offline LLMs: a byte-level BPE tokenizer and small random Llamas, built as DAG targets.

They make the whole workflow run on a laptop CPU without the hub. Their outputs are noise, but
noise with the real shapes: chat template, JSON-constrained decoding, LoRA, vLLM, training.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

from speed.llm.fingerprint import write_digest

SPECIAL_TOKENS = ["<|pad|>", "<|begin|>", "<|end|>", "<|system|>", "<|user|>", "<|assistant|>"]

# `{% generation %}` marks the assistant text, so trl can train on the assistant part only.
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{%- for message in messages -%}"
    "{%- if message['role'] == 'assistant' -%}"
    "{{ '<|assistant|>\n' }}{% generation %}{{ message['content'] + '<|end|>' }}{% endgeneration %}"
    "{{ '\n' }}"
    "{%- else -%}"
    "{{ '<|' + message['role'] + '|>\n' + message['content'] + '<|end|>\n' }}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|assistant|>\n' }}{%- endif -%}"
)


def shipped_corpus() -> str:
    return resources.files("speed.assets").joinpath("tokenizer_corpus.txt").read_text()


def train_byte_bpe(special_tokens: list[str], vocab_size: int) -> Any:
    """A byte-level BPE trained on the shipped corpus: every byte stays encodable."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=special_tokens,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(shipped_corpus().splitlines(), trainer=trainer)
    return tok


def build_tokenizer(out_dir: str | Path, vocab_size: int) -> None:
    from transformers import PreTrainedTokenizerFast

    tok = train_byte_bpe(SPECIAL_TOKENS, vocab_size)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|begin|>",
        eos_token="<|end|>",
        pad_token="<|pad|>",
        chat_template=CHAT_TEMPLATE,
        model_max_length=4096,
    )
    fast.save_pretrained(out_dir)


def build_llama(
    out_dir: str | Path,
    tokenizer_dir: str | Path,
    hidden_size: int,
    num_layers: int,
    num_heads: int,
    seed: int,
    max_positions: int = 4096,
) -> None:
    """A random-weight Llama on the tiny tokenizer. vLLM's CPU kernels need head_dim >= 32."""
    import torch
    from transformers import AutoTokenizer, GenerationConfig, LlamaConfig, LlamaForCausalLM

    if hidden_size // num_heads < 32:
        raise ValueError(f"head_dim {hidden_size // num_heads} < 32: vLLM cannot run it")
    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=hidden_size,
        intermediate_size=hidden_size * 2,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_heads,
        max_position_embeddings=max_positions,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.generation_config = GenerationConfig(
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id
    )
    model.save_pretrained(out_dir)
    tok.save_pretrained(out_dir)
    write_digest(out_dir)  # the cache identity, without rehashing at each job start
