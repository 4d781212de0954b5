"""Synthesis at scale (SPEED stage 11): a generator writes one shard of the corpus prompts, the
revisor revises each example once. Every call goes through the call cache, so a crashed shard
resumes where it stopped and a variant that shares a generator never pays twice."""

from __future__ import annotations

import logging
from collections import Counter
from typing import Any

from speed.data.validate import check_text
from speed.io import read_jsonl, read_jsonl_share, write_jsonl
from speed.llm.factory import open_client
from speed.llm.types import Request, Sampling
from speed.prompts.align import canonical_output, request_text, revisor_messages
from speed.prompts.families import field_max_chars
from speed.stages.teacher import prompt_requests, stable_seed, write_stats

log = logging.getLogger(__name__)


def shard_of(prompts_path: str, shard: int, shards: int) -> list[dict[str, Any]]:
    """Every `shards`-th prompt from the `shard`-th on, so each shard gets the same family mix;
    only these rows are parsed (at paper scale a shard is 1/64 of 1.15M prompts)."""
    if not 0 <= shard < shards:
        raise ValueError(f"shard {shard} outside 0..{shards - 1}")
    return read_jsonl_share(prompts_path, shard, shards)


def run_generate(
    *,
    llm: dict[str, Any],
    generator: str,
    prompts_path: str,
    shard: int,
    shards: int,
    sampling: dict[str, Any],
    seed: int,
    cache_dir: str,
    output: str,
    ledger: str | None = None,
    price: dict[str, float] | None = None,
) -> dict[str, Any]:
    """One example per prompt of this shard (the teacher-only baseline runs this too, with a
    ledger, on its own fresh prompts)."""
    prompts = shard_of(prompts_path, shard, shards)
    requests = prompt_requests(prompts, sampling, seed, "synthesis")
    stage = "teacher_only" if ledger else None
    with open_client(llm, cache_dir, ledger, stage=stage, price=price) as client:
        results = client.generate(requests)
        calls, hits = client.backend_calls, client.cache_hits
    rows = [
        {
            **{k: p[k] for k in ("family", "instruction", "topic", "topic_id", "task")},
            "prompt_id": p["id"],
            "generator": generator,
            "text": c.text,
            "finish_reason": c.finish_reason,
            # The schema's field bound, checked with the text when the corpus is assembled.
            "max_chars": field_max_chars(p["schema"]),
        }
        for p, (c,) in zip(prompts, results, strict=True)
    ]
    write_jsonl(output, rows)
    stats = {"shard": shard, "examples": len(rows), "model_calls": calls, "cache_hits": hits}
    log.info("generated: %s", stats)
    return stats


def run_revise_shard(
    *,
    llm: dict[str, Any],
    raw_path: str,
    prompts_path: str,
    sampling: dict[str, Any],
    seed: int,
    cache_dir: str,
    output: str,
    stats_output: str,
    shard: int = 0,
    shards: int = 1,
) -> dict[str, Any]:
    """The revisor revises every raw example once. Both texts are kept; when the revision is
    not a valid example the draft stays the final text, and that is counted. `raw_path` is
    shard `shard` of `shards` (run_generate): only that share of the prompts is read."""
    raw = read_jsonl(raw_path)
    wanted = {r["prompt_id"] for r in raw}
    prompts = {p["id"]: p for p in shard_of(prompts_path, shard, shards) if p["id"] in wanted}
    if missing := wanted - prompts.keys():
        raise ValueError(
            f"{len(missing)} raw examples of {raw_path} have no prompt in shard {shard} of "
            f"{shards} of {prompts_path} (e.g. {sorted(missing)[0]}): not this shard's output"
        )
    requests = [
        Request.chat(
            revisor_messages(request_text(prompts[r["prompt_id"]]["messages"]), r["text"]),
            Sampling(**sampling, seed=stable_seed(seed, "revisor", r["prompt_id"])),
            schema=prompts[r["prompt_id"]]["schema"],
            id=r["prompt_id"],
        )
        for r in raw
    ]
    with open_client(llm, cache_dir) as client:
        results = client.generate(requests)
    rows, outcome = [], Counter()
    for r, (c,) in zip(raw, results, strict=True):
        checked = check_text(r["family"], c.text, r.get("max_chars"), c.finish_reason)
        if checked.fields is not None:
            final = canonical_output(r["family"], checked.fields)
            outcome["revised"] += 1
        else:
            final = r["text"]
            outcome[f"kept draft: {checked.reason}"] += 1
        rows.append(
            {
                **r,
                "draft": r["text"],
                "revision": c.text,
                "text": final,
                # The final text's: a valid revision of a draft cut at max_tokens is whole.
                "finish_reason": c.finish_reason
                if checked.fields is not None
                else r.get("finish_reason"),
                "revised": checked.fields is not None,
                "revisor": llm.get("name"),
            }
        )
    write_jsonl(output, rows)
    stats = {"examples": len(rows), "outcome": dict(outcome)}
    write_stats(stats_output, stats)
    log.info("revised: %s", stats)
    return stats


def run_corpus(
    *,
    inputs: list[str],
    variant: str,
    limits: dict[str, Any],
    dedup: dict[str, Any],
    decontamination: dict[str, Any],
    eval_tasks: dict[str, str],
    output: str,
    stats_output: str,
) -> dict[str, Any]:
    from speed.data.corpus import assemble, build_eval_index, write_corpus

    index = build_eval_index(eval_tasks, **decontamination) if eval_tasks else None
    rows = (row for path in inputs for row in read_jsonl(path))
    frame, stats = assemble(
        rows,
        variant,
        limits["min_words"],
        limits["max_words"],
        dedup["threshold"],
        dedup["shingle_size"],
        index,
    )
    write_corpus(frame, stats, output, stats_output)
    log.info(
        "corpus %s: %d in, %d out, drops %s", variant, stats["in"], stats["out"], stats["drops"]
    )
    return stats
