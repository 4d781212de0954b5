"""The data card (report/data_card.md): where the corpus came from, what was dropped and why,
what it cost and how the embedding models trained on it scored. Its sections also make up the
body of an exported dataset's card (speed.report.export)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import polars as pl

from speed import workflow as wf

SOURCES = "## Sources and models"
_FACT = re.compile(r"^- \*\*(?P<key>[^*]+)\*\*: (?P<value>.*)$")


def data_card_facts(config: Mapping[str, Any]) -> dict[str, str]:
    """What the data card says about the run's sources and models (rule data_card's params)."""
    t, topics = config["teacher"], config["topics"]
    return {
        "run": config["run"],
        "teacher": f"{t['model']} ({t['backend']} backend)",
        "generators": f"junior, senior and revisor from {config['generation']['base']}",
        "topics": f"{topics['n']} from {topics['source']} {topics['path'] or ''}".strip(),
        "mix": ", ".join(f"{f} {w}" for f, w in config["prompts"]["mix"].items()),
        "prompts": ", ".join(f"{p} {n}" for p, n in config["prompts"]["n"].items()),
        "dedup": f"MinHash LSH, {config['corpus']['dedup']}",
        "decontamination": (
            f"{config['corpus']['decontamination']} against "
            f"{', '.join(wf.decontamination_tasks(config)) or 'no evaluation sets'}"
        ),
        "embedding": f"{config['embedding']['kind']} {config['embedding']['base']}",
    }


def parse_facts(card: str) -> dict[str, str]:
    """The facts back from a written data card (its Sources and models list, and the run from
    its title), so an export needs the run's folder only, not the config it ran with."""
    facts = {}
    if m := re.search(r"of run `([^`]+)`", card.partition("\n")[0]):
        facts["run"] = m.group(1)
    section = card.partition(f"\n{SOURCES}\n")[2].partition("\n## ")[0]
    for line in section.splitlines():
        if m := _FACT.match(line):
            facts[m.group("key")] = m.group("value")
    return facts


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


def sources_section(facts: Mapping[str, Any]) -> list[str]:
    return [SOURCES, "", *[f"- **{k}**: {v}" for k, v in facts.items() if k != "run"]]


def corpus_sections(corpus_stats: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """Counts per variant and family, drops by reason, decontamination hits."""
    lines = ["## Corpus per variant", ""]
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
    lines += _per_family_drops(corpus_stats)
    repairs = sorted({k for s in corpus_stats.values() for k in s.get("repairs", {})})
    if repairs:
        lines += ["", "## Repairs of kept examples, by kind", ""]
        lines += _table(
            ["repair", *corpus_stats],
            [
                [k, *[s.get("repairs", {}).get(k, 0) for s in corpus_stats.values()]]
                for k in repairs
            ],
        )
    hits = [f"{v}: {s['decontamination_hits'] or 'none'}" for v, s in corpus_stats.items()]
    return [*lines, "", "Decontamination hits per evaluation task: " + "; ".join(hits) + "."]


def _per_family_drops(corpus_stats: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """Validation drops (truncated, invalid, label in input, length) per variant and family."""
    rows = [
        [v, family, reason, n]
        for v, s in corpus_stats.items()
        for family, reasons in s.get("invalid_per_family", {}).items()
        for reason, n in reasons.items()
    ]
    if not rows:
        return []
    header = ["variant", "family", "reason", "n"]
    return ["", "## Validation drops per family", "", *_table(header, rows)]


def cost_section(cost: Mapping[str, Any]) -> list[str]:
    lines = ["## Teacher cost", ""]
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
    return lines


def evaluation_section(summary_csv: str) -> list[str]:
    """Mean main score per variant and category, from eval/summary.csv."""
    df = pl.read_csv(summary_csv).filter(pl.col("task") == "average")
    categories = df["category"].unique(maintain_order=True).to_list()
    table = {(r["variant"], r["category"]): r["score"] for r in df.iter_rows(named=True)}
    variants = df["variant"].unique(maintain_order=True).to_list()
    return [
        "## Evaluation (mean main score x100)",
        "",
        *_table(
            ["variant", *categories],
            [[v, *[table.get((v, c), "-") for c in categories]] for v in variants],
        ),
    ]


def scores_table(scores: Mapping[str, pl.DataFrame]) -> list[str]:
    """Per-task main scores (x100) side by side: name -> a scores.csv frame."""
    first = next(iter(scores.values()))
    by_name = {
        n: dict(zip(df["task"].to_list(), df["score"].to_list(), strict=True))
        for n, df in scores.items()
    }
    return _table(
        ["task", "category", "metric", *scores],
        [
            [
                r["task"],
                r["category"],
                r["metric"],
                *[by_name[n].get(r["task"], "-") for n in scores],
            ]
            for r in first.iter_rows(named=True)
        ],
    )


def data_card(
    facts: Mapping[str, Any],
    corpus_stats: Mapping[str, Mapping[str, Any]],
    cost: Mapping[str, Any],
    summary_csv: str,
) -> str:
    """facts: run name, models and settings (the rule's params)."""
    sections = [
        [f"# Data card: SPEED corpus of run `{facts['run']}`"],
        sources_section(facts),
        corpus_sections(corpus_stats),
        cost_section(cost),
        evaluation_section(summary_csv),
    ]
    return "\n\n".join("\n".join(s) for s in sections) + "\n"
