"""Turn a generator's JSON into a training record, or name why it cannot be one."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from speed.data.repair import clean_string, parse_json_object
from speed.prompts.families import FAMILIES


def _norm(text: str) -> str:
    return " ".join(text.split()).casefold()  # split() and re's \s: the same whitespace


@dataclass(frozen=True)
class Checked:
    fields: dict[str, str] | None  # the family's keys, cleaned, when valid
    reason: str | None  # why not, when invalid
    repairs: tuple[str, ...] = ()


def check_example(family: str, output: dict[str, Any]) -> Checked:
    fam = FAMILIES[family]
    fields: dict[str, str] = {}
    for key in fam.keys:
        if key not in output:
            return Checked(None, f"missing key {key}")
        value = clean_string(output[key])
        if value is None:
            return Checked(None, f"empty key {key}")
        fields[key] = value
    q, p = _norm(fields[fam.query]), _norm(fields[fam.positive])
    n = _norm(fields[fam.negative]) if fam.negative else None
    if family == "classification":
        if p == n:
            return Checked(None, "label equals misleading label")
    elif family == "sts":
        if len({q, p, n}) < 3:
            return Checked(None, "S1, S2, S3 not distinct")
    else:
        if p == q:
            return Checked(None, "positive equals query")
        if n is not None and n in (p, q):
            return Checked(None, "negative equals positive or query")
    return Checked(fields, None)


def check_text(family: str, text: str) -> Checked:
    """Parse (with repair) and check one raw model output."""
    parsed = parse_json_object(text)
    if not parsed.ok:
        return Checked(None, parsed.error)
    checked = check_example(family, parsed.value)
    return Checked(checked.fields, checked.reason, tuple(parsed.repairs))


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
