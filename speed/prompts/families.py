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

from speed.llm.schema import string_fields

# The families whose prompts are conditioned on a brainstormed task (STS is conditioned on a
# topic). The one list the rules use too (rules/teacher.smk): its order is a rule param.
BRAINSTORMED = ["retrieval", "classification", "s2s", "p2p"]


@dataclass(frozen=True)
class Family:
    name: str
    query: str
    positive: str
    negative: str | None

    @property
    def keys(self) -> tuple[str, ...]:
        return tuple(k for k in (self.query, self.positive, self.negative) if k)

    @property
    def brainstormed(self) -> bool:
        return self.name in BRAINSTORMED


FAMILIES: dict[str, Family] = {
    f.name: f
    for f in (
        Family("classification", "input_text", "label", "misleading_label"),
        Family("retrieval", "user_query", "positive_document", "hard_negative_document"),
        Family("sts", "S1", "S2", "S3"),
        Family("s2s", "input", "positive_document", None),
        Family("p2p", "input", "positive_document", None),
    )
}

# STS examples have no brainstormed task; their instruction is the E5-style STS instruction.
STS_INSTRUCTION = "Retrieve semantically similar text."
# How the embedding model reads a query (E5-mistral's format; `embedding.query_format`): training
# writes it into speed_embedding.json and evaluation reads it from there. It ends with `{query}`,
# so what comes before is a prefix, as sentence-transformers' prompts are.
QUERY_FORMAT = "Instruct: {instruction}\nQuery: {query}"


def output_schema(family: str, max_chars: int) -> dict[str, Any]:
    """JSON Schema of one generated example: exactly the family's keys, all non-empty strings.
    `max_chars` bounds every field, so a runaway generation ends instead of filling max_tokens."""
    return string_fields(dict.fromkeys(FAMILIES[family].keys, max_chars), min_chars=1)


def field_max_chars(schema: dict[str, Any] | None) -> int | None:
    """The bound `output_schema` put on every field (None for a schema without one): the check
    after decoding needs it where the schema itself is not kept (speed/data/validate.py)."""
    bounds = [p.get("maxLength") for p in ((schema or {}).get("properties") or {}).values()]
    return max((b for b in bounds if isinstance(b, int)), default=None)
