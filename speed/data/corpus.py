"""Corpus assembly (SPEED stage 11, last step), in polars: parse/repair, validate, map to
training records, drop exact and near duplicates, drop evaluation-contaminated records.

Every drop is counted by reason so the stats add up: in = out + sum(drops).
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from itertools import chain, islice
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from speed.data.decontaminate import EvalIndex
from speed.data.dedup import ExactDuplicates, NearDuplicates, words
from speed.data.validate import check_text, training_record
from speed.io import atomic_file, read_jsonl

log = logging.getLogger(__name__)

CHUNK_ROWS = 5_000  # rows whose parsed records, words and MinHashes are alive at once

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
_TEXT_FIELDS = ("query", "positive", "negative")
# Fields of evaluation data that hold ids, labels, scores or task instructions (shared by every
# query of a task, and by design alike to our own), never test text a model could have copied.
NOT_TEXT = {
    "_id", "id", "query-id", "corpus-id", "label", "labels", "label_text", "metadata", "score",
    "instruction",
}  # fmt: skip


def eval_texts(task_dir: str | Path) -> Iterable[str]:
    """Every text of a local evaluation task (any of the layouts in docs/eval_layouts.md)."""
    for path in sorted(Path(task_dir).rglob("*.jsonl")):
        for row in read_jsonl(path):
            for key, value in row.items():
                if key in NOT_TEXT:
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
    """tasks: name -> a local task folder, or a `.jsonl` of {"text"} rows (rule eval_texts)."""
    index = EvalIndex(ngram=ngram, threshold=threshold, shingle_size=shingle_size)
    for name, source in tasks.items():
        if Path(source).is_file():
            index.add(name, (row["text"] for row in read_jsonl(source)))
        else:
            index.add(name, eval_texts(source))
    log.info(
        "decontamination index: %d texts, %d n-grams from %s",
        len(index),
        index.n_grams(),
        sorted(tasks),
    )
    return index


def _length_problem(record: dict[str, Any], min_words: int, max_words: int) -> str | None:
    for field in _TEXT_FIELDS:
        text = record[field]
        if text is None:
            continue
        n = len(text.split())
        if n > max_words:
            return f"{field} longer than {max_words} words"
        if n < min_words and record["family"] != "classification":  # labels are 1-3 words
            return f"{field} shorter than {min_words} words"
    return None


@dataclass
class _Tally:
    """What validation counted: drops by reason (also per family) and the repairs the kept
    records needed, by kind."""

    drops: Counter[str]
    invalid_per_family: dict[str, Counter[str]] = dataclasses.field(default_factory=dict)
    repairs: Counter[str] = dataclasses.field(default_factory=Counter)

    def drop(self, family: str, reason: str) -> None:
        self.drops[reason] += 1
        self.invalid_per_family.setdefault(family, Counter())[reason] += 1


def _validated(
    rows: Iterable[dict[str, Any]], min_words: int, max_words: int, tally: _Tally
) -> list[dict[str, Any]]:
    """Training records of the rows that parse and pass the checks; the others counted."""
    records = []
    for row in rows:
        checked = check_text(
            row["family"], row["text"], row.get("max_chars"), row.get("finish_reason")
        )
        if checked.fields is None:
            tally.drop(row["family"], f"invalid: {checked.reason}")
            continue
        provenance = {
            k: row.get(k) for k in ("topic", "topic_id", "task", "prompt_id", "generator")
        }
        record = training_record(row["family"], checked.fields, row["instruction"], provenance)
        record["revised"] = row.get("revised")
        if problem := _length_problem(record, min_words, max_words):
            tally.drop(row["family"], problem)
            continue
        tally.repairs.update(checked.repairs)
        records.append(record)
    return records


def _contaminated(
    records: list[dict[str, Any]],
    ids: list[int],
    known_words: dict[str, list[list[str]]],
    eval_index: EvalIndex,
) -> dict[int, str]:
    """id -> evaluation task, for the records `records[id]` whose query, positive or negative
    (the first that does) carries evaluation text. `known_words[field][id]`: words already split."""
    fields = [(i, f) for i in ids for f in _TEXT_FIELDS if records[i][f]]
    field_words = [
        known_words[f][i] if f in known_words else words(records[i][f]) for i, f in fields
    ]
    bad: dict[int, str] = {}
    for (i, _f), task in zip(fields, eval_index.hits_words(field_words), strict=True):
        if task is not None:
            bad.setdefault(i, task)
    return bad


class Diversity:
    """distinct-1/2 of the word sequence of every query, then every positive, of the corpus.
    Words are kept as uint32 ids (one dict entry per distinct word), not as strings."""

    def __init__(self) -> None:
        self._ids: dict[str, int] = {}
        self._queries: list[np.ndarray] = []  # uint32 word ids
        self._positives: list[np.ndarray] = []

    def _encode(self, word_lists: list[list[str]]) -> np.ndarray:
        tokens = list(chain.from_iterable(word_lists))
        new = set(tokens).difference(self._ids)
        self._ids.update(zip(new, range(len(self._ids), len(self._ids) + len(new)), strict=True))
        return np.array(list(map(self._ids.__getitem__, tokens)), np.uint32)

    def add(self, queries: list[list[str]], positives: list[list[str]]) -> None:
        self._queries.append(self._encode(queries))
        self._positives.append(self._encode(positives))

    def stats(self) -> dict[str, float]:
        tokens = np.concatenate([np.zeros(0, np.uint32), *self._queries, *self._positives])
        self._queries, self._positives = [], []
        bigrams = tokens[:-1].astype(np.uint64)  # (first << 32) | second, sorted to count
        bigrams <<= np.uint64(32)
        bigrams |= tokens[1:]
        bigrams.sort()
        distinct_2 = int(np.count_nonzero(bigrams[1:] != bigrams[:-1])) + 1 if len(bigrams) else 0
        return {
            "distinct_1": len(self._ids) / max(1, len(tokens)),
            "distinct_2": distinct_2 / max(1, len(bigrams)),
        }


def assemble(
    rows: Iterable[dict[str, Any]],
    variant: str,
    min_words: int,
    max_words: int,
    dedup_threshold: float,
    shingle_size: int,
    eval_index: EvalIndex | None,
) -> tuple[pl.DataFrame, dict[str, Any]]:
    """The corpus of `rows` (raw model outputs with provenance) and its stats.

    Rows stream through in chunks of CHUNK_ROWS: each chunk is parsed, validated, deduplicated
    against everything kept before it, decontaminated, and kept as a polars frame, so only
    one chunk's Python objects are alive at a time (plus the dedup and diversity state)."""
    assembly = _Assembly(variant, min_words, max_words, dedup_threshold, shingle_size, eval_index)
    rows = iter(rows)
    while chunk := list(islice(rows, CHUNK_ROWS)):
        records = assembly.validate(chunk)
        del chunk  # the raw rows are not needed past validation
        assembly.add(records)
    return assembly.finish()


