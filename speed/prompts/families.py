"""The five task families: the JSON keys a generator returns and how they map to training records.

| family         | query        | positive           | negative                |
|----------------|--------------|--------------------|-------------------------|
| classification | input_text   | label              | misleading_label        |
| retrieval      | user_query   | positive_document  | hard_negative_document  |
| sts            | S1           | S2                 | S3                      |
| s2s, p2p       | input        | positive_document  | (none)                  |
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Family:
    name: str
    query: str
    positive: str
    negative: str | None
    brainstormed: bool  # STS is conditioned on a topic, the others on a brainstormed task

    @property
    def keys(self) -> tuple[str, ...]:
        return tuple(k for k in (self.query, self.positive, self.negative) if k)


FAMILIES: dict[str, Family] = {
    f.name: f
    for f in (
        Family("classification", "input_text", "label", "misleading_label", True),
        Family("retrieval", "user_query", "positive_document", "hard_negative_document", True),
        Family("sts", "S1", "S2", "S3", False),
        Family("s2s", "input", "positive_document", None, True),
        Family("p2p", "input", "positive_document", None, True),
    )
}
BRAINSTORMED = [name for name, f in FAMILIES.items() if f.brainstormed]

# STS examples have no brainstormed task; their instruction is the E5-style STS instruction.
STS_INSTRUCTION = "Retrieve semantically similar text."


def output_schema(family: str, max_chars: int) -> dict[str, Any]:
    """JSON Schema of one generated example: exactly the family's keys, all non-empty strings.
    `max_chars` bounds every field, so a runaway generation ends instead of filling max_tokens."""
    keys = FAMILIES[family].keys
    return {
        "type": "object",
        "properties": {k: {"type": "string", "minLength": 1, "maxLength": max_chars} for k in keys},
        "required": list(keys),
        "additionalProperties": False,
    }
