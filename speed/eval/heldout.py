"""A held-out synthetic evaluation split: a seeded slice of the corpus prompts whose records are
kept out of every variant's training set and written as local evaluation tasks (the layouts of
docs/eval_layouts.md), so an offline run scores something that training never saw.

The slice is chosen by prompt id, not by record: every variant generates from the same
synthesis prompts, so holding out prompt ids keeps all variants' copies of an example out.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
from pathlib import Path

import polars as pl

from speed.io import atomic_dir, atomic_file

log = logging.getLogger(__name__)


def is_heldout(prompt_id: str, fraction: float, seed: int) -> bool:
    digest = hashlib.sha256(f"{seed}:heldout:{prompt_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < fraction


def heldout_mask(frame: pl.DataFrame, fraction: float, seed: int) -> pl.Series:
    return pl.Series([is_heldout(p, fraction, seed) for p in frame["prompt_id"].to_list()])


def write_training_split(corpus: str, fraction: float, seed: int, out: str) -> int:
    """The corpus minus its held-out prompts, to `out` (rule embedding_data); the rows kept."""
    frame = pl.read_parquet(corpus)
    train = frame.filter(~heldout_mask(frame, fraction, seed))
    with atomic_file(out, "wb") as f:
        train.write_parquet(f)
    log.info(
        "%d of %d records for training (%d held out)",
        train.height,
        frame.height,
        frame.height - train.height,
    )
    return train.height


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def write_heldout_tasks(corpus: str, fraction: float, seed: int, out_dir: str) -> dict[str, int]:
    """`out_dir/SyntheticRetrieval` (BEIR layout) and `out_dir/SyntheticSTS` (STS layout)."""
    frame = pl.read_parquet(corpus)
    held = frame.filter(heldout_mask(frame, fraction, seed))
    counts = {}
    with atomic_dir(out_dir) as tmp:
        retrieval = held.filter(pl.col("family") == "retrieval").to_dicts()
        corpus_rows, queries, qrels = [], [], ["query-id\tcorpus-id\tscore"]
        for i, r in enumerate(retrieval):
            corpus_rows.append({"_id": f"d{i}p", "title": "", "text": r["positive"]})
            if r["negative"]:
                corpus_rows.append({"_id": f"d{i}n", "title": "", "text": r["negative"]})
            queries.append({"_id": f"q{i}", "text": r["query"], "instruction": r["instruction"]})
            qrels.append(f"q{i}\td{i}p\t1")
        root = Path(tmp) / "SyntheticRetrieval"
        _write_jsonl(root / "corpus.jsonl", corpus_rows)
        _write_jsonl(root / "queries.jsonl", queries)
        (root / "qrels").mkdir(parents=True, exist_ok=True)
        (root / "qrels" / "test.tsv").write_text("\n".join(qrels) + "\n")
        counts["SyntheticRetrieval"] = len(queries)

        # STS: S1~S2 asked for 4-5, S1~S3 for 2.5-3.5; S1 against another example's S2 ~ 0.
        sts = held.filter(pl.col("family") == "sts").to_dicts()
        rng = random.Random(seed)
        pairs = []
        for i, r in enumerate(sts):
            pairs.append({"sentence1": r["query"], "sentence2": r["positive"], "score": 4.5})
            pairs.append({"sentence1": r["query"], "sentence2": r["negative"], "score": 3.0})
            if len(sts) > 1:
                other = sts[(i + rng.randrange(1, len(sts))) % len(sts)]
                pairs.append(
                    {"sentence1": r["query"], "sentence2": other["positive"], "score": 0.0}
                )
        _write_jsonl(Path(tmp) / "SyntheticSTS" / "test.jsonl", pairs)
        counts["SyntheticSTS"] = len(pairs)
    return counts