class _Assembly:
    """One corpus being assembled: the drop counts, the dedup and diversity state carried from
    chunk to chunk, and the kept records as polars frames."""

    def __init__(
        self,
        variant: str,
        min_words: int,
        max_words: int,
        dedup_threshold: float,
        shingle_size: int,
        eval_index: EvalIndex | None,
    ) -> None:
        self.variant, self.min_words, self.max_words = variant, min_words, max_words
        self.eval_index = eval_index if eval_index is not None and len(eval_index) else None
        self.drops: Counter[str] = Counter({"near duplicate": 0})
        if self.eval_index is not None:
            self.drops["contaminated"] = 0
        self.tally = _Tally(self.drops)
        self.per_family_in: Counter[str] = Counter()
        self.decontaminated: Counter[str] = Counter()
        self.exact: ExactDuplicates | None = ExactDuplicates()
        self.near: NearDuplicates | None = NearDuplicates(dedup_threshold, shingle_size)
        self.diversity = Diversity()
        self.parts: list[pl.DataFrame] = []
        self.n_in = self.n_deduped = self.n_out = 0

    def validate(self, chunk: list[dict[str, Any]]) -> list[dict[str, Any]]:
        self.n_in += len(chunk)
        self.per_family_in.update(row["family"] for row in chunk)
        return _validated(chunk, self.min_words, self.max_words, self.tally)

    def add(self, records: list[dict[str, Any]]) -> None:
        """Dedup, decontaminate and keep one chunk's validated records."""
        query_words = [words(r["query"]) for r in records]
        positive_words = [words(r["positive"]) for r in records]
        kept = self._dedup(query_words, positive_words)
        if self.eval_index is not None:
            known = {"query": query_words, "positive": positive_words}
            bad = _contaminated(records, kept, known, self.eval_index)
            self.decontaminated.update(bad.values())
            self.drops["contaminated"] += len(bad)
            kept = [i for i in kept if i not in bad]
        self.diversity.add([query_words[i] for i in kept], [positive_words[i] for i in kept])
        if kept:
            out = [records[i] for i in kept]
            for j, r in enumerate(out, start=self.n_out):
                r["id"] = f"{self.variant}-{j:07d}"
                r["variant"] = self.variant
            self.parts.append(pl.DataFrame(out, schema=COLUMNS))
            self.n_out += len(out)

    def _dedup(self, query_words: list[list[str]], positive_words: list[list[str]]) -> list[int]:
        """Indices of the records that duplicate nothing kept before, on query + positive:
        exact duplicates first (cheap), then MinHash near duplicates."""
        assert self.exact is not None and self.near is not None, "assembly already finished"
        pair_words = [q + p for q, p in zip(query_words, positive_words, strict=True)]
        unique = []
        for i, w in enumerate(pair_words):
            if self.exact.seen(w):
                self.drops["exact duplicate"] += 1
            else:
                unique.append(i)
        near_flags = self.near.flags([pair_words[i] for i in unique])
        kept = [i for i, dup in zip(unique, near_flags, strict=True) if not dup]
        self.drops["near duplicate"] += len(unique) - len(kept)
        self.n_deduped += len(kept)
        return kept

    def finish(self) -> tuple[pl.DataFrame, dict[str, Any]]:
        """The corpus frame and its stats; the dedup state is freed before the frames join."""
        self.exact = self.near = None
        frame = pl.concat(self.parts) if self.parts else pl.DataFrame(schema=COLUMNS)
        self.parts = []
        drops = self.drops
        duplicates = drops["exact duplicate"] + drops["near duplicate"]
        stats = {
            "variant": self.variant,
            "in": self.n_in,
            "out": frame.height,
            "drops": dict(sorted(drops.items())),
            "dropped": sum(drops.values()),
            "invalid_per_family": {
                f: dict(sorted(c.items())) for f, c in sorted(self.tally.invalid_per_family.items())
            },
            "repairs": dict(sorted(self.tally.repairs.items())),
            "in_per_family": dict(sorted(self.per_family_in.items())),
            "out_per_family": dict(sorted(frame.group_by("family").len().iter_rows())),
            "dedup_rate": duplicates / max(1, self.n_deduped + duplicates),
            "decontamination_hits": dict(sorted(self.decontaminated.items())),
            "revised": int(frame["revised"].sum() or 0) if frame.height else 0,
            "length_words": length_stats(frame),
            **self.diversity.stats(),
        }
        return frame, stats


def length_stats(frame: pl.DataFrame) -> dict[str, dict[str, float]]:
    """Percentiles of the word count (space-separated) of each field."""
    out = {}
    for field in _TEXT_FIELDS:
        lengths = frame[field].drop_nulls().str.count_matches(" ", literal=True) + 1
        if lengths.len():
            out[field] = {f"p{q}": float(lengths.quantile(q / 100, "nearest")) for q in (5, 50, 95)}
    return out


def write_corpus(frame: pl.DataFrame, stats: dict[str, Any], parquet: str, stats_path: str):
    with atomic_file(parquet, "wb") as f:
        frame.write_parquet(f)
    with atomic_file(stats_path) as f:
        json.dump(stats, f, indent=2)
        f.write("\n")
