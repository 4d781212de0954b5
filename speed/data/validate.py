"""Turn a generator's JSON into a training record, or name why it cannot be one.

These checks hold whatever decoded the output: they enforce the family schema's constraints that
OpenAI's strict mode cannot decode (speed/llm/schema.py: non-empty fields, `max_chars`), so a
`json_schema`, `json_object` or unconstrained answer is kept or dropped by the same rules.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from speed.data.repair import clean_string, parse_json_object
from speed.llm.types import DROPPED
from speed.prompts.families import FAMILIES


def _norm(text: str) -> str:
    return " ".join(text.split()).casefold()  # split() and re's \s: the same whitespace


@dataclass(frozen=True)
class Checked:
    fields: dict[str, str] | None  # the family's keys, cleaned, when valid
    reason: str | None  # why not, when invalid
    repairs: tuple[str, ...] = ()


def check_example(family: str, output: dict[str, Any], max_chars: int | None = None) -> Checked:
    """`max_chars`: the schema's bound on every field (its `maxLength`), when it has one."""
    fam = FAMILIES[family]
    fields: dict[str, str] = {}
    for key in fam.keys:
        if key not in output:
            return Checked(None, f"missing key {key}")
        value = clean_string(output[key])
        if value is None:
            return Checked(None, f"empty key {key}")
        if max_chars is not None and len(str(output[key])) > max_chars:
            return Checked(None, f"overlong key {key}")
        fields[key] = value
    q, p = _norm(fields[fam.query]), _norm(fields[fam.positive])
    n = _norm(fields[fam.negative]) if fam.negative else None
    if family == "classification":
        if p == n:
            return Checked(None, "label equals misleading label")
        if _contains_phrase(q, p) or _contains_phrase(q, n):
            return Checked(None, "label in input")  # SPEED: neither label appears in the input
    elif family == "sts":
        if len({q, p, n}) < 3:
            return Checked(None, "S1, S2, S3 not distinct")
    else:
        if p == q:
            return Checked(None, "positive equals query")
        if n is not None and n in (p, q):
            return Checked(None, "negative equals positive or query")
    return Checked(fields, None)


TRUNCATED = "truncated"


def unusable(finish_reason: str | None) -> str | None:
    """Why a completion cannot become data whatever its text holds: the server refused the
    request as too long (`context_length`), or the answer stopped at max_tokens (`truncated`:
    the end of what the model meant to write is missing, so no repair may close it)."""
    if finish_reason in DROPPED:
        return finish_reason
    return TRUNCATED if finish_reason == "length" else None


def check_text(
    family: str, text: str, max_chars: int | None = None, finish_reason: str | None = None
) -> Checked:
    """Parse (with repair) and check one raw model output; `unusable` ones are dropped first."""
    if (why := unusable(finish_reason)) is not None:
        return Checked(None, why)
    parsed = parse_json_object(text)
    if not parsed.ok:
        return Checked(None, parsed.error)
    checked = check_example(family, parsed.value, max_chars)
    return Checked(checked.fields, checked.reason, tuple(parsed.repairs))


def _contains_phrase(text: str, phrase: str | None) -> bool:
    """`phrase` as whole words in `text` (both normalized by `_norm`)."""
    if not phrase:
        return False
    return re.search(rf"(?<!\w){re.escape(phrase)}(?!\w)", text) is not None


def training_record(
    family: str, fields: dict[str, str], instruction: str, provenance: dict[str, Any]
) -> dict[str, Any]:
    """`{query, positive, negative|None, instruction, family, ...provenance}` (SPEED.md)."""
    fam = FAMILIES[family]
    return {
        "query": fields[fam.query],
        "positive": fields[fam.positive],
        "negative": fields[fam.negative] if fam.negative else None,
        "instruction": instruction,
        "family": family,
        **provenance,
    }
