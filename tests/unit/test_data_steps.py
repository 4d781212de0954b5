"""The package steps behind the thin rule scripts embedding_data and scaling_data."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from speed.data.corpus import COLUMNS
from speed.eval.heldout import heldout_mask, write_training_split
from speed.report.scaling import nested_sample, write_scaling_subset


def corpus(path: Path, n: int = 40) -> pl.DataFrame:
    rows = [
        {k: f"{k}-{i}" if t == pl.String else None for k, t in COLUMNS.items()}
        | {"id": f"v-{i:07d}", "prompt_id": f"synthesis-{i:06d}"}
        for i in range(n)
    ]
    frame = pl.DataFrame(rows, schema=COLUMNS)
    frame.write_parquet(path)
    return frame


def test_training_split_is_the_corpus_minus_the_held_out_prompts(tmp_path: Path) -> None:
    frame = corpus(tmp_path / "c.parquet")
    out = tmp_path / "out" / "train.parquet"
    kept = write_training_split(str(tmp_path / "c.parquet"), 0.5, 7, str(out))
    train = pl.read_parquet(out)
    expected = frame.filter(~heldout_mask(frame, 0.5, 7))
    assert 0 < kept == train.height == expected.height < frame.height
    assert train.equals(expected) and train.schema == frame.schema
    assert write_training_split(str(tmp_path / "c.parquet"), 0.0, 7, str(out)) == frame.height
    assert not list(out.parent.glob(".*tmp*"))  # written atomically


def test_scaling_subset_is_the_nested_sample(tmp_path: Path) -> None:
    frame = corpus(tmp_path / "t.parquet")
    out = tmp_path / "t@0.25.parquet"
    assert write_scaling_subset(str(tmp_path / "t.parquet"), 0.25, 3, str(out)) == 10
    assert pl.read_parquet(out).equals(nested_sample(frame, 0.25, 3))
