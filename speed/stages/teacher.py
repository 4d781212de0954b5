"""Teacher stages: task brainstorming and seed examples (SPEED stages 2 and 4)."""

from __future__ import annotations

import hashlib
import json
import logging
from collections import Counter
from pathlib import Path
from typing import Any

from speed.data.tasks import clean_tasks, parse_task_list
from speed.data.validate import check_text, training_record, unusable
from speed.io import atomic_file, read_jsonl, write_jsonl
from speed.llm.factory import open_client
from speed.llm.types import Request, Sampling
from speed.prompts.align import training_target
from speed.prompts.brainstorm import (
    MAX_ITEMS,
    brainstorm_messages,
    brainstorm_schema,
    choose_tasks,
)
from speed.prompts.families import field_max_chars

log = logging.getLogger(__name__)


def stable_seed(*parts: Any) -> int:
    """A per-request sampling seed that depends on what the request is, not on its position,
    so adding topics or prompts leaves the other requests' cache keys unchanged."""
    digest = hashlib.sha256(":".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


def prompt_requests(
    prompts: list[dict[str, Any]],
    sampling: dict[str, Any],
    seed: int,
    purpose: str,
    n: int = 1,
) -> list[Request]:
    """One request per data prompt (its messages and family schema), seeded by prompt id."""
    return [
        Request.chat(
            p["messages"],
            Sampling(**sampling, seed=stable_seed(seed, purpose, p["id"])),
            schema=p["schema"],
            n=n,
            id=p["id"],
        )
        for p in prompts
    ]


def write_stats(path: str | Path, stats: dict[str, Any]) -> None:
    with atomic_file(path) as f:
        json.dump(stats, f, indent=2, sort_keys=True)
        f.write("\n")


def brainstorm_requests(
    family: str,
    topics: list[dict[str, Any]],
    list_size: int,
    max_task_chars: int,
    sampling: dict[str, Any],
    seed: int,
) -> list[Request]:
    """One teacher call per topic, seeded by (seed, family, topic)."""
    schema = brainstorm_schema(max_task_chars)
    return [
        Request.chat(
            brainstorm_messages(family, t["path"], list_size),
            Sampling(**sampling, seed=stable_seed(seed, "brainstorm", family, t["path"])),
            schema=schema,
            id=t["id"],
        )
        for t in topics
    ]


def run_brainstorm(
    *,
    llm: dict[str, Any],
    family: str,
    topics_path: str,
    tasks_per_topic: int,
    list_size: int,
    max_task_words: int,
    max_task_chars: int,
    sampling: dict[str, Any],
    seed: int,
    price: dict[str, float],
    cache_dir: str,
    output: str,
    stats_output: str,
    ledger: str,
) -> dict[str, Any]:
    topics = read_jsonl(topics_path)
    requests = brainstorm_requests(family, topics, list_size, max_task_chars, sampling, seed)
    with open_client(llm, cache_dir, ledger, stage="brainstorm", price=price) as client:
        results = client.generate(requests)
    rows: list[dict[str, Any]] = []
    dropped: Counter[str] = Counter()
    refused: Counter[str] = Counter()  # answers unusable as a whole (validate.unusable)
    lists_without_tasks = 0
    for topic, (completion,) in zip(topics, results, strict=True):
        if (why := unusable(completion.finish_reason)) is not None:
            refused[why] += 1
            continue
        tasks = parse_task_list(completion.text)
        kept, why = clean_tasks(tasks, max_task_words, max_task_chars, MAX_ITEMS)
        dropped.update(why)
        if not kept:
            lists_without_tasks += 1
            continue
        for task in choose_tasks(kept, tasks_per_topic, seed, topic["path"], family):
            rows.append(
                {
                    "id": f"{family}-{len(rows):06d}",
                    "family": family,
                    "task": task,
                    "topic": topic["path"],
                    "topic_id": topic["id"],
                }
            )
    write_jsonl(output, rows)
    stats = {
        "family": family,
        "topics": len(topics),
        "teacher_calls": len(requests),
        "topics_without_usable_tasks": lists_without_tasks,
        "requests_dropped": dict(refused),
        "dropped_tasks": dict(dropped),
        "tasks_kept": len(rows),
    }
    write_stats(stats_output, stats)
    log.info("brainstorm %s: %s", family, stats)
    return stats


def seed_record(
    prompt: dict[str, Any], text: str, fields: dict[str, str], generator: str, index: int
) -> dict[str, Any]:
    """A seed example's training record, with the text the junior trains on: the teacher's own
    when the decoder could have written it (speed.llm.json_format)."""
    provenance = {
        "topic": prompt["topic"],
        "topic_id": prompt["topic_id"],
        "task": prompt["task"],
        "prompt_id": prompt["id"],
        "generator": generator,
        "stage": "seed",
    }
    record = training_record(prompt["family"], fields, prompt["instruction"], provenance)
    record["id"] = f"seed-{index:06d}"
    record["output"] = training_target(prompt["family"], text, fields)
    return record


def run_seed(
    *,
    llm: dict[str, Any],
    prompts_path: str,
    sampling: dict[str, Any],
    seed: int,
    price: dict[str, float],
    cache_dir: str,
    output: str,
    rejects_output: str,
    stats_output: str,
    ledger: str,
) -> dict[str, Any]:
    prompts = read_jsonl(prompts_path)
    requests = prompt_requests(prompts, sampling, seed, "seed")
    with open_client(llm, cache_dir, ledger, stage="seed", price=price) as client:
        results = client.generate(requests)
    records, rejects = [], []
    reasons: Counter[str] = Counter()
    repairs: Counter[str] = Counter()
    per_family: dict[str, Counter[str]] = {}
    for p, (completion,) in zip(prompts, results, strict=True):
        fam = per_family.setdefault(p["family"], Counter())
        fam["in"] += 1
        checked = check_text(
            p["family"], completion.text, field_max_chars(p["schema"]), completion.finish_reason
        )
        repairs.update(checked.repairs)
        if checked.fields is None:
            reasons[checked.reason] += 1
            fam["rejected"] += 1
            fam[f"rejected: {checked.reason}"] += 1
            rejects.append(
                {
                    "prompt_id": p["id"],
                    "family": p["family"],
                    "reason": checked.reason,
                    "text": completion.text,
                    "finish_reason": completion.finish_reason,
                }
            )
            continue
        fam["kept"] += 1
        generator = f"teacher:{llm.get('name', llm['model'])}"
        records.append(seed_record(p, completion.text, checked.fields, generator, len(records)))
    write_jsonl(output, records)
    write_jsonl(rejects_output, rejects)
    stats = {
        "prompts": len(prompts),
        "kept": len(records),
        "rejected": len(rejects),
        "reject_reasons": dict(reasons),
        "repairs": dict(repairs),
        "per_family": {f: dict(c) for f, c in sorted(per_family.items())},
    }
    write_stats(stats_output, stats)
    log.info("seed: %s", stats)
    return stats
