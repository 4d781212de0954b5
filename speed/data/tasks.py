"""Brainstorm answers: the task list in a teacher's answer, then cleaned (SPEED stage 2).

The teacher answers `{"tasks": [...]}` (speed.prompts.brainstorm.brainstorm_schema); the parser
also accepts the shapes a model gives without structured output: a JSON list, a Python-literal
list, a bulleted or numbered list, any of them inside a markdown fence.
"""

from __future__ import annotations

import ast
import json
import re
from typing import Any

from speed.data.repair import parse_json_object

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


def clean_tasks(
    tasks: list[str],
    max_words: int,
    max_chars: int | None = None,
    max_items: int | None = None,
) -> tuple[list[str], dict[str, int]]:
    """Drop empty, overlong and duplicate tasks, and those past the list's `max_items`, counting
    each reason. `max_chars` and `max_items` are brainstorm_schema's bounds
    (speed.prompts.brainstorm), checked here whatever decoded the answer."""
    kept: list[str] = []
    seen: set[str] = set()
    dropped = {"empty": 0, "overlong": 0, "duplicate": 0}
    if max_items is not None:
        dropped["beyond max items"] = max(0, len(tasks) - max_items)
        tasks = tasks[:max_items]
    for task in tasks:
        t = re.sub(r"\s+", " ", task).strip().strip("\"'").strip()
        key = t.casefold().rstrip(".")
        if not t:
            dropped["empty"] += 1
        elif len(t.split()) > max_words or (max_chars is not None and len(task) > max_chars):
            dropped["overlong"] += 1
        elif key in seen:
            dropped["duplicate"] += 1
        else:
            seen.add(key)
            kept.append(t)
    return kept, dropped
