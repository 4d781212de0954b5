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


def sts_scores(prompts: str | Path, prompt_ids: set[str]) -> dict[str, tuple[float, float]]:
    """(high_score, low_score) that each STS prompt of `prompt_ids` asked for (its sampled
    attributes), read line by line so a 1M-prompt file is never held whole."""
    scores = {}
    with open(prompts, encoding="utf-8") as f:
        for line in f:
            p = json.loads(line)
            if p["id"] in prompt_ids and p["family"] == "sts":
                a = p["attributes"]
                scores[p["id"]] = (float(a["high_score"]), float(a["low_score"]))
    return scores


def _retrieval_task(held: pl.DataFrame, root: Path) -> int:
    """BEIR layout: each query's positive is its one relevant document; negatives are
    documents of the corpus that no query marks relevant."""
    retrieval = held.filter(pl.col("family") == "retrieval").to_dicts()
    corpus_rows, queries, qrels = [], [], ["query-id\tcorpus-id\tscore"]
    for i, r in enumerate(retrieval):
        corpus_rows.append({"_id": f"d{i}p", "title": "", "text": r["positive"]})
        if r["negative"]:
            corpus_rows.append({"_id": f"d{i}n", "title": "", "text": r["negative"]})
        queries.append({"_id": f"q{i}", "text": r["query"], "instruction": r["instruction"]})
        qrels.append(f"q{i}\td{i}p\t1")
    _write_jsonl(root / "corpus.jsonl", corpus_rows)
    _write_jsonl(root / "queries.jsonl", queries)
    (root / "qrels").mkdir(parents=True, exist_ok=True)
    (root / "qrels" / "test.tsv").write_text("\n".join(qrels) + "\n")
    return len(queries)


def _sts_task(held: pl.DataFrame, prompts: str | Path, seed: int, path: Path) -> int:
    """Gold scores are what each prompt asked for on its 1-5 scale: S1~S2 its high score, S1~S3
    its low score; S1 against another example's S2 is unrelated (1, the scale's bottom)."""
    sts = held.filter(pl.col("family") == "sts").to_dicts()
    asked = sts_scores(prompts, {r["prompt_id"] for r in sts})
    rng = random.Random(seed)
    pairs = []
    for i, r in enumerate(sts):
        high, low = asked[r["prompt_id"]]
        pairs.append({"sentence1": r["query"], "sentence2": r["positive"], "score": high})
        pairs.append({"sentence1": r["query"], "sentence2": r["negative"], "score": low})
        if len(sts) > 1:
            other = sts[(i + rng.randrange(1, len(sts))) % len(sts)]
            pairs.append({"sentence1": r["query"], "sentence2": other["positive"], "score": 1.0})
    _write_jsonl(path, pairs)
    return len(pairs)


def write_heldout_tasks(
    corpus: str, prompts: str, fraction: float, seed: int, out_dir: str
) -> dict[str, int]:
    """`out_dir/SyntheticRetrieval` (BEIR layout) and `out_dir/SyntheticSTS` (STS layout) from
    the held-out records of `corpus`; `prompts` (the synthesis prompts) gives the STS gold."""
    frame = pl.read_parquet(corpus)
    held = frame.filter(heldout_mask(frame, fraction, seed))
    with atomic_dir(out_dir) as tmp:
        return {
            "SyntheticRetrieval": _retrieval_task(held, Path(tmp) / "SyntheticRetrieval"),
            "SyntheticSTS": _sts_task(
                held, prompts, seed, Path(tmp) / "SyntheticSTS" / "test.jsonl"
            ),
        }
