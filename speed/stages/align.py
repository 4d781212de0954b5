"""Alignment data (SPEED stages 5-10): SFT sets, junior candidates, teacher judgments and
preference pairs, teacher revisions, and the revisor's SFT set."""

from __future__ import annotations

import logging
import random
from collections import Counter
from typing import Any

from speed.data.signals import parse_judgment, parse_revision
from speed.data.validate import check_text, unusable
from speed.io import read_jsonl, write_jsonl
from speed.llm.factory import open_client
from speed.llm.types import Request, Sampling
from speed.prompts.align import (
    canonical_output,
    judge_messages,
    judge_schema,
    request_text,
    revise_messages,
    revise_schema,
    revisor_messages,
)
from speed.prompts.families import field_max_chars
from speed.stages.teacher import prompt_requests, stable_seed, write_stats

log = logging.getLogger(__name__)


def seed_sft_examples(seed_path: str, prompts_path: str) -> list[dict[str, Any]]:
    """(prompt messages -> the teacher's validated JSON) for the junior."""
    prompts = {p["id"]: p for p in read_jsonl(prompts_path)}
    return [
        {
            "messages": [
                *prompts[r["prompt_id"]]["messages"],
                {"role": "assistant", "content": r["output"]},
            ]
        }
        for r in read_jsonl(seed_path)
    ]


def run_candidates(
    *,
    llm: dict[str, Any],
    prompts_path: str,
    k: int,
    sampling: dict[str, Any],
    seed: int,
    cache_dir: str,
    output: str,
    stats_output: str,
) -> dict[str, Any]:
    """k samples of the junior per prompt; invalid ones are kept and flagged, since the judge
    sees the raw list."""
    prompts = read_jsonl(prompts_path)
    requests = prompt_requests(prompts, sampling, seed, "candidates", n=k)
    with open_client(llm, cache_dir) as client:
        results = client.generate(requests)
    rows, reasons = [], Counter()
    for p, completions in zip(prompts, results, strict=True):
        cands = []
        for c in completions:
            checked = check_text(p["family"], c.text, field_max_chars(p["schema"]), c.finish_reason)
            reasons[checked.reason or "valid"] += 1
            cands.append(
                {
                    "text": c.text,
                    "valid": checked.fields is not None,
                    "reason": checked.reason,
                    "finish_reason": c.finish_reason,
                }
            )
        rows.append(
            {
                "prompt_id": p["id"],
                "family": p["family"],
                "instruction": p["instruction"],
                "messages": p["messages"],
                "schema": p["schema"],
                "candidates": cands,
            }
        )
    write_jsonl(output, rows)
    stats = {
        "prompts": len(prompts),
        "k": k,
        "candidates": len(prompts) * k,
        "validity": dict(reasons),
    }
    write_stats(stats_output, stats)
    log.info("candidates: %s", stats)
    return stats


def judge_request(
    row: dict[str, Any], temperature: float, max_tokens: int, max_reason_chars: int
) -> Request:
    """The teacher's judge call on one list of candidates."""
    return Request.chat(
        judge_messages(request_text(row["messages"]), [c["text"] for c in row["candidates"]]),
        Sampling(
            temperature=temperature,
            top_p=1.0,
            max_tokens=max_tokens,
            seed=stable_seed("judge", row["prompt_id"]),
        ),
        schema=judge_schema(len(row["candidates"]), max_reason_chars),
        id=row["prompt_id"],
    )


