"""Decontamination texts read from the task objects mteb evaluates: the real MTEB test sets in
../shared/eval-data, loaded as mteb tasks (the `local:` harness), stand for `mteb:` tasks."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from speed.data.corpus import build_eval_index
from speed.eval.local_tasks import local_task
from speed.eval.texts import task_texts, write_task_texts
from speed.io import read_jsonl

EVAL_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "eval-data"


def test_sts_and_classification_give_their_evaluation_split_only():
    sts = list(task_texts(local_task(EVAL_DATA / "STSBenchmark")))
    pairs = read_jsonl(EVAL_DATA / "STSBenchmark" / "test.jsonl")
    assert sts == [p["sentence1"] for p in pairs] + [p["sentence2"] for p in pairs]

    banking = list(task_texts(local_task(EVAL_DATA / "Banking77Classification")))
    test = [r["text"] for r in read_jsonl(EVAL_DATA / "Banking77Classification" / "test.jsonl")]
    assert banking == test  # no labels, no train split


def test_retrieval_gives_queries_and_judged_documents(tmp_path):
    folder = EVAL_DATA / "SciFact"
    qrels = [line.split("\t") for line in (folder / "qrels/test.tsv").read_text().splitlines()[1:]]
    judged = {doc for _q, doc, _s in qrels}
    docs = {d["_id"]: d for d in read_jsonl(folder / "corpus.jsonl")}
    unjudged = next(d for i, d in docs.items() if i not in judged)

    out = tmp_path / "SciFact.jsonl"
    n = write_task_texts(f"local:{folder}", out)
    texts = [r["text"] for r in read_jsonl(out)]
    assert n == len(texts) == 300 + 2 * len(judged)  # every judged doc has a title
    some = docs[sorted(judged)[0]]
    assert some["text"] in texts and f"{some['title']} {some['text']}" in texts
    assert unjudged["text"] not in texts

    index = build_eval_index({"SciFact": str(out)}, ngram=13, threshold=0.8, shingle_size=3)
    assert index.hits([some["text"], "a fresh sentence about nothing in particular at all"]) == [
        "SciFact",
        None,
    ]


def test_an_mteb_task_offline_fails_clearly_and_writes_nothing(tmp_path):
    # an empty HF home: mteb's own data cannot be there, and nothing may be downloaded
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    out = tmp_path / "STSBenchmark.jsonl"
    code = "import sys; from speed.eval.texts import write_task_texts as w; w(*sys.argv[1:])"
    proc = subprocess.run(
        [sys.executable, "-c", code, "mteb:STSBenchmark", str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode != 0
    assert "could not load mteb's data for STSBenchmark" in proc.stderr
    assert [p.name for p in tmp_path.iterdir() if p.name != "hf"] == []
