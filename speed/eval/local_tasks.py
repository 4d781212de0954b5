"""mteb tasks over local folders (the layouts of docs/eval_layouts.md).

Each folder becomes a subclass of mteb's own AbsTask for its type, with a TaskMetadata and a
`load_data` that reads the files, so scoring is mteb's protocol throughout (its STS, sklearn,
retrieval, pair-classification and clustering evaluators). Where the folder's name is a task mteb
knows, its protocol settings (main score, samples per label, score range, ...) are taken from
mteb's registered class, so a local copy of an MTEB dataset is scored exactly as mteb scores it.
"""

from __future__ import annotations

import csv
import functools
import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from datasets import Dataset, DatasetDict
from mteb.abstasks import (
    AbsTask,
    AbsTaskClassification,
    AbsTaskClusteringLegacy,
    AbsTaskPairClassification,
    AbsTaskRetrieval,
    AbsTaskSTS,
)
from mteb.abstasks.retrieval_dataset_loaders import RetrievalSplitData
from mteb.abstasks.task_metadata import TaskMetadata

from speed.eval.languages import LANGS, is_language_code
from speed.io import read_jsonl
from speed.llm.fingerprint import fingerprint

TASK_TYPES = ("STS", "Classification", "Retrieval", "PairClassification", "Reranking", "Clustering")

# mteb's main scores for these types in MTEB(eng, v1), used when mteb does not know the task.
DEFAULT_MAIN_SCORE = {
    "STS": "cosine_spearman",
    "Classification": "accuracy",
    "Retrieval": "ndcg_at_10",
    "PairClassification": "max_ap",
    "Reranking": "map_at_1000",
    "Clustering": "v_measure",
}

_BASES: dict[str, type[AbsTask]] = {
    "STS": AbsTaskSTS,
    "Classification": AbsTaskClassification,
    "Retrieval": AbsTaskRetrieval,
    "PairClassification": AbsTaskPairClassification,
    "Reranking": AbsTaskRetrieval,  # mteb 2 scores reranking as retrieval over `top_ranked`
    "Clustering": AbsTaskClusteringLegacy,  # the MTEB(eng, v1) clustering protocol
}

# Protocol knobs copied from mteb's registered class of the same name and type (ArguAna ignores
# identical ids, EmotionClassification samples 16 per label, ...), overridable in task.json.
_PROTOCOL_ATTRS: dict[str, tuple[str, ...]] = {
    "STS": ("min_score", "max_score"),
    "Classification": ("samples_per_label", "n_experiments"),
    "Retrieval": ("ignore_identical_ids", "k_values", "skip_first_result"),
    "Reranking": ("ignore_identical_ids", "k_values", "skip_first_result"),
    "PairClassification": (),
    "Clustering": (),
}


@dataclass(frozen=True)
class LocalSpec:
    """What a folder holds, before any data is read."""

    path: Path
    name: str
    type: str
    subset: str  # "default", or the language subset the folder is
    lang: str
    main_score: str
    eval_split: str
    options: dict[str, Any] = field(default_factory=dict)  # protocol attrs from mteb / task.json


@functools.cache
def registered_task(name: str) -> AbsTask | None:
    """mteb's own task of this name (metadata only, nothing is downloaded), or None."""
    import mteb

    try:
        with warnings.catch_warnings():  # superseded-task warnings are noise here
            warnings.simplefilter("ignore")
            return mteb.get_task(name)
    except (KeyError, ValueError):
        return None


def _first_row(path: Path) -> dict[str, Any]:
    with open(path) as f:
        for line in f:
            if line.strip():
                return dict(json.loads(line))
    raise ValueError(f"{path} is empty")


def detect_type(folder: str | Path) -> str:
    """The task type a folder's files imply (task.json's "type" wins, see `describe`)."""
    d = Path(folder)
    if (d / "corpus.jsonl").exists() and (d / "queries.jsonl").exists() and (d / "qrels").is_dir():
        return "Retrieval"
    if (d / "train.jsonl").exists() and (d / "test.jsonl").exists():
        return "Classification"
    if not (d / "test.jsonl").exists():
        raise ValueError(f"{d}: no eval layout found (see docs/eval_layouts.md)")
    keys = set(_first_row(d / "test.jsonl"))
    if {"sentence1", "sentence2", "score"} <= keys:
        return "STS"
    if {"sentence1", "sentence2"} <= keys and keys & {"label", "labels"}:
        return "PairClassification"
    if {"query", "positive", "negative"} <= keys:
        return "Reranking"
    if {"sentences", "labels"} <= keys or {"text", "label"} <= keys:
        return "Clustering"
    raise ValueError(f"{d}/test.jsonl: unknown row keys {sorted(keys)}")


