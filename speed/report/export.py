"""`speed-export`: one corpus variant of a finished run, with its embedding model and their
cards, as a folder ready for `huggingface-cli upload` (docs/export.md).

    <to>/README.md                          dataset card (YAML front matter + the data card)
    <to>/data/train-00000-of-00001.parquet  corpus/<variant>.parquet, the whole corpus
    <to>/model/                             embedding/<variant>/, its model card with scores

Everything is read from the run's folder (the data card's facts from report/data_card.md), so
the export needs no config. Cards hold no dates and no absolute paths: the same run exports
the same cards.
"""

from __future__ import annotations

import argparse
import logging
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import polars as pl
import yaml

from speed.eval.results import variant_scores
from speed.io import atomic_dir, read_json
from speed.report.data_card import (
    corpus_sections,
    cost_section,
    parse_facts,
    scores_table,
    sources_section,
)
from speed.train import cards
from speed.workflow import VARIANT_SOURCES

log = logging.getLogger(__name__)

DATA_FILE = "data/train-00000-of-00001.parquet"
# The Hugging Face hub's size buckets (`size_categories`), by upper bound.
SIZE_BUCKETS = [
    (1_000, "n<1K"),
    (10_000, "1K<n<10K"),
    (100_000, "10K<n<100K"),
    (1_000_000, "100K<n<1M"),
    (10_000_000, "1M<n<10M"),
    (100_000_000, "10M<n<100M"),
    (1_000_000_000, "100M<n<1B"),
]
# Task family -> the hub's task category its examples train for.
FAMILY_TASKS = {
    "retrieval": "text-retrieval",
    "classification": "text-classification",
    "sts": "sentence-similarity",
    "s2s": "sentence-similarity",
    "p2p": "sentence-similarity",
}


def size_category(rows: int) -> str:
    return next((name for bound, name in SIZE_BUCKETS if rows < bound), "n>1B")


def task_categories(families: Sequence[str]) -> list[str]:
    return sorted({FAMILY_TASKS.get(f, "feature-extraction") for f in families})


def hf_features(schema: Any) -> list[dict[str, str]]:
    """The card's `dataset_info.features`: each column's name and `datasets` dtype, as
    `datasets` itself maps the parquet's arrow schema."""
    from datasets import Features, Value

    features = []
    for name, feature in Features.from_arrow_schema(schema).items():
        if not isinstance(feature, Value):  # the corpus is flat: a nested column is a bug
            raise ValueError(f"column {name}: {feature} is not a scalar")
        features.append({"name": name, "dtype": feature.dtype})
    return features


