"""Model cards (README.md) of trained models: real tiny SFT, DPO and embedding trainings, their
cards parsed as the hub would (YAML front matter) and their usage snippets run as written."""

from __future__ import annotations

import copy
import re
import shutil
from pathlib import Path

import polars as pl
import pytest
import yaml

from speed.train import cards
from speed.train.cards import CardFacts, add_scores, split_card
from speed.train.dpo import train_dpo
from speed.train.embedding import train_embedding
from speed.train.sft import train_sft
from tests.unit.test_embedding_train import MINILM, write_corpus
from tests.unit.test_train import EXAMPLES, FAST, PAIRS

ROOT = Path(__file__).parents[2]
BASE = "results/tiny/models/tiny/base"  # what card_params names a tiny base by
SFT = {**FAST, "max_steps": 2, "learning_rate": 5e-3}


def card_of(folder: Path) -> tuple[dict, str, str]:
    """(front matter, body, whole text) of a folder's README.md."""
    text = (folder / "README.md").read_text()
    assert text.startswith("---\n")
    meta, body = split_card(text)
    assert meta and body.strip()
    return meta, body, text


def python_blocks(body: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", body, flags=re.S)


@pytest.fixture(scope="module")
def generators(tiny_models, tmp_path_factory) -> dict[str, Path]:
    """junior (SFT), senior (DPO from it) and revisor (SFT), two steps each."""
    root = tmp_path_factory.mktemp("generators")
    card = {"base_model": BASE, "license": "apache-2.0"}
    base = tiny_models["base"]
    train_sft(base, EXAMPLES, root / "junior", root / "ckpt", SFT, card={**card, "name": "junior"})
    train_dpo(
        str(root / "junior"),
        PAIRS,
        root / "senior",
        root / "ckpt",
        0.25,
        SFT,
        card={**card, "name": "senior"},
    )
    revisor = {**card, "name": "revisor"}
    train_sft(base, EXAMPLES[:8], root / "revisor", root / "ckpt", SFT, card=revisor)
    return {name: root / name for name in ("junior", "senior", "revisor")}


@pytest.mark.parametrize("name", ["junior", "senior", "revisor"])
def test_generator_card_front_matter_names_its_base_and_role(generators, name):
    meta, body, text = card_of(generators[name])
    assert meta["base_model"] == BASE and meta["base_model_relation"] == "finetune"
    assert meta["library_name"] == "transformers" and meta["license"] == "apache-2.0"
    assert meta["pipeline_tag"] == "text-generation"
    method = "dpo" if name == "senior" else "sft"
    assert {"speed", method, "lora", name} <= set(meta["tags"])
    assert body.startswith(f"\n# SPEED {name}\n")
    assert f"the **{name}**" in body
    assert str(generators[name].parent) not in text  # no absolute path


def test_generator_cards_hold_the_training_facts(generators):
    _, junior, _ = card_of(generators["junior"])
    assert f"SFT of `{BASE}` on 16 chat examples (data prompt -> example)" in junior
    assert "| learning rate | 0.005 |" in junior and "| length | max_steps 2 |" in junior
    assert "| per-device batch x gradient accumulation | 4 x 1 |" in junior
    assert "| optimizer steps | 2 |" in junior and "LoRA r 16, alpha 32" in junior
    _, senior, _ = card_of(generators["senior"])
    assert "DPO from the SPEED junior" in senior and "on 8 preference pairs" in senior
    assert "| DPO beta | 0.25 |" in senior and "| last rewards/margins |" in senior
    _, revisor, _ = card_of(generators["revisor"])
    assert "on 8 chat examples (request + draft -> revision)" in revisor
    assert "revisor_messages" in revisor
    # the JSON keys each data prompt's family asks for
    assert "| retrieval | user_query, positive_document, hard_negative_document |" in junior


@pytest.mark.parametrize("name", ["junior", "revisor"])
def test_generator_usage_snippet_runs_as_written(generators, name, capsys):
    (code,) = python_blocks(card_of(generators[name])[1])
    code = code.replace("path/to/this/folder", str(generators[name]))
    code = code.replace("max_new_tokens=400", "max_new_tokens=8")  # the model is random
    exec(compile(code, f"<{name} card>", "exec"), {})
    assert capsys.readouterr().out.strip()  # it decoded something


def test_a_rerun_that_reloads_the_final_checkpoint_writes_the_same_card(generators, tiny_models):
    junior = generators["junior"]
    before = (junior / "README.md").read_bytes()
    moved = junior.with_name("junior.first")
    shutil.move(junior, moved)
    try:
        card = {"base_model": BASE, "license": "apache-2.0", "name": "junior"}
        again = train_sft(
            tiny_models["base"], EXAMPLES, junior, junior.parent / "ckpt", SFT, card=card
        )
        assert again["resumed_from_step"] == 2  # reloaded, not retrained
        assert (junior / "README.md").read_bytes() == before
    finally:
        shutil.rmtree(junior, ignore_errors=True)
        shutil.move(moved, junior)


def test_a_card_without_params_names_the_model_it_was_trained_from(tiny_models, tmp_path):
    train_sft(tiny_models["base"], EXAMPLES[:4], tmp_path / "m", tmp_path / "c", SFT)
    meta, body, _ = card_of(tmp_path / "m")
    assert meta["base_model"] == tiny_models["base"] and meta["license"] == "other"
    assert body.startswith("\n# SPEED generator\n")


@pytest.fixture(scope="module")
def embedding(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("embedding")
    corpus = write_corpus(root / "corpus.parquet")
    card = {"name": "speed", "license": "apache-2.0"}
    train_embedding(str(corpus), "minilm", root / "speed", root / "ckpt", card=card, **MINILM)
    return root / "speed"


def test_embedding_card_is_the_librarys_with_the_speed_facts(embedding):
    meta, body, text = card_of(embedding)
    assert meta["base_model"] == cards.MINILM_ID and meta["license"] == "apache-2.0"
    assert meta["library_name"] == "sentence-transformers"
    assert meta["pipeline_tag"] == "sentence-similarity"
    assert {"speed", "sentence-transformers", "generated_from_trainer"} <= set(meta["tags"])
    assert meta["widget"]  # sentence-transformers' examples, from the training data
    assert "co2_eq_emissions" not in meta
    assert body.startswith("\n# SPEED embedding model (speed)\n")
    assert "trained on the `speed` corpus" in body
    assert "on 64 examples (32 triplets, 32 pairs" in body
    assert "| temperature | 0.02 |" in body and "scale 50" in body
    assert "| optimizer steps | 2 |" in body
    assert "```text\nInstruct: {instruction}\nQuery: {query}\n```" in body
    assert "## Model Details" in body and "### Training Datasets" in body  # the library's
    for dropped in ("Training Logs", "Training Time", "Framework Versions", "Training Hyper"):
        assert dropped not in body, dropped
    assert "sentence_transformers_model_id" not in body and str(embedding.parent) not in text
    assert body.count(cards.SCORES_BEGIN) == body.count(cards.SCORES_END) == 1


def test_embedding_usage_snippets_run_as_written(embedding, capsys):
    blocks = python_blocks(card_of(embedding)[1])
    assert len(blocks) >= 2  # SPEED's (with the instruction) and the library's
    for code in blocks:
        code = code.replace("path/to/this/folder", str(embedding))
        exec(compile(code, "<embedding card>", "exec"), {})
    assert "tensor(" in capsys.readouterr().out


def test_embedding_rerun_writes_the_same_card(embedding):
    before = (embedding / "README.md").read_bytes()
    moved = embedding.with_name("speed.first")
    shutil.move(embedding, moved)
    try:
        card = {"name": "speed", "license": "apache-2.0"}
        corpus = embedding.parent / "corpus.parquet"
        again = train_embedding(
            str(corpus), "minilm", embedding, embedding.parent / "ckpt", card=card, **MINILM
        )
        assert again["resumed_from_step"] == 2
        assert (embedding / "README.md").read_bytes() == before
    finally:
        shutil.rmtree(embedding, ignore_errors=True)
        shutil.move(moved, embedding)


def test_add_scores_replaces_the_block_once(embedding):
    card = (embedding / "README.md").read_text()
    rows = pl.DataFrame(
        {"task": ["TinySTS"], "category": ["STS"], "metric": ["cosine_spearman"], "score": [83.5]}
    )
    scored = add_scores(card, rows, source="eval/speed/")
    assert "| TinySTS | STS | cosine_spearman | 83.50 |" in scored
    assert "holds no scores yet" in card and "holds no scores yet" not in scored
    assert add_scores(scored, rows, source="eval/speed/") == scored
    assert split_card(scored)[0] == split_card(card)[0]  # front matter untouched
    plain = add_scores("# a card\n", rows.to_dicts())
    assert plain.endswith(cards.SCORES_END + "\n") and "## Evaluation" in plain


def test_card_facts_and_the_config_key():
    from snakemake.utils import validate

    from speed.workflow import card_params

    with pytest.raises(ValueError, match="unknown card fields"):
        CardFacts.of({"licence": "mit"}, "m")
    assert CardFacts.of({"license": None}, "m") == CardFacts(None, "m", "other")
    config = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    assert card_params(config, config["generation"]["base"], "junior") == {
        "license": config["card"]["license"],
        "name": "junior",
        "base_model": BASE,
    }
    assert card_params(config, name="speed@0.5") == {"license": "other", "name": "speed@0.5"}
    without = copy.deepcopy(config)
    del without["card"]
    validate(without, str(ROOT / "config" / "schema.yaml"))  # fills in the schema's default
    assert without["card"] == {"license": "other"}
