"""Throughput and peak memory of corpus assembly (validation, exact + MinHash dedup,
decontamination) on N synthetic records built in memory (the paper's raw corpus: 1.15M).

    python benchmarks/corpus.py [--records 1000000] [--eval-dir ../shared/eval-data]

Records are random word sequences with 5% planted near-duplicates and 0.1% planted copies of
evaluation texts, so every stage does real work. Prints records/s per stage and peak RSS.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import time
from pathlib import Path

from speed.data.corpus import assemble, build_eval_index
from speed.io import read_jsonl

KEYS = {
    "retrieval": ("user_query", "positive_document", "hard_negative_document"),
    "classification": ("input_text", "label", "misleading_label"),
    "sts": ("S1", "S2", "S3"),
}


def synthetic_rows(n: int, eval_sentences: list[str], seed: int = 0):
    rng = random.Random(seed)
    vocab = [f"w{i}" for i in range(50_000)]
    families = list(KEYS)
    previous: list[str] = []
    for i in range(n):
        family = families[i % 3]
        lengths = {"retrieval": (8, 120, 120), "classification": (40, 2, 2), "sts": (12, 12, 12)}
        values = [" ".join(rng.choices(vocab, k=k)) for k in lengths[family]]
        if previous and rng.random() < 0.05:  # a near-duplicate of a recent record
            values[0] = previous[-1] + " again"
        if eval_sentences and rng.random() < 0.001:
            values[0] = rng.choice(eval_sentences)
        previous = previous[-100:] + [values[0]]
        yield {
            "family": family,
            "instruction": "Given a query, retrieve relevant documents",
            "text": json.dumps(dict(zip(KEYS[family], values, strict=True))),
            "prompt_id": f"synthesis-{i}",
            "generator": "senior",
        }


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--records", type=int, default=1_000_000)
    ap.add_argument("--eval-dir", default=str(Path(__file__).parents[1] / "../shared/eval-data"))
    args = ap.parse_args()

    eval_dir = Path(args.eval_dir)
    tasks = {p.name: str(p) for p in sorted(eval_dir.iterdir()) if p.is_dir()}
    start = time.perf_counter()
    index = build_eval_index(tasks, ngram=13, threshold=0.8, shingle_size=3)
    index_s = time.perf_counter() - start
    sts = [r["sentence1"] for r in read_jsonl(eval_dir / "STSBenchmark/test.jsonl")]

    rows = list(synthetic_rows(args.records, sts))
    built_mb = peak_rss_mb()
    start = time.perf_counter()
    frame, stats = assemble(rows, "bench", 1, 2000, 0.8, 3, index)
    total_s = time.perf_counter() - start
    print(f"eval index: {len(index):,} texts from {sorted(tasks)} in {index_s:.1f} s")
    print(f"records in: {stats['in']:,}  out: {stats['out']:,}  drops: {stats['drops']}")
    print(f"decontamination hits: {stats['decontamination_hits']}")
    print(f"assemble: {total_s:.1f} s = {stats['in'] / total_s:,.0f} records/s")
    print(f"peak RSS: {peak_rss_mb():,.0f} MB (records built in memory: {built_mb:,.0f} MB)")


if __name__ == "__main__":
    main()