def write_data(corpus: Path, dest: Path) -> tuple[Any, int]:
    """The corpus as `dest`, with plain `string` columns (polars writes `large_string`), so the
    parquet, the card and both ways of loading it agree; its arrow schema and rows."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pl.read_parquet(corpus).to_arrow()
    schema = pa.schema(
        [f.with_type(pa.string()) if f.type == pa.large_string() else f for f in table.schema]
    )
    dest.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table.cast(schema), dest)
    return schema, table.num_rows


def front_matter(
    run: str, variant: str, rows: int, families: Sequence[str], schema: Any, license: str
) -> dict[str, Any]:
    return {
        "pretty_name": f"SPEED synthetic embedding data ({run}, {variant})",
        "license": license,
        "language": ["en"],  # the data prompts ask for English (speed/prompts/data.py)
        "task_categories": task_categories(families),
        "size_categories": [size_category(rows)],
        "tags": ["synthetic", "embeddings", "speed"],
        "configs": [
            {"config_name": "default", "data_files": [{"split": "train", "path": "data/train-*"}]}
        ],
        "dataset_info": {
            "features": hf_features(schema),
            "splits": [{"name": "train", "num_examples": rows}],
        },
    }


def _written_by(variant: str) -> str:
    if variant not in VARIANT_SOURCES:
        return "written by the teacher itself (the all-teacher baseline)"
    generator, revised = VARIANT_SOURCES[variant]
    return f"written by the {generator} generator" + (
        ", then revised once by the revisor" if revised else ", not revised"
    )


def _scores(run_dir: Path, variant: str) -> dict[str, pl.DataFrame]:
    """The untrained base's and the variant's scores (their per-task files), those that exist."""
    scores = {v: variant_scores(run_dir / "eval", v) for v in ("base", variant)}
    return {v: df for v, df in scores.items() if df is not None}


def dataset_body(run_dir: Path, variant: str, rows: int, stats: Mapping[str, Any]) -> list[str]:
    """The card's text: what the rows are, then the data card's sections for this variant."""
    card = run_dir / "report" / "data_card.md"
    facts = parse_facts(card.read_text()) if card.is_file() else {}
    run = facts.get("run", run_dir.name)
    training = run_dir / "embedding_data" / f"{variant}.parquet"
    lines = [
        f"# SPEED synthetic embedding data: `{variant}` of run `{run}`",
        "",
        "Synthetic training data for text embedding models, made with SPEED (arXiv 2410.18634): "
        "small open LLMs, aligned with a teacher's preferences, write examples for tasks the "
        f"teacher brainstormed. This variant was {_written_by(variant)}. Each row is one "
        "example: a `query`, a `positive`, a hard `negative` (null for s2s and p2p), the task "
        "`instruction` an embedding model learns to follow, and provenance columns.",
        "",
        "```python",
        "from datasets import load_dataset",
        'ds = load_dataset("<this repository or folder>", split="train")',
        "```",
    ]
    if training.is_file():
        kept = pl.scan_parquet(training).select(pl.len()).collect().item()
        lines += ["", f"The embedding model was trained on {kept:,} of the {rows:,} rows "]
        lines[-1] += "(the rest were held out as evaluation tasks)." if kept < rows else "(all)."
    sections = [sources_section(facts)] if facts else []
    sections.append(corpus_sections({variant: stats}))
    cost = run_dir / "report" / "cost.json"
    if cost.is_file():
        note = "The cost is the whole run's (every variant's teacher calls), not this variant's."
        sections.append([*cost_section(read_json(cost)), "", note])
    if scores := _scores(run_dir, variant):
        sections.append(["## Evaluation (mteb main score x100)", "", *scores_table(scores)])
    return [*lines, *["\n" + "\n".join(s) for s in sections]]


def dataset_card(run_dir: Path, variant: str, schema: Any, rows: int, license: str) -> str:
    stats = read_json(run_dir / "corpus" / f"{variant}.stats.json")
    families = [f for f, n in stats["out_per_family"].items() if n]
    meta = front_matter(run_dir.name, variant, rows, sorted(families), schema, license)
    head = yaml.safe_dump(meta, sort_keys=False, allow_unicode=True)
    return f"---\n{head}---\n\n" + "\n".join(dataset_body(run_dir, variant, rows, stats)) + "\n"


def model_scores(card: str, run: str, variant: str, scores: Mapping[str, pl.DataFrame]) -> str:
    """The model card with the SPEED run it was trained in and its scores: in the scores block
    of a SPEED card (speed.train.cards, which the training job left without scores), else as a
    section at the end (a folder from elsewhere)."""
    lines = [
        f"Trained on the `{variant}` corpus of SPEED run `{run}` (the dataset exported with "
        "this model, minus its held-out prompts)."
    ]
    if scores:
        lines += ["", "mteb main scores x100, the untrained base beside it:", ""]
        lines += scores_table(scores)
    if cards.SCORES_BEGIN in card:
        return cards.put_scores(card, "\n".join(lines))
    head = ["## SPEED training data and scores", ""]
    return card.rstrip("\n") + "\n\n" + "\n".join(head + lines) + "\n"


def trained_license(run_dir: Path, variant: str) -> str | None:
    """The license on the trained model's SPEED card (the run's `card.license`), if any; a
    card from elsewhere (no scores block) says nothing about this run."""
    readme = run_dir / "embedding" / variant / cards.CARD_NAME
    card = readme.read_text() if readme.is_file() else ""
    return cards.split_card(card)[0].get("license") if cards.SCORES_BEGIN in card else None


def write_model(run_dir: Path, variant: str, dest: Path, license: str | None = None) -> None:
    """embedding/<variant>/ copied as it is, its README.md model card given the scores (and
    `license`, where one is given)."""
    src = run_dir / "embedding" / variant
    if not (src / "config.json").is_file() and not (src / "modules.json").is_file():
        raise FileNotFoundError(f"{src}: no trained embedding model (pass --no-model to skip)")
    shutil.copytree(src, dest)
    readme = dest / cards.CARD_NAME
    card = readme.read_text() if readme.is_file() else _MINIMAL_MODEL_CARD
    card = model_scores(card, run_dir.name, variant, _scores(run_dir, variant))
    readme.write_text(cards.set_license(card, license) if license else card)


_MINIMAL_MODEL_CARD = """---
library_name: sentence-transformers
pipeline_tag: sentence-similarity
tags: [sentence-transformers, speed]
---

# SPEED embedding model
"""


def export_run(
    run_dir: str | Path,
    variant: str,
    to: str | Path,
    license: str | None = None,
    model: bool = True,
    overwrite: bool = False,
) -> Path:
    """Write the export folder `to` (built under a temporary name, renamed when complete).
    `license`: both cards'; None keeps the trained model card's (the run's `card.license`)
    and gives the dataset card the same, or `other`."""
    run_dir, to = Path(run_dir), Path(to)
    corpus = run_dir / "corpus" / f"{variant}.parquet"
    if not corpus.is_file():
        raise FileNotFoundError(f"{corpus}: no corpus of variant {variant} in this run")
    if to.exists() and any(to.iterdir()) and not overwrite:
        raise FileExistsError(f"{to} is not empty (pass --overwrite to replace it)")
    with atomic_dir(to) as tmp:
        schema, rows = write_data(corpus, tmp / DATA_FILE)
        data_license = license or trained_license(run_dir, variant) or cards.DEFAULT_LICENSE
        (tmp / "README.md").write_text(dataset_card(run_dir, variant, schema, rows, data_license))
        if model:
            write_model(run_dir, variant, tmp / "model", license)
    log.info("exported %s rows of %s/%s to %s", rows, run_dir.name, variant, to)
    return to


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="speed-export", description=__doc__.partition("\n")[0])
    ap.add_argument("run_dir", type=Path, help="the run's folder, e.g. results/tiny")
    ap.add_argument("variant", help="a corpus variant of the run, e.g. speed")
    ap.add_argument("--to", required=True, type=Path, help="the folder to write")
    ap.add_argument(
        "--license",
        help="the cards' license (default: the trained model card's, from the run's "
        "card.license, else other)",
    )
    ap.add_argument("--no-model", action="store_true", help="export the dataset only")
    ap.add_argument("--overwrite", action="store_true", help="replace a non-empty --to folder")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        export_run(
            args.run_dir, args.variant, args.to, args.license, not args.no_model, args.overwrite
        )
    except (FileNotFoundError, FileExistsError, ValueError) as e:
        ap.exit(2, f"speed-export: error: {e}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
