"""Build time, peak memory and lookup throughput of the decontamination index at the scale of
the MTEB English test sets the paper config decontaminates against (a few million texts).

    python benchmarks/decontamination_index.py [--texts 1000000] [--lookups 100000]

Evaluation texts are random word sequences shaped like MTEB's: 60% short (12 words: STS
sentences, queries, titles, tweets) and 40% documents (150 words: abstracts, passages). Lookups
are training-like texts of 40 words, 1% carrying a copied 20-word span of an evaluation text.
"""

from __future__ import annotations

import argparse
import random
import resource
import time

from speed.data.decontaminate import EvalIndex

VOCAB = [f"w{i}" for i in range(50_000)]


def text(rng: random.Random, n: int) -> str:
    return " ".join(rng.choices(VOCAB, k=n))


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--texts", type=int, default=1_000_000)
    ap.add_argument("--lookups", type=int, default=100_000)
    args = ap.parse_args()
    rng = random.Random(0)
    docs: list[str] = []

    def eval_texts():
        for i in range(args.texts):
            t = text(rng, 150 if i % 5 < 2 else 12)
            if i % 1000 == 0 and len(docs) < 1000:
                docs.append(t)
            yield t

    start = time.perf_counter()
    index = EvalIndex(ngram=13, threshold=0.8, shingle_size=3)
    index.add("eval", eval_texts())
    n_grams = index.n_grams()
    built = time.perf_counter() - start
    print(f"index: {len(index):,} texts, {n_grams:,} distinct 13-grams, built in {built:.1f} s")
    print(f"peak RSS after build: {peak_rss_mb():,.0f} MB")

    queries = []
    for i in range(args.lookups):
        if i % 100 == 0:
            w = rng.choice(docs).split()
            queries.append(f"{text(rng, 10)} {' '.join(w[40:60])} {text(rng, 10)}")
        else:
            queries.append(text(rng, 40))
    start = time.perf_counter()
    hits = 0
    for i in range(0, len(queries), 2000):
        hits += sum(h is not None for h in index.hits(queries[i : i + 2000]))
    elapsed = time.perf_counter() - start
    print(f"lookups: {len(queries):,} in {elapsed:.1f} s = {len(queries) / elapsed:,.0f} texts/s")
    print(f"contaminated found: {hits:,} of {len(queries) // 100:,} planted")
    print(f"peak RSS: {peak_rss_mb():,.0f} MB")


if __name__ == "__main__":
    main()
