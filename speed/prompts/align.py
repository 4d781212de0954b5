"""Prompts and schemas of the alignment signals: the teacher as judge and as reviser, and the
revisor's own prompt (SPEED stages 7, 9 and 10); the training targets' JSON form. The answers
are parsed by speed.data.signals."""

from __future__ import annotations

from typing import Any

from speed.llm.json_format import decoder_json, in_decoder_form, parse_pairs
from speed.prompts.families import FAMILIES, output_schema

_CRITERIA = (
    "Judge each answer on three things: relevance (does it serve the task it was written "
    "for), completeness (does it follow every guideline of the request) and accuracy (is it "
    "correct, coherent and in the requested JSON format)."
)


def judge_messages(request: str, candidates: list[str]) -> list[dict[str, str]]:
    numbered = "\n\n".join(f"[{i}]\n{c}" for i, c in enumerate(candidates))
    user = (
        "Several answers were written for the request below. Compare them.\n\n"
        f"=== Request ===\n{request}\n\n=== Answers ===\n{numbered}\n\n"
        f"{_CRITERIA}\n"
        'Give your verdict as a JSON object {"reason": ..., "best": ..., "worst": ...}: a short '
        "explanation, then the number of the best and of the worst answer (numbers start at "
        "0). Best and worst must be different answers."
    )
    return [{"role": "user", "content": user}]


def judge_schema(k: int, max_reason_chars: int) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {
            "reason": {"type": "string", "maxLength": max_reason_chars},
            "best": {"type": "integer", "minimum": 0, "maximum": k - 1},
            "worst": {"type": "integer", "minimum": 0, "maximum": k - 1},
        },
        "required": ["reason", "best", "worst"],
        "additionalProperties": False,
    }


def request_text(messages: list[dict[str, str]]) -> str:
    """The data prompt as the judge, reviser and revisor see it: its non-assistant turns."""
    return "\n\n".join(m["content"] for m in messages if m["role"] != "assistant")


def _revision_request(request: str, draft: str) -> str:
    return (
        "Below is a request for one training example and a draft answer to it.\n\n"
        f"=== Request ===\n{request}\n\n=== Draft ===\n{draft}\n\n"
    )


def revise_messages(request: str, draft: str) -> list[dict[str, str]]:
    """The teacher's critique-and-revise prompt."""
    user = _revision_request(request, draft) + (
        f"{_CRITERIA.replace('each answer', 'the draft')}\n"
        "Explain briefly what should change, then write the improved example. Answer with a "
        'JSON object {"reason": ..., "revision": ...} where "revision" is the improved '
        "example with exactly the keys the request asks for."
    )
    return [{"role": "user", "content": user}]


def revisor_messages(request: str, draft: str) -> list[dict[str, str]]:
    """The trained revisor's prompt: the same request and draft, answered by the revision alone."""
    user = _revision_request(request, draft) + (
        "Rewrite the draft so that it is relevant to the task, follows every guideline and is "
        "accurate. Answer with the improved JSON object only."
    )
    return [{"role": "user", "content": user}]


def revise_schema(family: str, max_field_chars: int, max_reason_chars: int) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {
            "reason": {"type": "string", "maxLength": max_reason_chars},
            "revision": output_schema(family, max_field_chars),
        },
        "required": ["reason", "revision"],
        "additionalProperties": False,
    }


def canonical_output(family: str, fields: dict[str, str]) -> str:
    """The JSON text a generator is trained to write: the family's keys in their order, in the
    form the constrained decoders write (speed.llm.json_format: compact, their escapes)."""
    return decoder_json({k: fields[k] for k in FAMILIES[family].keys})


def training_target(family: str, text: str, fields: dict[str, str]) -> str:
    """The assistant text to train on for a validated example: the writer's own `text` when the
    constrained decoder could have written exactly it for exactly these `fields` (compact, the
    family's keys in order, values as validated), else canonical_output(fields). So a target
    never holds a separator, key order or escape the decoder cannot emit, and the model is not
    taught a format the grammar then has to fight."""
    pairs = parse_pairs(text)
    keys = FAMILIES[family].keys
    if pairs is not None and dict(pairs) == fields and in_decoder_form(text, keys):
        return text
    return canonical_output(family, fields)
