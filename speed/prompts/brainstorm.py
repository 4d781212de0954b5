"""Task brainstorming: one teacher call per (topic, family) for the brainstormed families.

The teacher answers `{"tasks": [...]}` (schema below); its answers are parsed and cleaned by
speed.data.tasks, and `choose_tasks` keeps the tasks of each topic.
"""

from __future__ import annotations

import random
from typing import Any

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


MAX_ITEMS = 8  # tasks per brainstormed list


def brainstorm_schema(max_chars: int, max_items: int = MAX_ITEMS) -> dict[str, Any]:
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


def choose_tasks(tasks: list[str], k: int, seed: int, topic: str, family: str) -> list[str]:
    """Keep `k` tasks per topic: a uniform draw from a generator seeded by (seed, topic, family),
    so a topic's choice does not move when other topics are added or removed."""
    rng = random.Random(f"{seed}:{topic}:{family}")
    return rng.sample(tasks, min(k, len(tasks)))
