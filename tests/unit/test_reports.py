"""Cost report, scaling fit, nested samples, data card and figures on hand-made inputs."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
from matplotlib.figure import Figure

from speed.io import write_jsonl
from speed.report import plots
from speed.report.cost import cost_report
from speed.report.data_card import data_card
from speed.report.scaling import fit_log_linear, nested_sample, scaling_study
from tests.eval_folders import task_result_file


def ledger(path, n_paid, n_cached, tokens=(100, 50), usd=0.01):
    rows = [
        {
            "stage": "s",
            "model": "m",
            "request_id": f"r{i}",
            "samples": 1,
            "prompt_tokens": tokens[0],
            "completion_tokens": tokens[1],
            "cached": i >= n_paid,
            "latency_s": 0.1,
            "usd": 0.0 if i >= n_paid else usd,
        }
        for i in range(n_paid + n_cached)
    ]
    write_jsonl(path, rows)
    return str(path)


def corpus_stats(out, families=None):
    families = families or {"sts": out}
    return {
        "in": out + 2,
        "out": out,
        "drops": {"exact duplicate": 2},
        "in_per_family": families,
        "out_per_family": families,
        "dedup_rate": 0.1,
        "decontamination_hits": {},
        "revised": out,
    }


@pytest.fixture
def ledgers(tmp_path):
    return {
        "brainstorm": [ledger(tmp_path / "b1.jsonl", 4, 0), ledger(tmp_path / "b2.jsonl", 4, 0)],
        "seed": [ledger(tmp_path / "seed.jsonl", 20, 5)],
        "judge": [ledger(tmp_path / "judge.jsonl", 10, 0)],
        "revise": [ledger(tmp_path / "revise.jsonl", 10, 0)],
        "teacher_only": [ledger(tmp_path / "to.jsonl", 50, 0)],
    }


def test_cost_report_counts_stages_and_compares_with_the_baseline(ledgers):
    price = {"prompt_per_m": 2.0, "completion_per_m": 4.0}
    report = cost_report(
        ledgers,
        {"speed": corpus_stats(400), "teacher_only": corpus_stats(40)},
        price,
        {"seed": {"calls": 25, "tokens": 999}},
    )
    seed = report["stages"]["seed"]
    assert (seed["calls"], seed["paid_calls"], seed["cached_calls"]) == (25, 20, 5)
    assert seed["usd"] == pytest.approx(0.2) and seed["planned_calls"] == 25
    assert seed["usd_uncached"] == pytest.approx(25 * (100 * 2 + 50 * 4) / 1e6)
    assert report["stages"]["brainstorm"]["calls"] == 8
    assert report["speed_teacher_calls"] == 45
    assert report["calls_per_corpus_example"] == pytest.approx(45 / 400)
    base = report["baseline"]  # teacher_only: 50 calls for 40 kept examples
    assert base["calls"] == 500 and base["speed_over_baseline"] == pytest.approx(0.09)
    assert report["total"]["calls"] == 8 + 25 + 10 + 10 + 50


def row(stage: str, i: int, prompt: int, completion: int, usd: float) -> dict[str, Any]:
    """A ledger row; usd 0.0 means the call came from the cache."""
    return {
        "stage": stage,
        "model": "m",
        "request_id": f"{stage}{i}",
        "samples": 1,
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "cached": usd == 0.0,
        "latency_s": 0.1,
        "usd": usd,
    }


def test_cost_report_totals_are_the_ledgers_sums(tmp_path):
    """Rows of different sizes, paid and cached, one stage over two ledger files."""
    write_jsonl(
        tmp_path / "seed.jsonl",
        [
            row("seed", 0, 100, 40, 0.002),
            row("seed", 1, 120, 60, 0.003),
            row("seed", 2, 100, 40, 0.0),
        ],
    )
    write_jsonl(tmp_path / "judge1.jsonl", [row("judge", 0, 300, 10, 0.004)])
    write_jsonl(tmp_path / "judge2.jsonl", [row("judge", 1, 280, 12, 0.0)])
    files = {
        "seed": [str(tmp_path / "seed.jsonl")],
        "judge": [str(tmp_path / "judge1.jsonl"), str(tmp_path / "judge2.jsonl")],
    }
    price = {"prompt_per_m": 100.0, "completion_per_m": 200.0}
    report = cost_report(files, {"speed": corpus_stats(10)}, price)
    counts = ("calls", "paid_calls", "cached_calls", "prompt_tokens", "completion_tokens")
    # By hand from the rows: seed 100+120+100 prompt and 40+60+40 completion tokens, paid
    # tokens 140+180 (the cached row is free); judge over both files, 300+10 paid.
    by_hand = {
        "seed": ((3, 2, 1, 320, 140), 320, 0.002 + 0.003, (320 * 100 + 140 * 200) / 1e6),
        "judge": ((2, 1, 1, 580, 22), 310, 0.004, (580 * 100 + 22 * 200) / 1e6),
    }
    for stage, (numbers, paid_tokens, usd, usd_uncached) in by_hand.items():
        got = report["stages"][stage]
        assert tuple(got[k] for k in counts) == numbers, stage
        assert got["paid_tokens"] == paid_tokens, stage
        assert got["usd"] == pytest.approx(usd), stage
        assert got["usd_uncached"] == pytest.approx(usd_uncached), stage
    total = report["total"]
    assert tuple(total[k] for k in counts) == (5, 3, 2, 900, 162)
    assert total["usd"] == pytest.approx(0.009) and total["usd_uncached"] == pytest.approx(0.1224)
    assert report["speed_teacher_calls"] == 5 and report["calls_per_corpus_example"] == 0.5
    assert json.loads(json.dumps(report)) == report  # plain JSON: nothing lost on the way


def test_without_teacher_only_the_baseline_is_one_call_per_example(ledgers):
    del ledgers["teacher_only"]
    report = cost_report(
        ledgers, {"speed": corpus_stats(90)}, {"prompt_per_m": 0, "completion_per_m": 0}
    )
    assert report["baseline"]["calls"] == 90 and "E5" in report["baseline"]["basis"]


def test_log_linear_fit_recovers_the_parameters():
    sizes = [1000, 2000, 4000, 8000]
    fit = fit_log_linear(sizes, [10 + 3 * math.log(n) for n in sizes])
    assert fit["a"] == pytest.approx(10) and fit["b"] == pytest.approx(3)
    assert fit["r2"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="two distinct sizes"):
        fit_log_linear([5, 5], [1.0, 2.0])


def test_nested_samples_are_subsets_of_each_other():
    frame = pl.DataFrame({"id": [f"r{i}" for i in range(1000)], "x": range(1000)})
    quarter, half = nested_sample(frame, 0.25, 7), nested_sample(frame, 0.5, 7)
    assert (quarter.height, half.height) == (250, 500)
    assert set(quarter["id"]) < set(half["id"])
    assert nested_sample(frame, 0.25, 8)["id"].to_list() != quarter["id"].to_list()


def task_files(folder, retrieval, sts):
    return [
        task_result_file(folder / "R.json", "R", "Retrieval", "ndcg_at_10", retrieval),
        task_result_file(folder / "S.json", "S", "STS", "cosine_spearman", sts),
    ]


def test_scaling_study_fits_per_category_and_overall(tmp_path):
    points = [
        {
            "label": f"speed@{f}",
            "fraction": f,
            "examples": int(8000 * f),
            "task_files": task_files(tmp_path / f"{f}", 40 + 2 * math.log(8000 * f), 70.0),
        }
        for f in (0.25, 0.5)
    ] + [
        {
            "label": "speed",
            "fraction": 1.0,
            "examples": 8000,
            "task_files": task_files(tmp_path / "1", 40 + 2 * math.log(8000), 70.0),
        }
    ]
    study = scaling_study(points)
    assert [p["examples"] for p in study["points"]] == [2000, 4000, 8000]
    assert study["fits"]["Retrieval"]["b"] == pytest.approx(2.0)
    assert study["fits"]["STS"]["b"] == pytest.approx(0.0, abs=1e-9)
    assert study["fits"]["all"]["b"] == pytest.approx(1.0)
    fig = plots.scaling(study, str(tmp_path / "scaling.png"))
    assert (tmp_path / "scaling.png").read_bytes()[:4] == b"\x89PNG"
    [ax] = fig.axes
    assert ax.get_xscale() == "log" and ax.get_title().endswith("a + b ln N")
    # Per category the fit's line (a, b by hand from the scores above) and the measured means.
    by_hand = {"Retrieval": (40.0, 2.0), "STS": (70.0, 0.0), "all": (55.0, 1.0)}
    lines, dots = ax.get_lines(), ax.collections
    assert [line.get_label() for line in lines] == list(by_hand)
    for line, measured, (a, b) in zip(lines, dots, by_hand.values(), strict=True):
        x, y = (np.asarray(v, dtype=float) for v in line.get_data())
        assert (x.min(), x.max()) == pytest.approx((2000, 8000))  # smallest to largest set
        np.testing.assert_allclose(y, a + b * np.log(x))
        sizes = np.array([2000.0, 4000.0, 8000.0])
        np.testing.assert_allclose(
            measured.get_offsets(), np.column_stack([sizes, a + b * np.log(sizes)])
        )


def bars(fig: Figure) -> dict[str, dict[str, float]]:
    """What a grouped bar chart shows, read back from the drawn figure: series (the legend
    label) -> group (the x tick label under the bar) -> bar height."""
    [ax] = fig.axes
    ticks = [t.get_text() for t in ax.get_xticklabels()]
    out: dict[str, dict[str, float]] = {}
    for container in ax.containers:
        heights = out.setdefault(container.get_label(), {})
        for bar in container.patches:
            group = ticks[round(bar.get_x() + bar.get_width() / 2)]  # groups sit at 0, 1, ...
            assert group not in heights, f"two bars of {container.get_label()} at {group}"
            heights[group] = bar.get_height()
    return out


def summary_csv(path: Path) -> str:
    pl.DataFrame(
        {
            "variant": ["base", "speed", "base", "speed", "speed"],
            "task": ["average"] * 4 + ["STS12"],
            "category": ["STS", "STS", "all", "all", "STS"],
            "metric": ["mean main score"] * 4 + ["cosine_spearman"],
            "score": [50.0, 61.0, 48.0, 58.5, 99.0],
        }
    ).write_csv(path)
    return str(path)


def test_figures_show_the_reports_numbers(tmp_path, ledgers):
    cost = cost_report(
        ledgers, {"speed": corpus_stats(9)}, {"prompt_per_m": 1, "completion_per_m": 1}
    )
    fig = plots.cost_per_stage(cost, str(tmp_path / "cost.png"))
    assert fig.axes[0].get_title() == "Teacher calls per stage"
    assert fig.axes[0].get_ylabel() == "calls"
    # The ledgers fixture: paid and cached calls per stage.
    assert bars(fig) == {
        "paid": {"brainstorm": 8, "seed": 20, "judge": 10, "revise": 10, "teacher_only": 50},
        "cached": {"brainstorm": 0, "seed": 5, "judge": 0, "revise": 0, "teacher_only": 0},
    }

    stats = {
        "speed": corpus_stats(9, {"sts": 5, "retrieval": 4}),
        "teacher_only": corpus_stats(3, {"sts": 3}),  # no retrieval examples kept: a 0 bar
    }
    fig = plots.examples_per_family(stats, str(tmp_path / "families.png"))
    assert fig.axes[0].get_title() == "Corpus examples per family"
    assert bars(fig) == {
        "speed": {"retrieval": 4, "sts": 5},
        "teacher_only": {"retrieval": 0, "sts": 3},
    }
    legend = fig.axes[0].get_legend()
    assert [t.get_text() for t in legend.get_texts()] == ["speed", "teacher_only"]

    fig = plots.scores(summary_csv(tmp_path / "summary.csv"), str(tmp_path / "scores.png"))
    assert fig.axes[0].get_title() == "Mean main score per category"
    # Only the "average" rows: STS12's 99.0 is one task, not a category mean.
    assert bars(fig) == {"base": {"STS": 50.0, "all": 48.0}, "speed": {"STS": 61.0, "all": 58.5}}
    for name in ("cost", "families", "scores"):
        assert (tmp_path / f"{name}.png").read_bytes()[:4] == b"\x89PNG"


def test_data_card(tmp_path, ledgers):
    stats = {"speed": corpus_stats(9, {"sts": 5, "retrieval": 4})}
    cost = cost_report(ledgers, stats, {"prompt_per_m": 1, "completion_per_m": 1})
    card = data_card({"run": "t", "teacher": "tiny"}, stats, cost, summary_csv(tmp_path / "s.csv"))
    assert "# Data card" in card and "| speed | 11 | 9 | 4 | 5 |" in card
    assert "exact duplicate" in card and "ratio" in card and "| speed | 61.00 | 58.50 |" in card
    # The cost table's total row: 8 + 25 + 10 + 10 + 50 calls, 5 of them cached.
    assert "| total | 103 | 98 | 5 |" in card
