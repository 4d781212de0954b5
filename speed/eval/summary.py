"""The evaluation summary: one row per (variant, task), then per-category and overall means."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import polars as pl

from speed.eval.results import read_scores
from speed.io import atomic_file


def summarize(task_files: Mapping[str, Sequence[str]]) -> pl.DataFrame:
    """task_files: variant -> its per-task files (`eval/<variant>/<task>.json`), in task order."""
    scores = pl.concat(
        [
            read_scores(paths).with_columns(pl.lit(v).alias("variant"))
            for v, paths in task_files.items()
        ]
    ).select("variant", "task", "category", "metric", "score")
    per_category = (
        scores.group_by("variant", "category", maintain_order=True)
        .agg(pl.col("score").mean())
        .with_columns(task=pl.lit("average"), metric=pl.lit("mean main score"))
    )
    overall = (
        scores.group_by("variant", maintain_order=True)
        .agg(pl.col("score").mean())
        .with_columns(
            task=pl.lit("average"), category=pl.lit("all"), metric=pl.lit("mean main score")
        )
    )
    columns = scores.columns
    return pl.concat([scores, per_category.select(columns), overall.select(columns)])


def write_csv(frame: pl.DataFrame, path: str) -> None:
    with atomic_file(path) as f:
        frame.write_csv(f)
