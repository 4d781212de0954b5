"""The teacher's alignment signals, parsed: a judge's verdict over k candidates and a reviser's
critique and revision (SPEED stages 7 and 9; their prompts are speed.prompts.align)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from speed.data.repair import parse_json_object
from speed.data.validate import check_example


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


def parse_judgment(
    text: str, candidates_valid: list[bool], max_reason_chars: int | None = None
) -> Judgment:
    """A usable verdict or the reason it is not one; never a guess. The index range and
    `max_reason_chars` are judge_schema's bounds (speed.prompts.align), checked here whatever
    decoded the answer."""
    parsed = parse_json_object(text)
    if not parsed.ok:
        return Judgment(None, None, "", f"judgment: {parsed.error}")
    obj = parsed.value
    best, worst = _index(obj.get("best")), _index(obj.get("worst"))
    reason = str(obj.get("reason") or "")
    if max_reason_chars is not None and len(reason) > max_reason_chars:
        return Judgment(None, None, reason, "reason overlong")
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


@dataclass(frozen=True)
class Revision:
    fields: dict[str, str] | None
    reason: str
    error: str | None = None


def parse_revision(
    text: str,
    family: str,
    max_field_chars: int | None = None,
    max_reason_chars: int | None = None,
) -> Revision:
    """Accept the revision as a JSON object with the family's keys, or as a string holding one.
    The bounds are revise_schema's (speed.prompts.align), checked here whatever decoded the
    answer."""
    parsed = parse_json_object(text)
    if not parsed.ok:
        return Revision(None, "", f"revision: {parsed.error}")
    reason = str(parsed.value.get("reason") or "")
    if max_reason_chars is not None and len(reason) > max_reason_chars:
        return Revision(None, reason, "reason overlong")
    revision = parsed.value.get("revision")
    if isinstance(revision, str):
        inner = parse_json_object(revision)
        if not inner.ok:
            return Revision(None, reason, "revision string holds no JSON object")
        revision = inner.value
    if not isinstance(revision, dict):
        return Revision(None, reason, "revision missing or not an object")
    checked = check_example(family, revision, max_field_chars)
    if checked.fields is None:
        return Revision(None, reason, f"revision invalid: {checked.reason}")
    return Revision(checked.fields, reason)
