"""The texts of an evaluation task that a training corpus must not contain, read from the task
object mteb evaluates (so `mteb:` tasks are covered with the data mteb scores them on).

Only the evaluation splits count (a classification task's train split is not test data). For
retrieval and reranking, the split's queries and the documents they are judged against
(relevant or top-ranked): whole corpora such as MSMARCO's 8.8M passages are not test texts
and would not fit a decontamination index.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from datasets import Dataset

from speed.data.corpus import NOT_TEXT
from speed.io import atomic_file


def task_texts(task: Any) -> Iterator[str]:
    """Every evaluation text of an mteb task object (loading its data if needed)."""
    from mteb.abstasks.aggregated_task import AbsTaskAggregate

    if isinstance(task, AbsTaskAggregate):  # e.g. CQADupstackRetrieval: its parts hold the data
        for part in task.tasks:
            yield from task_texts(part)
        return
    if not task.data_loaded:
        task.load_data()
    yield from _walk(task.dataset, set(task.metadata.eval_splits))


def _is_retrieval(node: Any) -> bool:
    return isinstance(node, Mapping) and {"corpus", "queries", "relevant_docs"} <= node.keys()


def _walk(node: Any, splits: set[str]) -> Iterator[str]:
    """mteb's layouts: {split: data} or {subset: {split: data}}, data a Dataset or a retrieval
    split; split-level entries outside the evaluation splits are skipped."""
    for key, child in node.items():
        if isinstance(child, Dataset) or _is_retrieval(child):
            if key in splits:
                yield from _retrieval_texts(child) if _is_retrieval(child) else _columns(child)
        elif isinstance(child, Mapping):
            yield from _walk(child, splits)


def _columns(ds: Dataset) -> Iterator[str]:
    for name in ds.column_names:
        if name in NOT_TEXT:
            continue
        for value in ds[name]:
            for v in value if isinstance(value, list) else [value]:
                if isinstance(v, str) and v.strip():
                    yield v


def _retrieval_texts(split: Mapping[str, Any]) -> Iterator[str]:
    yield from _columns(split["queries"])
    judged = {doc for docs in split["relevant_docs"].values() for doc in docs}
    for docs in (split.get("top_ranked") or {}).values():
        judged.update(docs)
    corpus = split["corpus"]  # Arrow-backed: only the judged rows' texts are read
    docs = corpus.select([i for i, doc_id in enumerate(corpus["id"]) if doc_id in judged])
    titles = docs["title"] if "title" in docs.column_names else [""] * len(docs)
    for title, text in zip(titles, docs["text"], strict=True):
        yield text
        if title:  # documents are embedded as title + text: index that form too
            yield f"{title} {text}".strip()


def write_task_texts(spec: str, output: str | Path) -> int:
    """The `eval_texts` rule: one {"text"} line per evaluation text of `spec`; the count."""
    from speed.eval.run import ensure_data, load_tasks

    [task] = load_tasks([spec])
    ensure_data(task, spec)
    n = 0
    with atomic_file(output) as f:
        for text in task_texts(task):
            f.write(json.dumps({"text": text}, ensure_ascii=False) + "\n")
            n += 1
    return n
