"""The held-out synthetic evaluation tasks and the evaluation summary's means."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from speed.data.corpus import COLUMNS
from speed.eval.heldout import write_heldout_tasks
from speed.eval.summary import summarize
from tests.eval_folders import task_result_file

# With fraction 0.5 and seed 7, prompts 7, 11, 12, 14 and 17 are held out; 0, 1 and 2 are not.
HELD, TRAIN = (7, 11, 12, 14, 17), (0, 1, 2)


def record(i: int, family: str, query: str, positive: str, negative: str | None, instruction: str):
    return {
        "id": f"v-{i:07d}",
        "query": query,
        "positive": positive,
        "negative": negative,
        "instruction": instruction,
        "family": family,
        "topic": "Science",
        "topic_id": "topic-00000",
        "task": None if family == "sts" else instruction,
        "prompt_id": f"synthesis-{i:06d}",
        "generator": "junior",
        "revised": None,
        "variant": "v",
    }


STS_I = "Retrieve semantically similar text."
ROWS = [
    record(0, "retrieval", "trained on q", "trained on d", "trained on n", "Find docs"),
    record(7, "retrieval", "why tides", "The moon pulls the sea.", "Wind waves.", "Answer it"),
    record(1, "sts", "trained on s1", "trained on s2", "trained on s3", STS_I),
    record(11, "sts", "a cat sat on a mat", "a cat was on a mat", "a cat stood by a mat", STS_I),
    record(12, "classification", "great film", "positive", "negative", "Classify reviews"),
    record(14, "retrieval", "tide tables", "A tide table lists high water.", None, "Find a table"),
    record(17, "sts", "the train left", "the train departed", "the train arrived", STS_I),
    record(2, "s2s", "trained on in", "trained on out", None, "Match sentences"),
]  # fmt: skip


# The synthesis prompts: the STS ones ask for their own high and low scores.
ASKED = {1: (5.0, 2.5), 11: (4.0, 3.5), 17: (5.0, 2.5)}
PROMPTS = [
    {"id": f"synthesis-{i:06d}", "family": r["family"],
     "attributes": dict(zip(("high_score", "low_score"), ASKED[i], strict=True))
     if i in ASKED else {}}
    for i, r in zip((0, 7, 1, 11, 12, 14, 17, 2), ROWS, strict=True)
]  # fmt: skip


def read_lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_heldout_tasks_hold_exactly_the_heldout_retrieval_and_sts_records(tmp_path):
    corpus = tmp_path / "v.parquet"
    pl.DataFrame(ROWS, schema=COLUMNS).write_parquet(corpus)
    prompts = tmp_path / "synthesis.jsonl"
    prompts.write_text("".join(json.dumps(p) + "\n" for p in PROMPTS))
    out = tmp_path / "heldout"

    counts = write_heldout_tasks(str(corpus), str(prompts), 0.5, 7, str(out))

    assert counts == {"SyntheticRetrieval": 2, "SyntheticSTS": 6}
    files = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert files == [
        "SyntheticRetrieval/corpus.jsonl",
        "SyntheticRetrieval/qrels/test.tsv",
        "SyntheticRetrieval/queries.jsonl",
        "SyntheticSTS/test.jsonl",
    ]
    retrieval = out / "SyntheticRetrieval"
    assert read_lines(retrieval / "corpus.jsonl") == [
        {"_id": "d0p", "title": "", "text": "The moon pulls the sea."},
        {"_id": "d0n", "title": "", "text": "Wind waves."},
        {"_id": "d1p", "title": "", "text": "A tide table lists high water."},  # no negative
    ]
    assert read_lines(retrieval / "queries.jsonl") == [
        {"_id": "q0", "text": "why tides", "instruction": "Answer it"},
        {"_id": "q1", "text": "tide tables", "instruction": "Find a table"},
    ]
    assert (retrieval / "qrels" / "test.tsv").read_text() == (
        "query-id\tcorpus-id\tscore\nq0\td0p\t1\nq1\td1p\t1\n"
    )
    # S1~S2 and S1~S3: the scores the prompt asked for; S1 against the other example's S2: 1
    assert read_lines(out / "SyntheticSTS" / "test.jsonl") == [
        {"sentence1": "a cat sat on a mat", "sentence2": "a cat was on a mat", "score": 4.0},
        {"sentence1": "a cat sat on a mat", "sentence2": "a cat stood by a mat", "score": 3.5},
        {"sentence1": "a cat sat on a mat", "sentence2": "the train departed", "score": 1.0},
        {"sentence1": "the train left", "sentence2": "the train departed", "score": 5.0},
        {"sentence1": "the train left", "sentence2": "the train arrived", "score": 2.5},
        {"sentence1": "the train left", "sentence2": "a cat was on a mat", "score": 1.0},
    ]
    written = "".join(p.read_text() for p in out.rglob("*") if p.is_file())
    assert "trained on" not in written  # no record of a training prompt is evaluated
    assert "great film" not in written  # held-out classification has no task here


def scores(folder: Path, rows: list[tuple[str, str, float]]) -> list[str]:
    """One variant's per-task files (eval/<variant>/<task>.json), in task order."""
    return [task_result_file(folder / f"{t}.json", t, c, "main_score", s) for t, c, s in rows]


def test_summary_means_per_category_and_over_all_tasks(tmp_path):
    base = [
        ("T1", "Retrieval", 10.0),
        ("T2", "Retrieval", 20.0),
        ("T3", "Retrieval", 60.0),  # a median (20) would differ from the mean (30)
        ("S1", "STS", 60.0),
    ]
    speed = [("T1", "Retrieval", 40.0), ("S1", "STS", 50.0), ("S2", "STS", 80.0)]
    files = {
        "base": scores(tmp_path / "base", base),
        "speed": scores(tmp_path / "speed", speed),
    }
    summary = summarize(files)
    assert summary.columns == ["variant", "task", "category", "metric", "score"]
    rows = summary.rows()
    tasks = [("base", *r) for r in base] + [("speed", *r) for r in speed]
    assert rows[: len(tasks)] == [(v, t, c, "main_score", pytest.approx(s)) for v, t, c, s in tasks]
    means = rows[len(tasks) :]
    assert all((t, m) == ("average", "mean main score") for _, t, _, m, _ in means)
    # the overall mean is over tasks (as mteb averages), not over the category means
    assert [(v, c, s) for v, _, c, _, s in means] == [
        ("base", "Retrieval", pytest.approx(30.0)),
        ("base", "STS", pytest.approx(60.0)),
        ("speed", "Retrieval", pytest.approx(40.0)),
        ("speed", "STS", pytest.approx(65.0)),
        ("base", "all", pytest.approx(37.5)),  # the category means would give 45
        ("speed", "all", pytest.approx(170.0 / 3)),  # the category means would give 52.5
    ]
