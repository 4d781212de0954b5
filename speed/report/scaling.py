"""The scaling study: score = a + b * ln(N) per category and overall, N = training examples
(the paper: performance grows log-linearly with the synthetic data size)."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import polars as pl

from speed.eval.results import by_variant, read_scores
from speed.io import atomic_file

log = logging.getLogger(__name__)


def nested_sample(frame: pl.DataFrame, fraction: float, seed: int) -> pl.DataFrame:
    """`fraction` of the rows, ranked by a seeded hash of the id: a smaller fraction is a
    subset of a larger one, so the points of the study differ only in size."""
    n = round(frame.height * fraction)
    rank = pl.col("id").hash(seed=seed)
    return frame.sort(rank).head(n).sort("id")


def write_scaling_subset(training: str, fraction: float, seed: int, out: str) -> int:
    """The nested `fraction` of a training set, to `out` (rule scaling_data); the rows kept."""
    frame = pl.read_parquet(training)
    subset = nested_sample(frame, fraction, seed)
    with atomic_file(out, "wb") as f:
        subset.write_parquet(f)
    log.info("%d of %d training records", subset.height, frame.height)
    return subset.height


def fit_log_linear(sizes: Sequence[int], scores: Sequence[float]) -> dict[str, float]:
    """Least squares a + b ln N; r2 is 1.0 for two points (an exact fit says nothing)."""
    if len(set(sizes)) < 2:
        raise ValueError(f"a scaling fit needs at least two distinct sizes, got {list(sizes)}")
    x, y = np.log(np.asarray(sizes, dtype=float)), np.asarray(scores, dtype=float)
    b, a = np.polyfit(x, y, 1)
    residual = float(((y - (a + b * x)) ** 2).sum())
    spread = float(((y - y.mean()) ** 2).sum())
    return {
        "a": float(a),
        "b": float(b),
        "r2": 1.0 - residual / spread if spread > 0 else 1.0,
        "points": len(sizes),
    }


def category_means(task_files: Sequence[str]) -> dict[str, float]:
    """Mean main score per category and over all tasks ("all") of one evaluation (its per-task
    files, speed.eval.results)."""
    df = read_scores(task_files)
    means = df.group_by("category").agg(pl.col("score").mean()).sort("category")
    out = dict(zip(means["category"].to_list(), means["score"].to_list(), strict=True))
    out["all"] = float(df["score"].mean())
    return out


def study_points(
    labels: Sequence[str], data: Sequence[str], task_files: Sequence[str]
) -> list[dict[str, Any]]:
    """The study's points from its variants (`speed@0.5`, ..., `speed`), their training sets
    and their per-task evaluation files (`eval/<label>/<task>.json`, grouped by folder)."""
    files = by_variant(task_files)
    return [
        {
            "label": label,
            "fraction": float(label.partition("@")[2] or 1.0),
            "examples": pl.scan_parquet(path).select(pl.len()).collect().item(),
            "task_files": files[label],
        }
        for label, path in zip(labels, data, strict=True)
    ]


def scaling_study(points: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """points: {label, fraction, examples, task_files} per trained corpus size."""
    rows = [
        {
            "label": p["label"],
            "fraction": p["fraction"],
            "examples": p["examples"],
            "scores": category_means(p["task_files"]),
        }
        for p in sorted(points, key=lambda p: p["examples"])
    ]
    categories = sorted({c for r in rows for c in r["scores"]} - {"all"}) + ["all"]
    fits = {}
    for cat in categories:
        have = [r for r in rows if cat in r["scores"]]
        fits[cat] = fit_log_linear([r["examples"] for r in have], [r["scores"][cat] for r in have])
    return {"model": "score = a + b * ln(examples)", "points": rows, "fits": fits}
