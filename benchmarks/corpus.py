"""Throughput and peak memory of corpus assembly (validation, exact + MinHash dedup,
decontamination) on N synthetic records (the paper's raw corpus: 1.15M).

    python benchmarks/corpus.py [--records 1000000] [--eval-dir DIR (default: $SPEED_EVAL_DATA)]

Records are random word sequences, written first as JSONL shards of --shard-rows rows and read
back one shard at a time, as the `corpus` rule reads the synthesis shards. 1% are exact
duplicates (another case) and 4% near-duplicates (one more word) of a recent record, and 0.1%
carry evaluation text (retrieval records 30 words of a SciFact document inside the positive,
the others an STS sentence as the query), so every stage does real work. Prints records/s and the
process's peak RSS (which includes the evaluation index).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import tempfile
import time
from collections.abc import Iterator
from itertools import islice
from pathlib import Path
from typing import Any

from speed.data.corpus import assemble, build_eval_index
from speed.io import read_jsonl, write_jsonl

KEYS = {
    "retrieval": ("user_query", "positive_document", "hard_negative_document"),
    "classification": ("input_text", "label", "misleading_label"),
    "sts": ("S1", "S2", "S3"),
}
LENGTHS = {"retrieval": (8, 120, 120), "classification": (40, 2, 2), "sts": (12, 12, 12)}


def synthetic_rows(
    n: int, sentences: list[str], documents: list[str], planted: set[str], seed: int = 0
) -> Iterator[dict[str, Any]]:
    """Rows as the revisor writes them; the prompt ids of rows with evaluation text go to
    `planted`."""
    rng = random.Random(seed)
    vocab = [f"w{i}" for i in range(50_000)]
    families = list(KEYS)
    recent: list[tuple[str, list[str]]] = []
    for i in range(n):
        family = families[i % 3]
        values = [" ".join(rng.choices(vocab, k=k)) for k in LENGTHS[family]]
        u = rng.random()
        if recent and u < 0.05:  # a duplicate of a recent record
            family, values = rng.choice(recent)
            if u < 0.01:
                values = [values[0].upper(), *values[1:]]
            else:
                values = [values[0], values[1] + " again", values[2]]
        elif u < 0.051:  # evaluation text: a SciFact passage in a document, or an STS sentence
            if family == "retrieval":
                doc = rng.choice(documents).split()
                start = rng.randrange(max(1, len(doc) - 30))
                values[1] = f"{values[1]} {' '.join(doc[start : start + 30])}"
            else:
                values[0] = rng.choice(sentences)
            planted.add(f"synthesis-{i}")
        recent = [*recent[-100:], (family, values)]
        yield {
            "family": family,
            "instruction": "Given a query, retrieve relevant documents",
            "text": json.dumps(dict(zip(KEYS[family], values, strict=True))),
            "prompt_id": f"synthesis-{i}",
            "generator": "senior",
        }


def write_shards(rows: Iterator[dict[str, Any]], folder: Path, shard_rows: int) -> list[Path]:
    paths: list[Path] = []
    while shard := list(islice(rows, shard_rows)):
        paths.append(folder / f"{len(paths):05d}.jsonl")
        write_jsonl(paths[-1], shard)
    return paths


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--records", type=int, default=1_000_000)
    ap.add_argument("--shard-rows", type=int, default=10_000)
    default_eval = Path(__file__).resolve().parents[2] / "shared" / "eval-data"
    ap.add_argument("--eval-dir", default=os.environ.get("SPEED_EVAL_DATA", str(default_eval)))
    args = ap.parse_args()

    eval_dir = Path(args.eval_dir)
    tasks = {p.name: str(p) for p in sorted(eval_dir.iterdir()) if p.is_dir()}
    start = time.perf_counter()
    index = build_eval_index(tasks, ngram=13, threshold=0.8, shingle_size=3)
    index_s = time.perf_counter() - start
    index_mb = peak_rss_mb()
    sts = [r["sentence1"] for r in read_jsonl(eval_dir / "STSBenchmark/test.jsonl")]
    docs = [r["text"] for r in read_jsonl(eval_dir / "SciFact/corpus.jsonl")]

    planted: set[str] = set()
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        shards = write_shards(
            synthetic_rows(args.records, sts, docs, planted), Path(tmp), args.shard_rows
        )
        write_s = time.perf_counter() - start
        rows = (row for path in shards for row in read_jsonl(path))
        start = time.perf_counter()
        frame, stats = assemble(rows, "bench", 1, 2000, 0.8, 3, index)
        total_s = time.perf_counter() - start
    missed = frame.filter(frame["prompt_id"].is_in(list(planted))).height
    print(f"eval index: {len(index):,} texts from {sorted(tasks)} in {index_s:.1f} s")
    print(f"shards: {len(shards)} of {args.shard_rows:,} rows, written in {write_s:.1f} s")
    print(f"records in: {stats['in']:,}  out: {stats['out']:,}  drops: {stats['drops']}")
    print(f"decontamination hits: {stats['decontamination_hits']}")
    print(f"planted eval copies: {len(planted):,}, removed: {len(planted) - missed:,}")
    rate = stats["in"] / total_s
    print(f"assemble (shards read included): {total_s:.1f} s = {rate:,.0f} records/s")
    print(f"peak RSS: {peak_rss_mb():,.0f} MB (after building the eval index: {index_mb:,.0f} MB)")


if __name__ == "__main__":
    main()
