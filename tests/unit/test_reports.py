"""Cost report, scaling fit, nested samples, data card and figures on hand-made inputs."""

from __future__ import annotations

import json
import math

import polars as pl
import pytest

from speed.io import write_jsonl
from speed.report import plots
from speed.report.cost import cost_report
from speed.report.data_card import data_card
from speed.report.scaling import fit_log_linear, nested_sample, scaling_study


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


def scores_csv(path, retrieval, sts):
    pl.DataFrame(
        {
            "task": ["R", "S"],
            "category": ["Retrieval", "STS"],
            "metric": ["ndcg_at_10", "cosine_spearman"],
            "score": [retrieval, sts],
        }
    ).write_csv(path)
    return str(path)


def test_scaling_study_fits_per_category_and_overall(tmp_path):
    points = [
        {
            "label": f"speed@{f}",
            "fraction": f,
            "examples": int(8000 * f),
            "scores_csv": scores_csv(tmp_path / f"{f}.csv", 40 + 2 * math.log(8000 * f), 70.0),
        }
        for f in (0.25, 0.5)
    ] + [
        {
            "label": "speed",
            "fraction": 1.0,
            "examples": 8000,
            "scores_csv": scores_csv(tmp_path / "1.csv", 40 + 2 * math.log(8000), 70.0),
        }
    ]
    study = scaling_study(points)
    assert [p["examples"] for p in study["points"]] == [2000, 4000, 8000]
    assert study["fits"]["Retrieval"]["b"] == pytest.approx(2.0)
    assert study["fits"]["STS"]["b"] == pytest.approx(0.0, abs=1e-9)
    assert study["fits"]["all"]["b"] == pytest.approx(1.0)
    plots.scaling(study, str(tmp_path / "scaling.png"))
    assert (tmp_path / "scaling.png").read_bytes()[:4] == b"\x89PNG"


def test_data_card_and_figures(tmp_path, ledgers):
    summary = tmp_path / "summary.csv"
    pl.DataFrame(
        {
            "variant": ["base", "speed", "base", "speed"],
            "task": ["average"] * 4,
            "category": ["STS", "STS", "all", "all"],
            "metric": ["mean main score"] * 4,
            "score": [50.0, 60.0, 50.0, 60.0],
        }
    ).write_csv(summary)
    stats = {"speed": corpus_stats(9, {"sts": 5, "retrieval": 4})}
    cost = cost_report(ledgers, stats, {"prompt_per_m": 1, "completion_per_m": 1})
    card = data_card({"run": "t", "teacher": "tiny"}, stats, cost, str(summary))
    assert "# Data card" in card and "| speed | 11 | 9 | 4 | 5 |" in card
    assert "exact duplicate" in card and "ratio" in card and "| speed | 60.00 | 60.00 |" in card
    for fn, arg in (
        (plots.cost_per_stage, cost),
        (plots.examples_per_family, stats),
        (plots.scores, str(summary)),
    ):
        out = tmp_path / f"{fn.__name__}.png"
        fn(arg, str(out))
        assert out.read_bytes()[:4] == b"\x89PNG"
    json.dumps(cost)  # the report is plain JSON
