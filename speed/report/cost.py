"""The teacher's cost from the ledgers: calls, tokens and USD per stage, and SPEED against the
all-teacher baseline (the paper: 45K calls against E5-mistral's 500K, under 1/10)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from speed.io import read_jsonl

SPEED_STAGES = ("seed", "judge", "revise")  # the paper's count leaves brainstorming out


def stage_totals(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    paid = [r for r in rows if not r["cached"]]
    return {
        "calls": len(rows),
        "paid_calls": len(paid),
        "cached_calls": len(rows) - len(paid),
        "prompt_tokens": sum(r["prompt_tokens"] for r in rows),
        "completion_tokens": sum(r["completion_tokens"] for r in rows),
        "paid_tokens": sum(r["prompt_tokens"] + r["completion_tokens"] for r in paid),
        "usd": round(sum(r["usd"] for r in rows), 4),
    }


def cost_report(
    ledgers: Mapping[str, Sequence[str]],
    corpus_stats: Mapping[str, Mapping[str, Any]],
    price: Mapping[str, float],
    planned: Mapping[str, Mapping[str, Any]] | None = None,
) -> dict[str, Any]:
    """ledgers: stage -> its ledger files (brainstorm has one per family); corpus_stats:
    variant -> corpus stats. `usd` is what this run paid (cached calls are free);
    `usd_uncached` what the same calls cost at `price` without the cache."""
    stages = {}
    for stage, paths in ledgers.items():
        rows = [row for p in paths for row in read_jsonl(p)]
        totals = stage_totals(rows)
        totals["usd_uncached"] = round(
            (
                totals["prompt_tokens"] * price["prompt_per_m"]
                + totals["completion_tokens"] * price["completion_per_m"]
            )
            / 1e6,
            4,
        )
        if planned and stage in planned:
            totals["planned_calls"] = planned[stage]["calls"]
            totals["planned_tokens"] = planned[stage]["tokens"]
        stages[stage] = totals
    speed_calls = sum(stages[s]["calls"] for s in SPEED_STAGES if s in stages)
    report: dict[str, Any] = {
        "stages": stages,
        "total": {
            k: round(sum(s[k] for s in stages.values()), 4)
            for k in (
                "calls",
                "paid_calls",
                "cached_calls",
                "prompt_tokens",
                "completion_tokens",
                "usd",
                "usd_uncached",
            )
        },
        "speed_teacher_calls": speed_calls,
    }
    speed_corpus = corpus_stats.get("speed")
    if speed_corpus and speed_corpus["out"]:
        report["calls_per_corpus_example"] = round(speed_calls / speed_corpus["out"], 4)
        report["baseline"] = _baseline(stages, corpus_stats, speed_calls, speed_corpus["out"])
    return report


def _baseline(
    stages: Mapping[str, Mapping[str, Any]],
    corpus_stats: Mapping[str, Mapping[str, Any]],
    speed_calls: int,
    size: int,
) -> dict[str, Any]:
    """All-teacher calls for a corpus as large as SPEED's: measured on the teacher_only variant
    (calls per kept example) when it was built, else one call per example as in E5-mistral."""
    teacher_only = corpus_stats.get("teacher_only")
    if teacher_only and teacher_only["out"] and "teacher_only" in stages:
        per_example = stages["teacher_only"]["calls"] / teacher_only["out"]
        basis = "measured: teacher_only calls per kept teacher_only example"
    else:
        per_example = 1.0
        basis = "one teacher call per example (E5-mistral's approach)"
    calls = round(size * per_example)
    return {
        "corpus_examples": size,
        "calls_per_example": round(per_example, 4),
        "calls": calls,
        "basis": basis,
        "speed_over_baseline": round(speed_calls / calls, 4) if calls else None,
    }
