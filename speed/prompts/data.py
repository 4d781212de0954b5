"""Data prompts: one prompt per example to generate, with attributes sampled per prompt.

Distributions are SPEED's (the paper's data-prompt stage, arXiv 2410.18634). Every prompt lists
its guidelines in a freshly shuffled order. Purposes (seed, candidates, synthesis, teacher_only)
never share a prompt: a prompt belongs to the purpose its content hash selects, so each purpose
is built on its own (changing one purpose's size rebuilds nothing else) and still no two purposes
can collide. Within a purpose a prompt may repeat: each prompt id is sampled with its own seed.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Sequence
from typing import Any

from speed.prompts.families import FAMILIES, STS_INSTRUCTION, output_schema

PURPOSES = ("seed", "candidates", "synthesis", "teacher_only")

Dist = dict[Any, float]

RETRIEVAL_QUERY_TYPE: Dist = {"extremely long-tail": 0.4, "long-tail": 0.5, "common": 0.1}
RETRIEVAL_QUERY_LENGTH: Dist = {
    "less than 5 words": 0.4,
    "5 to 15 words": 0.4,
    "at least 10 words": 0.2,
}
CLARITY: Dist = {"clear": 0.6, "understandable with some effort": 0.2, "ambiguous": 0.2}
DOC_MIN_WORDS = [50, 100, 200, 300, 400, 500]
EDUCATION = ["high school", "college", "PhD"]
CLASSIFICATION_LENGTH: Dist = {
    "less than 10 words": 0.1,
    "at least 10 words": 0.3,
    "at least 50 words": 0.2,
    "at least 100 words": 0.2,
    "at least 200 words": 0.2,
}
STS_UNIT: Dist = {"sentence": 0.9, "phrase": 0.05, "passage": 0.05}
STS_HIGH = [4, 4.5, 5]
STS_LOW = [2.5, 3, 3.5]
STS_EDUCATION = ["elementary school", "high school", "college"]
EDUCATION_PROBABILITY = 0.5


def _pick(rng: random.Random, dist: Dist) -> Any:
    return rng.choices(list(dist), weights=list(dist.values()))[0]


def sample_attributes(family: str, rng: random.Random) -> dict[str, Any]:
    if family == "retrieval":
        attrs = {
            "query_type": _pick(rng, RETRIEVAL_QUERY_TYPE),
            "query_length": _pick(rng, RETRIEVAL_QUERY_LENGTH),
            "clarity": _pick(rng, CLARITY),
            "num_words": rng.choice(DOC_MIN_WORDS),
        }
        if rng.random() < EDUCATION_PROBABILITY:
            attrs["education"] = rng.choice(EDUCATION)
        return attrs
    if family == "classification":
        attrs = {"length": _pick(rng, CLASSIFICATION_LENGTH)}
        if rng.random() < EDUCATION_PROBABILITY:  # clarity and education come together
            attrs["clarity"] = _pick(rng, CLARITY)
            attrs["education"] = rng.choice(EDUCATION)
        return attrs
    if family == "sts":
        attrs = {
            "unit": _pick(rng, STS_UNIT),
            "high_score": rng.choice(STS_HIGH),
            "low_score": rng.choice(STS_LOW),
        }
        if rng.random() < EDUCATION_PROBABILITY:
            attrs["education"] = rng.choice(STS_EDUCATION)
        return attrs
    return {}  # s2s and p2p have fixed guidelines


def _guidelines(family: str, a: dict[str, Any]) -> list[str]:
    edu = a.get("education")
    if family == "retrieval":
        g = [
            f"The query is {a['query_type']}, {a['query_length']} long, and {a['clarity']}.",
            f"The positive document has at least {a['num_words']} words and answers the query "
            "well.",
            "The hard negative document looks related to the query and is still useful, but "
            "less so than the positive document.",
            "Write each document as if the query did not exist: no copied phrases from it.",
            "Keys: user_query, positive_document, hard_negative_document.",
        ]
        if edu:
            g.append(f"Understanding the documents takes {edu} level education.")
        return g
    if family == "classification":
        g = [
            f"The input text is {a['length']} long.",
            "The label is the correct answer for the input under this task.",
            "The misleading label is a valid label for this task that fits the input worse.",
            "Neither label occurs verbatim in the input text.",
            "Keys: input_text, label, misleading_label.",
        ]
        if edu:
            g.append(f"The input text is {a['clarity']} and needs {edu} level education.")
        return g
    if family == "sts":
        unit = a["unit"]
        g = [
            f"S1, S2 and S3 are each a {unit}.",
            f"On a scale from 1 (unrelated) to 5 (same meaning), S2 scores {a['high_score']} "
            "against S1.",
            f"On the same scale, S3 scores {a['low_score']} against S1.",
            "The three texts share some words, so surface overlap alone does not decide.",
            "Keys: S1, S2, S3.",
        ]
        if edu:
            g.append(f"Write for readers with {edu} level education.")
        return g
    length = "very short: a sentence or a phrase" if family == "s2s" else "at least 300 words"
    return [
        f"Both texts are {length}.",
        "The positive document belongs with the input under this task.",
        "The two texts have little word overlap and are written independently.",
        "Keys: input, positive_document.",
    ]


def build_messages(
    family: str, attrs: dict[str, Any], task: str | None, topic: str, rng: random.Random
) -> list[dict[str, str]]:
    guidelines = _guidelines(family, attrs)
    rng.shuffle(guidelines)
    if FAMILIES[family].brainstormed:
        opening = f"Write one training example for this task: {task}"
    else:
        opening = (
            "Write one example of three texts for judging semantic similarity, about this "
            f"topic: {topic.replace('/', ' > ')}"
        )
    body = "\n".join(f"- {g}" for g in guidelines)
    closing = "Answer with the JSON object only, in English, with no text before or after it."
    return [{"role": "user", "content": f"{opening}\n\nGuidelines:\n{body}\n\n{closing}"}]


def family_counts(n: int, mix: dict[str, float]) -> dict[str, int]:
    """Exact quotas by largest remainder, so a small run still has the configured mix."""
    total = sum(mix.values())
    raw = {f: n * w / total for f, w in mix.items()}
    counts = {f: int(v) for f, v in raw.items()}
    for f in sorted(raw, key=lambda f: (counts[f] - raw[f], f))[: n - sum(counts.values())]:
        counts[f] += 1
    return counts


def _bucket(messages: list[dict[str, str]]) -> int:
    digest = hashlib.sha256(json.dumps(messages, sort_keys=True).encode()).digest()
    return int.from_bytes(digest[:8], "big") % len(PURPOSES)


def build_prompts(
    purpose: str,
    n: int,
    mix: dict[str, float],
    tasks: dict[str, Sequence[dict[str, Any]]],
    topics: Sequence[dict[str, Any]],
    seed: int,
    max_field_chars: int,
    max_tries: int = 1000,
) -> list[dict[str, Any]]:
    """`n` prompts for `purpose`. `tasks[family]` lists {task, topic, topic_id} records."""
    if purpose not in PURPOSES:
        raise ValueError(f"unknown prompt purpose {purpose!r}; expected one of {PURPOSES}")
    rng = random.Random(f"{seed}:prompts:{purpose}")
    counts = family_counts(n, mix)
    order = [f for f, c in counts.items() for _ in range(c)]
    rng.shuffle(order)
    for family, count in counts.items():
        if not count:
            continue
        if FAMILIES[family].brainstormed and not tasks.get(family):
            raise ValueError(f"no brainstormed tasks for family {family}: cannot build prompts")
        if not FAMILIES[family].brainstormed and not topics:
            raise ValueError(f"no topics: cannot build {family} prompts")
    prompts = []
    for i, family in enumerate(order):
        for _ in range(max_tries):
            if FAMILIES[family].brainstormed:
                source = dict(rng.choice(tasks[family]))
            else:
                t = rng.choice(topics)
                source = {"task": None, "topic": t["path"], "topic_id": t["id"]}
            attrs = sample_attributes(family, rng)
            messages = build_messages(family, attrs, source["task"], source["topic"], rng)
            # Repeats within a purpose are fine (each prompt id samples with its own seed);
            # s2s/p2p have few distinct prompts per task, so uniqueness would cap their count.
            if _bucket(messages) == PURPOSES.index(purpose):
                break
        else:
            raise ValueError(
                f"no {family} prompt for purpose {purpose} in {max_tries} draws: "
                "too few tasks/topics to vary the prompts"
            )
        prompts.append(
            {
                "id": f"{purpose}-{i:06d}",
                "purpose": purpose,
                "family": family,
                "task": source["task"],
                "instruction": source["task"] or STS_INSTRUCTION,
                "topic": source["topic"],
                "topic_id": source["topic_id"],
                "attributes": attrs,
                "messages": messages,
                "schema": output_schema(family, max_field_chars),
            }
        )
    return prompts
