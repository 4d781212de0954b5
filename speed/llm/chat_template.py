"""The chat template a generator is trained and served with.

Hub bases come in three kinds: a template with `{% generation %}` markers (kept: trl can mask
the loss to the answer with it), a template without markers (Qwen2.5 base: ChatML), or none at
all (Llama-3, Mistral base). The last two are trained and served with PROJECT_TEMPLATE, unless
`generation.chat_template` names a file. The choice is made once, when the junior or revisor is
trained from the base; the trained folder saves the template (chat_template.jinja) and its
end-of-turn token among generation_config.json's EOS ids, so `apply_chat_template`, the
transformers backend and vLLM all read the same template and stop on the same token with no
extra flag.

PROJECT_TEMPLATE uses only text and the tokenizer's own BOS and EOS: no new tokens, so no
embedding rows to add and train (a LoRA run would leave new rows random, and vLLM cannot load
resized embeddings from a LoRA). The EOS ends each assistant turn, inside the generation markers,
so the model learns to stop; as a base model has seen EOS between documents, it is also the
token it most readily ends on. Role lines end with a newline: byte-level and sentencepiece
tokenizers split there, so the prompt's tokens are a prefix of the prompt+answer's tokens and
training and decoding see the same ids.

Pad: a base with none pads with its EOS. Both trainers build labels from masks (the assistant
mask in SFT, the completion mask in DPO), never by comparing ids with the pad id, so the EOS
that ends an answer keeps its label; the attention mask hides the padding.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

# Role header, a newline, the content; turns apart by a blank line; the assistant's text and the
# EOS that ends it are inside the markers. BOS only when the tokenizer has one (Qwen has none).
PROJECT_TEMPLATE = (
    "{%- if bos_token is defined and bos_token %}{{ bos_token }}{% endif -%}"
    "{%- for message in messages -%}"
    "{%- if not loop.first %}{{ '\n\n' }}{% endif -%}"
    "{{ message['role'] | capitalize }}{{ ':\n' }}"
    "{%- if message['role'] == 'assistant' -%}"
    "{% generation %}{{ message['content'] }}{{ eos_token }}{% endgeneration %}"
    "{%- else -%}"
    "{{ message['content'] }}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}"
    "{%- if messages %}{{ '\n\n' }}{% endif %}{{ 'Assistant:\n' }}"
    "{%- endif -%}"
)

_MARKER = re.compile(r"\{%-?\s*generation\s*-?%\}")
_PROBE = [{"role": "user", "content": "Ping?"}, {"role": "assistant", "content": "Pong."}]


def has_generation_markers(template: str | None) -> bool:
    return isinstance(template, str) and _MARKER.search(template) is not None


def own_template(tokenizer: Any) -> str | None:
    """The tokenizer's default template (named variants load as a dict)."""
    template = tokenizer.chat_template
    if isinstance(template, dict):
        template = template.get("default")
    return template


def training_template(tokenizer: Any, override: str | Path | None = None) -> tuple[str, str]:
    """(template, where it comes from): the `override` file ("file"), the base's own template
    when it has generation markers ("base"), else PROJECT_TEMPLATE ("project")."""
    if override is not None:
        text = Path(override).read_text(encoding="utf-8")
        if not has_generation_markers(text):
            raise ValueError(
                f"chat template {override} has no {{% generation %}} markers: the loss could "
                "not be restricted to the answer"
            )
        return text, "file"
    template = own_template(tokenizer)
    if has_generation_markers(template):
        return template, "base"
    return PROJECT_TEMPLATE, "project"


def serving_template(tokenizer: Any) -> str:
    """What a folder is served with: its own template, else the project's (a base that was
    never trained here, e.g. a local teacher without a template)."""
    return own_template(tokenizer) or PROJECT_TEMPLATE


def _is_special(tokenizer: Any, token_id: int) -> bool:
    added = tokenizer.added_tokens_decoder.get(token_id)
    return token_id in tokenizer.all_special_ids or bool(added is not None and added.special)


def end_of_turn_id(tokenizer: Any, template: str) -> int:
    """The token that ends an assistant turn under `template`: the last token inside the
    generation markers, which must be a special token (one a stop list can name). Raises when
    the template does not render a probe conversation the way training and decoding need:
    "None" in the text (a missing BOS/EOS), a generation prompt that is not a prefix of the
    answered conversation, or an answer span that does not end on a special token."""
    prompt = tokenizer.apply_chat_template(
        _PROBE[:1], chat_template=template, tokenize=False, add_generation_prompt=True
    )
    full = tokenizer.apply_chat_template(_PROBE, chat_template=template, tokenize=False)
    if "None" in full:
        raise ValueError(f"chat template renders 'None' (a missing special token?): {full!r}")
    if not full.startswith(prompt):
        raise ValueError(f"generation prompt {prompt!r} is not a prefix of {full!r}")
    enc = tokenizer.apply_chat_template(
        _PROBE,
        chat_template=template,
        tokenize=True,
        return_dict=True,
        return_assistant_tokens_mask=True,
    )
    answer = [t for t, m in zip(enc["input_ids"], enc["assistant_masks"], strict=True) if m]
    if not answer or not _is_special(tokenizer, answer[-1]):
        raise ValueError(
            "chat template's answer span (inside {% generation %}) does not end on a special "
            f"token: {tokenizer.decode(answer)!r}; the model would not learn to stop"
        )
    return answer[-1]


def prepare_generator_tokenizer(tokenizer: Any, template: str) -> int:
    """Set `template` and a pad token (EOS when the base has none, see the module doc) on a
    generator's tokenizer; returns the template's end-of-turn token id."""
    if tokenizer.eos_token is None:
        raise ValueError("generator tokenizer has no eos_token: turns could not end")
    tokenizer.chat_template = template
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return end_of_turn_id(tokenizer, template)


def eos_ids(generation_config: Any) -> list[int]:
    eos = getattr(generation_config, "eos_token_id", None)
    return list(eos) if isinstance(eos, list | tuple) else [] if eos is None else [eos]


def add_stop_ids(generation_config: Any, *ids: int | None) -> list[int]:
    """Append `ids` to the config's EOS ids (kept in order, no duplicates): vLLM and the
    transformers backend stop on every id listed there. Returns the new list."""
    merged = list(dict.fromkeys([*eos_ids(generation_config), *(i for i in ids if i is not None)]))
    generation_config.eos_token_id = merged[0] if len(merged) == 1 else merged
    return merged