def _split_of(folder: Path, task_type: str, override: str | None) -> str:
    if override:
        return override
    if task_type == "Retrieval":  # BEIR: the split is named by the qrels file (MSMARCO uses dev)
        for split in ("test", "dev", "validation"):
            if (folder / "qrels" / f"{split}.tsv").exists():
                return split
        raise ValueError(f"{folder}/qrels: no test.tsv, dev.tsv or validation.tsv")
    return "test"


def describe(folder: str | Path) -> LocalSpec:
    """Name, type, language subset and protocol of a local task folder.

    The name is the folder's, or its parent's when the folder is a language subset
    (`AmazonCounterfactualClassification/en`); an optional `task.json` overrides any of
    type, name, subset, lang, main_score, eval_split and the protocol knobs.
    """
    d = Path(folder).resolve()
    if not d.is_dir():
        raise FileNotFoundError(f"local task folder not found: {d}")
    cfg: dict[str, Any] = (
        json.loads((d / "task.json").read_text()) if (d / "task.json").exists() else {}
    )
    task_type = cfg.get("type") or detect_type(d)
    if task_type not in TASK_TYPES:
        raise ValueError(f"{d}: unsupported task type {task_type!r}; one of {TASK_TYPES}")

    parent_task = registered_task(d.parent.name)
    is_subset = is_language_code(d.name) or (
        parent_task is not None and d.name in parent_task.metadata.hf_subsets
    )
    subset = cfg.get("subset") or (d.name if is_subset else "default")
    name = cfg.get("name") or (d.parent.name if subset != "default" else d.name)

    reg = registered_task(name)
    if reg is not None and reg.metadata.type != task_type:
        reg = None  # same name, different protocol: trust the files
    lang = cfg.get("lang")
    if lang is None and reg is not None and subset in reg.metadata.hf_subsets_to_langscripts:
        lang = reg.metadata.hf_subsets_to_langscripts[subset][0]
    if lang is None:
        lang = LANGS.get(subset.split("-")[0], "eng-Latn")

    options = {a: getattr(reg, a) for a in _PROTOCOL_ATTRS[task_type] if reg is not None}
    options.update({a: cfg[a] for a in _PROTOCOL_ATTRS[task_type] if a in cfg})
    main_score = cfg.get("main_score") or (
        reg.metadata.main_score if reg is not None else DEFAULT_MAIN_SCORE[task_type]
    )
    return LocalSpec(
        path=d,
        name=name,
        type=task_type,
        subset=subset,
        lang=lang,
        main_score=main_score,
        eval_split=_split_of(d, task_type, cfg.get("eval_split")),
        options=options,
    )


# --- loaders: files -> the structures mteb's evaluators take -------------------------------


def _rows(spec: LocalSpec, split: str | None = None) -> list[dict[str, Any]]:
    return read_jsonl(spec.path / f"{split or spec.eval_split}.jsonl")


def _load_sts(spec: LocalSpec) -> DatasetDict:
    rows = _rows(spec)
    return DatasetDict(
        {
            spec.eval_split: Dataset.from_dict(
                {
                    "sentence1": [r["sentence1"] for r in rows],
                    "sentence2": [r["sentence2"] for r in rows],
                    "score": [float(r["score"]) for r in rows],
                }
            )
        }
    )


def _load_classification(spec: LocalSpec) -> DatasetDict:
    # Row order is kept: mteb's undersampling shuffles indices with a fixed seed, so the
    # published score needs the train file in the dataset's own order.
    out = {}
    for split in ("train", spec.eval_split):
        rows = _rows(spec, split)
        out[split] = Dataset.from_dict(
            {"text": [r["text"] for r in rows], "label": [r["label"] for r in rows]}
        )
    return DatasetDict(out)


def _load_pair_classification(spec: LocalSpec) -> DatasetDict:
    rows = _rows(spec)
    labels = [int(r["label"] if "label" in r else r["labels"]) for r in rows]
    if len(rows) < 2 or set(labels) != {0, 1}:
        raise ValueError(f"{spec.path}: pair classification needs >= 2 pairs with labels 0 and 1")
    ds = Dataset.from_dict(
        {
            "sentence1": [r["sentence1"] for r in rows],
            "sentence2": [r["sentence2"] for r in rows],
            "labels": labels,  # mteb's column name
        }
    )
    return DatasetDict({spec.eval_split: ds})


def _load_clustering(spec: LocalSpec) -> DatasetDict:
    rows = _rows(spec)
    if "sentences" in rows[0]:  # mteb's legacy layout: one row per cluster set
        sets = {"sentences": [r["sentences"] for r in rows], "labels": [r["labels"] for r in rows]}
    else:  # one item per row: a single cluster set
        sets = {"sentences": [[r["text"] for r in rows]], "labels": [[r["label"] for r in rows]]}
    return DatasetDict({spec.eval_split: Dataset.from_dict(sets)})


def _read_qrels(path: Path) -> dict[str, dict[str, int]]:
    qrels: dict[str, dict[str, int]] = {}
    with open(path, newline="") as f:
        for row in csv.reader(f, delimiter="\t"):
            if not row or row[0] == "query-id":
                continue
            qrels.setdefault(row[0], {})[row[1]] = int(float(row[2]))
    return qrels