def run_judge(
    *,
    llm: dict[str, Any],
    candidates_path: str,
    temperature: float,
    max_tokens: int,
    max_reason_chars: int,
    price: dict[str, float],
    cache_dir: str,
    judgments_output: str,
    pairs_output: str,
    stats_output: str,
    ledger: str,
) -> dict[str, Any]:
    """The teacher picks best and worst of each list (paper: at temperature 0) -> one DPO pair
    per list."""
    rows = read_jsonl(candidates_path)
    requests = [judge_request(r, temperature, max_tokens, max_reason_chars) for r in rows]
    with open_client(llm, cache_dir, ledger, stage="judge", price=price) as client:
        results = client.generate(requests)
    judgments, pairs, errors = [], [], Counter()
    for r, (completion,) in zip(rows, results, strict=True):
        cands = r["candidates"]
        j = parse_judgment(completion.text, [c["valid"] for c in cands], max_reason_chars)
        error = unusable(completion.finish_reason) or j.error
        if error is None and cands[j.best]["text"].strip() == cands[j.worst]["text"].strip():
            error = "chosen equals rejected"
        judgments.append(
            {
                "prompt_id": r["prompt_id"],
                "best": j.best,
                "worst": j.worst,
                "reason": j.reason,
                "error": error,
                "raw": completion.text,
            }
        )
        if error:
            errors[error] += 1
            continue
        pairs.append(
            {
                "prompt_id": r["prompt_id"],
                "family": r["family"],
                "prompt": r["messages"],
                "chosen": [{"role": "assistant", "content": cands[j.best]["text"]}],
                "rejected": [{"role": "assistant", "content": cands[j.worst]["text"]}],
            }
        )
    write_jsonl(judgments_output, judgments)
    write_jsonl(pairs_output, pairs)
    stats = {"lists": len(rows), "pairs": len(pairs), "dropped": dict(errors)}
    write_stats(stats_output, stats)
    log.info("judge: %s", stats)
    return stats


def run_revise(
    *,
    llm: dict[str, Any],
    candidates_path: str,
    sampling: dict[str, Any],
    max_field_chars: int,
    max_reason_chars: int,
    seed: int,
    price: dict[str, float],
    cache_dir: str,
    output: str,
    rejects_output: str,
    stats_output: str,
    ledger: str,
) -> dict[str, Any]:
    """The teacher critiques one junior candidate per list (a seeded draw, valid or not: the
    revisor must learn to fix broken drafts too) and writes its revision."""
    rows = read_jsonl(candidates_path)
    drafts = [
        random.Random(stable_seed(seed, "draft", r["prompt_id"])).randrange(len(r["candidates"]))
        for r in rows
    ]
    requests = [
        Request.chat(
            revise_messages(request_text(r["messages"]), r["candidates"][d]["text"]),
            Sampling(**sampling, seed=stable_seed(seed, "revise", r["prompt_id"])),
            schema=revise_schema(r["family"], max_field_chars, max_reason_chars),
            id=r["prompt_id"],
        )
        for r, d in zip(rows, drafts, strict=True)
    ]
    with open_client(llm, cache_dir, ledger, stage="revise", price=price) as client:
        results = client.generate(requests)
    kept, rejects, errors = [], [], Counter()
    for r, d, (completion,) in zip(rows, drafts, results, strict=True):
        rev = parse_revision(completion.text, r["family"], max_field_chars, max_reason_chars)
        why = unusable(completion.finish_reason) or rev.error
        if why is not None:
            errors[why] += 1
            rejects.append({"prompt_id": r["prompt_id"], "reason": why, "raw": completion.text})
            continue
        kept.append(
            {
                "prompt_id": r["prompt_id"],
                "family": r["family"],
                "messages": r["messages"],
                "draft_index": d,
                "draft": r["candidates"][d]["text"],
                "critique": rev.reason,
                "revision": canonical_output(r["family"], rev.fields),
            }
        )
    write_jsonl(output, kept)
    write_jsonl(rejects_output, rejects)
    stats = {"lists": len(rows), "revisions": len(kept), "rejected": dict(errors)}
    write_stats(stats_output, stats)
    log.info("revise: %s", stats)
    return stats


def revisor_sft_examples(revisions_path: str) -> list[dict[str, Any]]:
    """(request + draft -> the teacher's revision) for the revisor."""
    return [
        {
            "messages": [
                *revisor_messages(request_text(r["messages"]), r["draft"]),
                {"role": "assistant", "content": r["revision"]},
            ]
        }
        for r in read_jsonl(revisions_path)
    ]
