"""The teacher check: a few schema-constrained teacher calls through the full LLM layer (backend,
cache, ledger), so a new endpoint, key or response format can be tried for the price of a few
calls before any stage runs (`snakemake results/<run>/smoke/teacher.jsonl`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from speed.io import write_jsonl
from speed.llm.factory import open_client
from speed.llm.schema import string_fields
from speed.llm.types import Request, Sampling

SMOKE_SCHEMA = string_fields({"topic": 60, "sentence": 120})

TOPICS = ["astronomy", "baking", "chess", "cycling", "gardening", "jazz", "sailing", "typography"]


def smoke_requests(n: int, max_tokens: int, temperature: float, top_p: float, seed: int):
    return [
        Request.chat(
            [
                {"role": "system", "content": "You answer with one JSON object and nothing else."},
                {
                    "role": "user",
                    "content": f"Name a topic related to {TOPICS[i % len(TOPICS)]} and write one "
                    'sentence about it, as {"topic": ..., "sentence": ...}.',
                },
            ],
            Sampling(temperature=temperature, top_p=top_p, max_tokens=max_tokens, seed=seed + i),
            schema=SMOKE_SCHEMA,
            id=f"smoke-{i}",
        )
        for i in range(n)
    ]


def run_smoke(
    llm: dict[str, Any],
    n: int,
    max_tokens: int,
    temperature: float,
    top_p: float,
    seed: int,
    price: dict[str, float],
    cache_dir: str,
    output: str | Path,
    ledger: str | Path,
) -> dict[str, int]:
    requests = smoke_requests(n, max_tokens, temperature, top_p, seed)
    with open_client(llm, cache_dir, ledger, stage="smoke", price=price) as client:
        results = client.generate(requests)
        stats = {"requests": n, "backend_calls": client.backend_calls, "cached": client.cache_hits}
    rows = [
        {"id": r.id, "text": c.text, "parsed": c.parsed, "finish_reason": c.finish_reason}
        for r, cs in zip(requests, results, strict=True)
        for c in cs
    ]
    write_jsonl(output, rows)
    stats["valid_json"] = sum(row["parsed"] is not None for row in rows)
    return stats
