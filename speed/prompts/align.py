"""Prompts and parsers of the alignment signals: the teacher as judge and as reviser, and the
revisor's own prompt (SPEED stages 7, 9 and 10)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from speed.data.repair import parse_json_object
from speed.data.validate import check_example
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


@dataclass(frozen=True)
class Judgment:
    best: int | None
    worst: int | None
    reason: str
    error: str | None = None


def _index(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().lstrip("[").rstrip("]").isdigit():
        return int(value.strip().lstrip("[").rstrip("]"))
    return None


def parse_judgment(text: str, candidates_valid: list[bool]) -> Judgment:
    """A usable verdict or the reason it is not one; never a guess."""
    parsed = parse_json_object(text)
    if not parsed.ok:
        return Judgment(None, None, "", f"judgment: {parsed.error}")
    obj = parsed.value
    best, worst = _index(obj.get("best")), _index(obj.get("worst"))
    reason = str(obj.get("reason") or "")
    k = len(candidates_valid)
    if best is None or worst is None:
        return Judgment(None, None, reason, "best/worst missing or not an index")
    if not (0 <= best < k and 0 <= worst < k):
        return Judgment(None, None, reason, "index out of range")
    if best == worst:
        return Judgment(None, None, reason, "best equals worst")
    if not candidates_valid[best]:
        return Judgment(None, None, reason, "chosen candidate is invalid")
    return Judgment(best, worst, reason)


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


@dataclass(frozen=True)
class Revision:
    fields: dict[str, str] | None
    reason: str
    error: str | None = None


def parse_revision(text: str, family: str) -> Revision:
    """Accept the revision as a JSON object with the family's keys, or as a string holding one."""
    parsed = parse_json_object(text)
    if not parsed.ok:
        return Revision(None, "", f"revision: {parsed.error}")
    reason = str(parsed.value.get("reason") or "")
    revision = parsed.value.get("revision")
    if isinstance(revision, str):
        inner = parse_json_object(revision)
        if not inner.ok:
            return Revision(None, reason, "revision string holds no JSON object")
        revision = inner.value
    if not isinstance(revision, dict):
        return Revision(None, reason, "revision missing or not an object")
    checked = check_example(family, revision)
    if checked.fields is None:
        return Revision(None, reason, f"revision invalid: {checked.reason}")
    return Revision(checked.fields, reason)


def canonical_output(family: str, fields: dict[str, str]) -> str:
    """The JSON text a generator is trained to write: the family's keys in their order."""
    return json.dumps({k: fields[k] for k in FAMILIES[family].keys}, ensure_ascii=False)
