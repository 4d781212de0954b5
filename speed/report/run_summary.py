"""What a finished run made, read from its folder: `make run` prints it after Snakemake succeeds.

Every number comes from the files under `results/<run>/`; a missing file is reported as missing.
A tiny run (its folder has `models/tiny/`) also says that its LLMs have random weights, so its
scores are noise, and names the next command: the one-GPU quickstart.

    python -m speed.report.run_summary [RUN_DIR] [--configfile config/config.yaml]
"""

from __future__ import annotations

import argparse
import csv
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

DEFAULT_CONFIG = Path("config/config.yaml")
MISSING = "missing"
GENERATORS = ("junior", "senior", "revisor")
# The quickstart's commands, as its header comment gives them (a unit test keeps them in step).
NEXT = [
    ".venv/bin/speed-plan config/quickstart.yaml",
    ".venv/bin/snakemake --configfile config/quickstart.yaml --cores 8 --resources gpu=1 "
    "teacher_api=2",
]
NOISE = [
    "The tiny LLMs (teacher, junior, senior, revisor) have random weights: the data they write,",
    "and the held-out tasks it is scored on, are noise. The scores prove only that every stage",
    "runs end to end; they say nothing about SPEED.",
]


def rows(path: Path) -> int | None:
    """Lines of a JSON-lines file (None when it is missing)."""
    if not path.is_file():
        return None
    with path.open("rb") as f:
        return sum(1 for line in f if line.strip())


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def per_name(paths: Sequence[Path]) -> str:
    """`name count` for each JSON-lines file, in name order ('missing' when there are none)."""
    counts = [f"{p.stem} {rows(p)}" for p in sorted(paths)]
    return ", ".join(counts) or MISSING


def count(n: int | None, what: str) -> str:
    return f"{what} {MISSING}" if n is None else f"{n} {what}"


def _teacher_calls(run: Path) -> str:
    cost = read_json(run / "report" / "cost.json")
    if cost and "total" in cost:
        t = cost["total"]
        return f"{t['calls']} ({t['paid_calls']} paid, {t['cached_calls']} cached, ${t['usd']:.2f})"
    ledgers = [rows(p) or 0 for p in (run / "ledger").glob("*.jsonl")]
    return f"{sum(ledgers)} (ledger rows)" if ledgers else MISSING


def _alignment(run: Path) -> str:
    align = run / "align"
    parts = [
        count(rows(align / "candidates.jsonl"), "candidate lists"),
        count(rows(align / "preference_pairs.jsonl"), "pairs"),
        count(rows(align / "revisions.jsonl"), "revisions"),
    ]
    return ", ".join(parts)


def _synthesis(run: Path) -> str:
    parts = []
    for kind in ("raw", "revised"):
        shards = sorted((run / "synth" / kind).glob("*/*.jsonl"))
        total = sum(rows(s) or 0 for s in shards)
        if not shards:
            parts.append(f"{kind} {MISSING}")
            continue
        parts.append(f"{kind} {len(shards)} shards, {total} rows")
    return "; ".join(parts)


def _corpus(run: Path) -> str:
    out = []
    for stats in sorted((run / "corpus").glob("*.stats.json")):
        s = read_json(stats) or {}
        variant = stats.name.removesuffix(".stats.json")
        out.append(f"{variant} {s.get('out', '?')} of {s.get('in', '?')}")
    return ", ".join(out) or MISSING


def mean_scores(summary: Path) -> dict[str, float]:
    """Variant -> its mean main score over every task (the summary's `average`/`all` rows)."""
    try:
        with summary.open(newline="") as f:
            return {
                r["variant"]: float(r["score"])
                for r in csv.DictReader(f)
                if r["task"] == "average" and r["category"] == "all"
            }
    except (OSError, KeyError, ValueError):
        return {}


def _dirs(folder: Path) -> str:
    names = sorted(p.name for p in folder.glob("*") if p.is_dir() and not p.name.startswith("."))
    return ", ".join(names) or MISSING


def _report(folder: Path) -> str:
    files = sorted(p.name for p in folder.glob("*") if p.is_file() and not p.name.startswith("."))
    figures = [f for f in files if f.endswith(".png")]
    named = [f for f in files if f not in figures]
    return ", ".join(named + ([f"{len(figures)} figures"] if figures else [])) or MISSING


def table(run: Path) -> list[tuple[str, str, str]]:
    """(stage, where under the run folder, what it made), in pipeline order."""
    generators = [g for g in GENERATORS if (run / "models" / g).is_dir()]
    scores = mean_scores(run / "eval" / "summary.csv")
    return [
        ("topics", "topics.jsonl", count(rows(run / "topics.jsonl"), "topics")),
        ("tasks (teacher)", "tasks/", per_name(list((run / "tasks").glob("*.jsonl")))),
        ("prompts", "prompts/", per_name(list((run / "prompts").glob("*.jsonl")))),
        ("seed (teacher)", "teacher/", count(rows(run / "teacher" / "seed.jsonl"), "examples")),
        ("teacher calls", "ledger/", _teacher_calls(run)),
        ("alignment", "align/", _alignment(run)),
        ("generators", "models/", ", ".join(generators) or MISSING),
        ("synthesis", "synth/", _synthesis(run)),
        ("corpus rows kept", "corpus/", _corpus(run)),
        ("embedding models", "embedding/", _dirs(run / "embedding")),
        ("eval mean score", "eval/summary.csv", _scores(scores)),
        ("report", "report/", _report(run / "report")),
    ]


def _scores(scores: dict[str, float]) -> str:
    return ", ".join(f"{v} {s:.1f}" for v, s in scores.items()) or MISSING


def render(entries: list[tuple[str, str, str]]) -> list[str]:
    entries = [("stage", "where", "what"), *entries]
    widths = [max(len(e[i]) for e in entries) for i in range(2)]
    return [f"  {s:<{widths[0]}}  {p:<{widths[1]}}  {w}" for s, p, w in entries]


def summary(run: str | Path) -> str:
    """The summary of the run in folder `run`, or a line saying there is none."""
    run = Path(run)
    if not run.is_dir():
        return f"No run folder at {run}: nothing to summarize (`make run` builds results/tiny)."
    lines = [f"What the run made, under {run}/:", *render(table(run))]
    if (run / "models" / "tiny").is_dir():
        lines += ["", *NOISE, "", "Next, a real run on one GPU (read config/quickstart.yaml first:"]
        lines += ["it needs `make install ENGINE=gpu` and its teacher server running):"]
        lines += [f"  {cmd}" for cmd in NEXT]
    return "\n".join(lines)


def run_dir(configfile: Path) -> Path:
    """results_dir/run of a config, keys it lacks taken from the default config."""
    config: dict[str, Any] = {}
    for path in dict.fromkeys([DEFAULT_CONFIG, configfile]):
        if path.is_file():
            config.update(yaml.safe_load(path.read_text()) or {})
    return Path(config.get("results_dir", "results")) / str(config.get("run", "tiny"))


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m speed.report.run_summary", description=__doc__)
    ap.add_argument("run", nargs="?", type=Path, help="the run folder (default: the config's)")
    ap.add_argument("--configfile", type=Path, default=DEFAULT_CONFIG)
    args = ap.parse_args(argv)
    run = args.run or run_dir(args.configfile)
    print(summary(run))
    return 0 if run.is_dir() else 1


if __name__ == "__main__":
    raise SystemExit(main())