def _load_retrieval(spec: LocalSpec) -> dict[str, RetrievalSplitData]:
    qrels = _read_qrels(spec.path / "qrels" / f"{spec.eval_split}.tsv")
    corpus = read_jsonl(spec.path / "corpus.jsonl")
    # queries.jsonl may hold every split's queries (SciFact's does): keep this split's
    queries = [q for q in read_jsonl(spec.path / "queries.jsonl") if str(q["_id"]) in qrels]
    data = RetrievalSplitData(
        # mteb embeds a document as (title + " " + text).strip(), the BEIR convention
        corpus=Dataset.from_dict(
            {
                "id": [str(c["_id"]) for c in corpus],
                "title": [c.get("title") or "" for c in corpus],
                "text": [c.get("text") or "" for c in corpus],
            }
        ),
        queries=Dataset.from_dict(
            {"id": [str(q["_id"]) for q in queries], "text": [q["text"] for q in queries]}
        ),
        relevant_docs=qrels,
        top_ranked=None,
    )
    return {spec.eval_split: data}


def _load_reranking(spec: LocalSpec) -> dict[str, RetrievalSplitData]:
    # The conversion mteb 2 applies to old-format reranking data (AbsTaskReranking): each query
    # reranks only its own candidates, positives listed first (this matters only for ties), and
    # rows lacking positives or negatives are dropped.
    rows = [r for r in _rows(spec) if r["positive"] and r["negative"]]
    ids, texts, queries, qids = [], [], [], []
    qrels: dict[str, dict[str, int]] = {}
    top_ranked: dict[str, list[str]] = {}
    for i, r in enumerate(rows):
        qid = f"q{i}"
        qids.append(qid)
        queries.append(r["query"])
        cands = [(f"apositive_{qid}_{j:05d}", t, 1) for j, t in enumerate(r["positive"])]
        cands += [(f"negative_{qid}_{j:05d}", t, 0) for j, t in enumerate(r["negative"])]
        for doc_id, text, rel in cands:
            ids.append(doc_id)
            texts.append(text)
            qrels.setdefault(qid, {})[doc_id] = rel
            top_ranked.setdefault(qid, []).append(doc_id)
    data = RetrievalSplitData(
        corpus=Dataset.from_dict({"id": ids, "title": [""] * len(ids), "text": texts}),
        queries=Dataset.from_dict({"id": qids, "text": queries}),
        relevant_docs=qrels,
        top_ranked=top_ranked,
    )
    return {spec.eval_split: data}


def _query_instructions(spec: LocalSpec) -> dict[str, str] | None:
    """query text -> its own instruction, for retrieval folders whose queries.jsonl rows carry
    an `instruction` (the held-out synthetic split: every query comes from another task)."""
    if spec.type != "Retrieval":
        return None
    table = {
        q["text"]: q["instruction"]
        for q in read_jsonl(spec.path / "queries.jsonl")
        if q.get("instruction")
    }
    return table or None


_LOADERS = {
    "STS": _load_sts,
    "Classification": _load_classification,
    "Retrieval": _load_retrieval,
    "PairClassification": _load_pair_classification,
    "Reranking": _load_reranking,
    "Clustering": _load_clustering,
}


def local_task(folder: str | Path) -> AbsTask:
    """An mteb task object for a local folder, ready for `mteb.evaluate`."""
    spec = describe(folder)
    # The dataset revision is the folder's content hash, so a changed copy never matches a
    # cached result made from the old one.
    metadata = TaskMetadata(
        name=spec.name,
        description=f"Local {spec.type} task read from {spec.path}.",
        dataset={"path": str(spec.path), "revision": fingerprint(spec.path) or "none"},
        type=spec.type,  # type: ignore[arg-type]
        category="t2c" if spec.type in ("Classification", "Clustering") else "t2t",
        modalities=["text"],
        eval_splits=[spec.eval_split],
        # a language subset makes the task "multilingual" in mteb's terms: results carry the
        # subset name, as mteb's own results for AmazonCounterfactualClassification "en" do
        eval_langs={spec.subset: [spec.lang]} if spec.subset != "default" else [spec.lang],
        main_score=spec.main_score,
    )

    def load_data(self: AbsTask, num_proc: int | None = None, **kwargs: Any) -> None:
        if self.data_loaded:
            return
        self.dataset = {spec.subset: _LOADERS[spec.type](spec)}  # type: ignore[dict-item]
        self.data_loaded = True

    # mteb reads `metadata` from the class (unload_data even drops instance copies), so each
    # folder gets its own subclass.
    cls = type(
        f"Local{spec.type}Task",
        (_BASES[spec.type],),
        {
            "metadata": metadata,
            "load_data": load_data,
            "query_instructions": _query_instructions(spec),
            **spec.options,
        },
    )
    task: AbsTask = cls()
    return task
