"""Corpus assembly (SPEED stage 11, last step), in polars: parse/repair, validate, map to
training records, drop exact and near duplicates, drop evaluation-contaminated records.

Every drop is counted by reason so the stats add up: in = out + sum(drops).
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import polars as pl

from speed.data.decontaminate import EvalIndex
from speed.data.dedup import exact_keys, near_duplicate_flags, words
from speed.data.validate import check_text, training_record
from speed.io import atomic_file, read_jsonl

log = logging.getLogger(__name__)

COLUMNS = {
    "id": pl.String,
    "query": pl.String,
    "positive": pl.String,
    "negative": pl.String,
    "instruction": pl.String,
    "family": pl.String,
    "topic": pl.String,
    "topic_id": pl.String,
    "task": pl.String,
    "prompt_id": pl.String,
    "generator": pl.String,
    "revised": pl.Boolean,
    "variant": pl.String,
}
# Fields of evaluation files that are ids or label names, not text a model could have copied.
_NOT_TEXT = {"_id", "id", "query-id", "corpus-id", "label", "label_text", "metadata", "score"}


def eval_texts(task_dir: str | Path) -> Iterable[str]:
    """Every text of a local evaluation task (any of the layouts in docs/eval_layouts.md)."""
    for path in sorted(Path(task_dir).rglob("*.jsonl")):
        for row in read_jsonl(path):
            for key, value in row.items():
                if key in _NOT_TEXT:
                    continue
                for v in value if isinstance(value, list) else [value]:
                    if isinstance(v, str) and v.strip():
                        yield v
        # BEIR documents are embedded as title + text: index that form too.
        if path.name == "corpus.jsonl":
            for row in read_jsonl(path):
                yield f"{row.get('title', '')} {row.get('text', '')}".strip()


def build_eval_index(
    tasks: dict[str, str], ngram: int, threshold: float, shingle_size: int
) -> EvalIndex:
    index = EvalIndex(ngram=ngram, threshold=threshold, shingle_size=shingle_size)
    for name, task_dir in tasks.items():
        index.add(name, eval_texts(task_dir))
    log.info("decontamination index: %d texts from %s", len(index), sorted(tasks))
    return index


def _length_problem(record: dict[str, Any], min_words: int, max_words: int) -> str | None:
    for field in ("query", "positive", "negative"):
        text = record[field]
        if text is None:
            continue
        n = len(text.split())
        if n > max_words:
            return f"{field} longer than {max_words} words"
        if n < min_words and record["family"] != "classification":  # labels are 1-3 words
            return f"{field} shorter than {min_words} words"
    return None


def assemble(
    rows: Iterable[dict[str, Any]],
    variant: str,
    min_words: int,
    max_words: int,
    dedup_threshold: float,
    shingle_size: int,
    eval_index: EvalIndex | None,
) -> tuple[pl.DataFrame, dict[str, Any]]:
    drops: Counter[str] = Counter()
    per_family_in: Counter[str] = Counter()
    decontaminated: Counter[str] = Counter()
    records: list[dict[str, Any]] = []
    n_in = 0
    for row in rows:
        n_in += 1
        per_family_in[row["family"]] += 1
        checked = check_text(row["family"], row["text"])
        if checked.fields is None:
            drops[f"invalid: {checked.reason}"] += 1
            continue
        provenance = {
            k: row.get(k) for k in ("topic", "topic_id", "task", "prompt_id", "generator")
        }
        record = training_record(row["family"], checked.fields, row["instruction"], provenance)
        record["revised"] = row.get("revised")
        if problem := _length_problem(record, min_words, max_words):
            drops[problem] += 1
            continue
        records.append(record)

    # Exact duplicates first (cheap), then MinHash near-duplicates, on query + positive.
    pair_texts = [f"{r['query']}\n{r['positive']}" for r in records]
    seen: set[str] = set()
    keep = []
    for r, key, text in zip(records, exact_keys(pair_texts), pair_texts, strict=True):
        if key in seen:
            drops["exact duplicate"] += 1
        else:
            seen.add(key)
            keep.append((r, text))
    near = near_duplicate_flags([t for _r, t in keep], dedup_threshold, shingle_size)
    drops["near duplicate"] += sum(near)
    records = [r for (r, _t), dup in zip(keep, near, strict=True) if not dup]
    n_deduped = len(records)
    duplicates = drops["exact duplicate"] + drops["near duplicate"]

    if eval_index is not None and len(eval_index):
        fields = [
            (i, f) for i, r in enumerate(records) for f in ("query", "positive", "negative") if r[f]
        ]
        hits = eval_index.hits([records[i][f] for i, f in fields])
        bad: dict[int, str] = {}
        for (i, _f), task in zip(fields, hits, strict=True):
            if task is not None:
                bad.setdefault(i, task)
        for task in bad.values():
            decontaminated[task] += 1
        drops["contaminated"] += len(bad)
        records = [r for i, r in enumerate(records) if i not in bad]

    for i, r in enumerate(records):
        r["id"] = f"{variant}-{i:07d}"
        r["variant"] = variant
    frame = pl.DataFrame(records, schema=COLUMNS) if records else pl.DataFrame(schema=COLUMNS)
    stats = {
        "variant": variant,
        "in": n_in,
        "out": frame.height,
        "drops": dict(sorted(drops.items())),
        "dropped": sum(drops.values()),
        "in_per_family": dict(sorted(per_family_in.items())),
        "out_per_family": dict(sorted(Counter(frame["family"].to_list()).items())),
        "dedup_rate": duplicates / max(1, n_deduped + duplicates),
        "decontamination_hits": dict(sorted(decontaminated.items())),
        "revised": int(frame["revised"].sum() or 0) if frame.height else 0,
        **text_stats(frame),
    }
    return frame, stats


def text_stats(frame: pl.DataFrame) -> dict[str, Any]:
    """Word-length percentiles per field and distinct-1/2 (diversity) over queries+positives."""
    out: dict[str, Any] = {"length_words": {}}
    for field in ("query", "positive", "negative"):
        lengths = frame[field].drop_nulls().str.split(" ").list.len()
        if lengths.len():
            out["length_words"][field] = {
                f"p{q}": float(lengths.quantile(q / 100, "nearest")) for q in (5, 50, 95)
            }
    tokens = [w for t in frame["query"].to_list() + frame["positive"].to_list() for w in words(t)]
    bigrams = list(zip(tokens, tokens[1:], strict=False))
    out["distinct_1"] = len(set(tokens)) / max(1, len(tokens))
    out["distinct_2"] = len(set(bigrams)) / max(1, len(bigrams))
    return out


def write_corpus(frame: pl.DataFrame, stats: dict[str, Any], parquet: str, stats_path: str):
    with atomic_file(parquet, "wb") as f:
        frame.write_parquet(f)
    with atomic_file(stats_path) as f:
        json.dump(stats, f, indent=2)
        f.write("\n")
