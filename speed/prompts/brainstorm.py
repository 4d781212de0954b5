"""Task brainstorming: one teacher call per (topic, family) for the brainstormed families.

The teacher answers `{"tasks": [...]}` (schema below); the parser also accepts the shapes a model
gives without structured output: a JSON list, a Python-literal list, a bulleted or numbered list,
any of them inside a markdown fence.
"""

from __future__ import annotations

import ast
import json
import random
import re
from typing import Any

from speed.data.repair import parse_json_object

_INTRO = {
    "retrieval": (
        "We are collecting text retrieval tasks for training a text embedding model. In each "
        "task, a user query is used to find the documents that answer or support it."
    ),
    "classification": (
        "We are collecting text classification tasks for training a text embedding model. In "
        "each task, a piece of text is assigned one label from a fixed set."
    ),
    "s2s": (
        "We are collecting short-text matching tasks for training a text embedding model. In "
        "each task, a sentence or phrase is paired with another short text that belongs with it "
        "(for example a title with its keywords, or a question with its intent)."
    ),
    "p2p": (
        "We are collecting long-text matching tasks for training a text embedding model. In each "
        "task, a passage of several paragraphs is paired with another long passage that belongs "
        "with it (for example a paper abstract with its introduction)."
    ),
}

_EXTRA = {
    "retrieval": (
        "Vary the kind of query across the list: a terse keyword search, a question as asked "
        "in a help forum, a claim to be checked against evidence, an argument to support or "
        "counter, a question that needs facts from two sources, a piece of code searched by "
        "its description, news chosen for a reader."
    ),
    "classification": (
        "Do not propose the usual kinds of classification: sentiment, subject or topic, field "
        "of study, genre, spam detection, urgency or language identification. Think of label "
        "sets a practitioner in this area would really need."
    ),
    "s2s": "Keep both sides of each pair short: a sentence, a title or a phrase.",
    "p2p": "Both sides of each pair should be long texts, a few hundred words each.",
}

_FORMAT = (
    "Topic: {topic}\n\n"
    "Propose about {k} different tasks of this kind that people working on this topic could "
    "use. Describe each task in one sentence of roughly ten words, as an instruction (for "
    'example "Given a ..., find ..."). Answer with a JSON object {{"tasks": [...]}} holding the '
    "task descriptions as strings, and nothing else."
)


def brainstorm_messages(family: str, topic: str, k: int = 5) -> list[dict[str, str]]:
    user = f"{_INTRO[family]}\n{_EXTRA[family]}\n\n{_FORMAT.format(topic=topic, k=k)}"
    return [{"role": "user", "content": user}]


def brainstorm_schema(max_chars: int, max_items: int = 8) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {
            "tasks": {
                "type": "array",
                "items": {"type": "string", "minLength": 1, "maxLength": max_chars},
                "minItems": 1,
                "maxItems": max_items,
            }
        },
        "required": ["tasks"],
        "additionalProperties": False,
    }


_FENCE = re.compile(r"```[a-zA-Z]*\s*\n?(.*?)(?:```|$)", re.DOTALL)
_BULLET = re.compile(r"^\s*(?:[-*\u2022]|\d+[.)]|\(\d+\))\s+(.+?)\s*$")


def _as_strings(value: Any) -> list[str] | None:
    if isinstance(value, dict):
        lists = [v for v in value.values() if isinstance(v, list)]
        value = value["tasks"] if isinstance(value.get("tasks"), list) else None
        value = lists[0] if value is None and len(lists) == 1 else value
    if isinstance(value, list):
        strings = [v for v in value if isinstance(v, str)]
        return strings if strings or not value else None  # numbers are not task descriptions
    return None


def parse_task_list(text: str) -> list[str]:
    """The task descriptions in a brainstorm answer; [] when none can be found."""
    if not text or not text.strip():
        return []
    fenced = _FENCE.search(text)
    body = (fenced.group(1) if fenced else text).strip()
    bullets = [m.group(1) for line in body.splitlines() if (m := _BULLET.match(line))]
    bullets = [b.strip().rstrip(",").strip().strip('"').strip() for b in bullets]
    if len(bullets) >= 2:  # a bulleted list: a bracket inside one item is not the list
        return bullets
    start, end = body.find("["), body.rfind("]")
    if start >= 0 and end > start:
        snippet = body[start : end + 1]
        for load in (json.loads, ast.literal_eval):  # literal_eval: literals only, never eval
            try:
                found = _as_strings(load(snippet))
            except (ValueError, SyntaxError, json.JSONDecodeError, MemoryError, RecursionError):
                continue
            if found is not None:
                return found
    parsed = parse_json_object(body)
    if parsed.ok and (found := _as_strings(parsed.value)) is not None:
        return found
    return bullets


def clean_tasks(tasks: list[str], max_words: int) -> tuple[list[str], dict[str, int]]:
    """Drop empty, overlong and duplicate tasks, counting each reason."""
    kept: list[str] = []
    seen: set[str] = set()
    dropped = {"empty": 0, "overlong": 0, "duplicate": 0}
    for task in tasks:
        t = re.sub(r"\s+", " ", task).strip().strip("\"'").strip()
        key = t.casefold().rstrip(".")
        if not t:
            dropped["empty"] += 1
        elif len(t.split()) > max_words:
            dropped["overlong"] += 1
        elif key in seen:
            dropped["duplicate"] += 1
        else:
            seen.add(key)
            kept.append(t)
    return kept, dropped


def choose_tasks(tasks: list[str], k: int, seed: int, topic: str, family: str) -> list[str]:
    """Keep `k` tasks per topic: a uniform draw from a generator seeded by (seed, topic, family),
    so a topic's choice does not move when other topics are added or removed."""
    rng = random.Random(f"{seed}:{topic}:{family}")
    return rng.sample(tasks, min(k, len(tasks)))
