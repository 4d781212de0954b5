"""The report's figures (PNG): teacher cost per stage, corpus examples per family, scores per
variant and category, and the scaling curve. Each function also returns its Figure, so what it
plots (bar heights, tick labels, line data) can be read back."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import matplotlib

matplotlib.use("Agg")  # no display on cluster nodes

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import polars as pl  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from speed.io import atomic_file  # noqa: E402


@contextmanager
def _figure(path: str, title: str, width: float = 6.4) -> Iterator[tuple[Figure, Axes]]:
    fig, ax = plt.subplots(figsize=(width, 4.0))
    ax.set_title(title)
    yield fig, ax
    fig.tight_layout()
    with atomic_file(path, mode="wb") as f:
        fig.savefig(f, format="png", dpi=120)
    plt.close(fig)  # out of pyplot's registry; the Figure itself stays readable


def _grouped_bars(ax: Axes, groups: list[str], series: Mapping[str, list[float]]) -> None:
    width = 0.8 / max(len(series), 1)
    x = np.arange(len(groups))
    for i, (name, values) in enumerate(series.items()):
        ax.bar(x + i * width - 0.4 + width / 2, values, width, label=name)
    ax.set_xticks(x, groups, rotation=20, ha="right")
    if len(series) > 1:
        ax.legend(fontsize="small")


def cost_per_stage(cost: Mapping[str, Any], path: str) -> Figure:
    stages = list(cost["stages"])
    with _figure(path, "Teacher calls per stage") as (fig, ax):
        _grouped_bars(
            ax,
            stages,
            {
                "paid": [cost["stages"][s]["paid_calls"] for s in stages],
                "cached": [cost["stages"][s]["cached_calls"] for s in stages],
            },
        )
        ax.set_ylabel("calls")
    return fig


def examples_per_family(stats: Mapping[str, Mapping[str, Any]], path: str) -> Figure:
    """stats: variant -> corpus stats; bars of the examples kept per family."""
    families = sorted({f for s in stats.values() for f in s["out_per_family"]})
    with _figure(path, "Corpus examples per family") as (fig, ax):
        _grouped_bars(
            ax,
            families,
            {v: [s["out_per_family"].get(f, 0) for f in families] for v, s in stats.items()},
        )
        ax.set_ylabel("examples")
    return fig


def scores(summary_csv: str, path: str) -> Figure:
    df = pl.read_csv(summary_csv).filter(pl.col("task") == "average")
    variants = df["variant"].unique(maintain_order=True).to_list()
    categories = df["category"].unique(maintain_order=True).to_list()
    table = {(r["variant"], r["category"]): r["score"] for r in df.iter_rows(named=True)}
    width = max(6.4, 1.2 * len(categories))
    with _figure(path, "Mean main score per category", width) as (fig, ax):
        _grouped_bars(
            ax,
            categories,
            {v: [table.get((v, c), float("nan")) for c in categories] for v in variants},
        )
        ax.set_ylabel("score (x100)")
    return fig


def scaling(study: Mapping[str, Any], path: str) -> Figure:
    sizes = np.array([p["examples"] for p in study["points"]], dtype=float)
    grid = np.geomspace(sizes.min(), sizes.max(), 50)
    with _figure(path, "Score against training examples: a + b ln N") as (fig, ax):
        for cat, fit in study["fits"].items():
            have = [p for p in study["points"] if cat in p["scores"]]
            (line,) = ax.plot(grid, fit["a"] + fit["b"] * np.log(grid), label=cat)
            xs, ys = [p["examples"] for p in have], [p["scores"][cat] for p in have]
            ax.scatter(xs, ys, color=line.get_color())
        ax.set_xscale("log")
        ax.set_xlabel("training examples")
        ax.set_ylabel("mean main score (x100)")
        ax.legend(fontsize="small")
    return fig
