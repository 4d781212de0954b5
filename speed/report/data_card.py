"""The data card (report/data_card.md): where the corpus came from, what was dropped and why,
what it cost and how the embedding models trained on it scored."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import polars as pl


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return out


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.4g}" if abs(value) < 1 else f"{value:,.2f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def data_card(
    facts: Mapping[str, Any],
    corpus_stats: Mapping[str, Mapping[str, Any]],
    cost: Mapping[str, Any],
    summary_csv: str,
) -> str:
    """facts: run name, models and settings (the rule's params)."""
    lines = [f"# Data card: SPEED corpus of run `{facts['run']}`", "", "## Sources and models", ""]
    lines += [f"- **{k}**: {v}" for k, v in facts.items() if k != "run"]

    lines += ["", "## Corpus per variant", ""]
    families = sorted({f for s in corpus_stats.values() for f in s["in_per_family"]})
    lines += _table(
        ["variant", "in", "out", *families, "revised", "dedup rate"],
        [
            [
                v,
                s["in"],
                s["out"],
                *[s["out_per_family"].get(f, 0) for f in families],
                s.get("revised", "-"),
                s["dedup_rate"],
            ]
            for v, s in corpus_stats.items()
        ],
    )
    lines += ["", "## Drops (validation, duplicates, decontamination)", ""]
    reasons = sorted({r for s in corpus_stats.values() for r in s["drops"]})
    lines += _table(
        ["reason", *corpus_stats],
        [[r, *[s["drops"].get(r, 0) for s in corpus_stats.values()]] for r in reasons],
    )
    hits = [f"{v}: {s['decontamination_hits'] or 'none'}" for v, s in corpus_stats.items()]
    lines += ["", "Decontamination hits per evaluation task: " + "; ".join(hits) + "."]

    lines += ["", "## Teacher cost", ""]
    lines += _table(
        ["stage", "calls", "paid", "cached", "prompt tokens", "completion tokens", "USD paid"],
        [
            [
                s,
                c["calls"],
                c["paid_calls"],
                c["cached_calls"],
                c["prompt_tokens"],
                c["completion_tokens"],
                c["usd"],
            ]
            for s, c in [*cost["stages"].items(), ("total", cost["total"])]
        ],
    )
    if "baseline" in cost:
        b = cost["baseline"]
        lines += [
            "",
            f"SPEED's teacher calls (seed, judge, revise): {cost['speed_teacher_calls']:,}, "
            f"{cost['calls_per_corpus_example']} per corpus example. An all-teacher corpus of "
            f"the same size takes about {b['calls']:,} calls ({b['basis']}): ratio "
            f"{b['speed_over_baseline']}.",
        ]

    lines += ["", "## Evaluation (mean main score x100)", ""]
    df = pl.read_csv(summary_csv).filter(pl.col("task") == "average")
    categories = df["category"].unique(maintain_order=True).to_list()
    table = {(r["variant"], r["category"]): r["score"] for r in df.iter_rows(named=True)}
    variants = df["variant"].unique(maintain_order=True).to_list()
    lines += _table(
        ["variant", *categories],
        [[v, *[table.get((v, c), "-") for c in categories]] for v in variants],
    )
    return "\n".join(lines) + "\n"
