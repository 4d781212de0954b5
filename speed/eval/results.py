"""The per-task evaluation files (`eval/<variant>/<task>.json`) and the tables read from them.

A file is mteb's own TaskResult JSON (the one mteb wrote into its result cache) with four keys
added: `model_name` and `model_revision` (the identity mteb filed the result under, which mteb's
TaskResult does not record), `task_type` and `main_score_name`. `mteb.TaskResult.from_disk`
loads it (pydantic ignores the added keys); everything downstream reads it with plain JSON, so
report jobs need no mteb.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import polars as pl

from speed.io import atomic_file

COLUMNS = ("task", "category", "metric", "score")
SCHEMA = dict.fromkeys(COLUMNS, pl.String) | {"score": pl.Float64}
ADDED_KEYS = ("model_name", "model_revision", "task_type", "main_score_name")


def main_score(doc: Mapping[str, Any]) -> float:
    """Mean main score x 100 over the file's splits and subsets (as mteb's leaderboard does;
    the file holds exactly the task's evaluated splits and subsets)."""
    values = [float(s["main_score"]) for split in doc["scores"].values() for s in split]
    if not values:
        raise ValueError(f"{doc.get('task_name')}: the result holds no scores")
    return 100.0 * sum(values) / len(values)


def task_row(doc: Mapping[str, Any]) -> dict[str, Any]:
    """One row of a scores table (task, category, metric, score) from a per-task file."""
    return {
        "task": doc["task_name"],
        "category": doc["task_type"],
        "metric": doc["main_score_name"],
        "score": main_score(doc),
    }


def read_task_file(path: str | Path) -> dict[str, Any]:
    doc = json.loads(Path(path).read_text())
    missing = [k for k in ("task_name", "scores", *ADDED_KEYS) if k not in doc]
    if missing:
        raise ValueError(f"{path}: not a per-task evaluation file (no {', '.join(missing)})")
    return doc


def read_scores(paths: Iterable[str | Path]) -> pl.DataFrame:
    """The scores table of one model's per-task files, in the order given."""
    rows = [task_row(read_task_file(p)) for p in paths]
    return pl.DataFrame(rows, schema=SCHEMA)


def by_variant(paths: Sequence[str | Path]) -> dict[str, list[str]]:
    """`eval/<variant>/<task>.json` files grouped by variant (the folder), in order."""
    out: dict[str, list[str]] = {}
    for p in paths:
        out.setdefault(Path(p).parent.name, []).append(str(p))
    return out


def variant_scores(eval_dir: str | Path, variant: str) -> pl.DataFrame | None:
    """Every per-task file of one variant of a run (sorted by name), or None when it has none."""
    files = sorted(Path(eval_dir, variant).glob("*.json"))
    return read_scores(files) if files else None


def task_doc(
    mteb_file: str | Path, added: Mapping[str, Any], keep: Mapping[str, Collection[str]]
) -> dict[str, Any]:
    """mteb's result file with the added keys; only the splits and subsets in `keep` (split ->
    subsets; empty: all), those the task evaluates, so `main_score` is the task's score even
    where a result of an older mteb under the same revisions held more."""
    doc = json.loads(Path(mteb_file).read_text())
    doc["scores"] = {
        split: [s for s in entries if not keep[split] or s["hf_subset"] in keep[split]]
        for split, entries in doc["scores"].items()
        if split in keep
    }
    doc.update({k: added[k] for k in ADDED_KEYS})
    return doc


def write_task_file(doc: Mapping[str, Any], out: str | Path) -> None:
    with atomic_file(out) as f:
        json.dump(doc, f, indent=2)
        f.write("\n")
