"""Decontamination texts read from the task objects mteb evaluates. Folders the tests build in
each layout check the mechanism anywhere; the real MTEB test sets (the `eval_data` fixture,
loaded as mteb tasks through the `local:` harness) stand for `mteb:` tasks where present."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from speed.data.corpus import build_eval_index
from speed.eval.local_tasks import local_task
from speed.eval.texts import task_texts, write_task_texts
from speed.io import read_jsonl
from tests.eval_folders import (
    classification_folder,
    retrieval_folder,
    sts_folder,
    write_jsonl,
)


def test_built_sts_and_classification_give_their_test_texts_only(tmp_path):
    sts = sts_folder(tmp_path / "TinySTS")
    pairs = read_jsonl(sts / "test.jsonl")
    got = list(task_texts(local_task(sts)))
    assert got == [p["sentence1"] for p in pairs] + [p["sentence2"] for p in pairs]

    classes = classification_folder(tmp_path / "TinyIntents")
    write_jsonl(classes / "train.jsonl", [{"text": "only in the train split", "label": 0}] * 8)
    test = [r["text"] for r in read_jsonl(classes / "test.jsonl")]
    assert list(task_texts(local_task(classes))) == test  # no labels, no train split


def test_built_retrieval_gives_queries_and_judged_documents_and_catches_a_copy(tmp_path):
    folder = retrieval_folder(tmp_path / "TinyRetrieval")
    docs = {d["_id"]: d["text"] for d in read_jsonl(folder / "corpus.jsonl")}
    out = tmp_path / "TinyRetrieval.jsonl"
    n = write_task_texts(f"local:{folder}", out)
    texts = [r["text"] for r in read_jsonl(out)]
    # q1 is the only judged query (q9 has no qrels); d0 the only judged document
    assert n == len(texts) == 2 and set(texts) == {"python error", docs["d0"]}
    assert docs["d1"] not in texts

    index = build_eval_index({"TinyRetrieval": str(out)}, ngram=5, threshold=0.8, shingle_size=3)
    planted = f"Intro words first. {docs['d0']}"
    assert index.hits([planted, "a fresh sentence about nothing in particular"]) == [
        "TinyRetrieval",
        None,
    ]


def test_sts_and_classification_give_their_evaluation_split_only(eval_data: Path):
    sts = list(task_texts(local_task(eval_data / "STSBenchmark")))
    pairs = read_jsonl(eval_data / "STSBenchmark" / "test.jsonl")
    assert sts == [p["sentence1"] for p in pairs] + [p["sentence2"] for p in pairs]

    banking = list(task_texts(local_task(eval_data / "Banking77Classification")))
    test = [r["text"] for r in read_jsonl(eval_data / "Banking77Classification" / "test.jsonl")]
    assert banking == test  # no labels, no train split


def test_retrieval_gives_queries_and_judged_documents(eval_data: Path, tmp_path):
    folder = eval_data / "SciFact"
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
