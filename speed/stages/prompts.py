"""Topic selection and data-prompt building (SPEED stages 1 and 3): deterministic, no model."""

from __future__ import annotations

import logging
from typing import Any

from speed.io import read_jsonl, write_jsonl
from speed.prompts.data import build_prompts
from speed.topics import load_topic_source, select_topics

log = logging.getLogger(__name__)


def run_topics(
    *,
    source: str,
    path: str | None,
    n: int,
    seed: int,
    max_depth: int,
    include: list[str],
    exclude: list[str],
    output: str,
) -> int:
    topics = select_topics(
        load_topic_source(source, path),
        n,
        seed,
        max_depth=max_depth,
        include=include,
        exclude=exclude,
    )
    log.info("selected %d topics from %s", len(topics), path or source)
    return write_jsonl(output, topics)


def run_prompts(
    *,
    purpose: str,
    n: int,
    mix: dict[str, float],
    tasks: dict[str, str],
    topics_path: str,
    seed: int,
    max_field_chars: int,
    output: str,
) -> int:
    task_rows: dict[str, list[dict[str, Any]]] = {f: read_jsonl(p) for f, p in tasks.items()}
    prompts = build_prompts(
        purpose, n, mix, task_rows, read_jsonl(topics_path), seed, max_field_chars
    )
    log.info("%d %s prompts", len(prompts), purpose)
    return write_jsonl(output, prompts)
