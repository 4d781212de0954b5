"""Embedding training (stage 12): instruction format, temperature, MiniLM and a decoder LLM with
last-token pooling + LoRA on the tiny Llama, saved folders that load with SentenceTransformer."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import polars as pl
import pytest
import torch

from speed.train.embedding import (
    CONFIG_NAME,
    CURVE_NAME,
    DEFAULT_QUERY_FORMAT,
    build_model,
    embedding_trainer,
    load_datasets,
    train_embedding,
)

# Tiny everything: a step of the tiny Llama takes well under a second on 2 cores.
FAST = {
    "batch_size": 16,
    "mini_batch_size": 8,
    "max_steps": 2,
    "warmup_steps": 1,
    "max_length": 48,
    "learning_rate": 1e-3,
}
MINILM = {**FAST, "batch_size": 8, "mini_batch_size": 4, "max_length": 32, "learning_rate": 1e-4}
TRAINER_ARGS = {
    "temperature": 0.02,
    "batch_size": 8,
    "mini_batch_size": 4,
    "learning_rate": 1e-4,
    "warmup_steps": 0,
    "weight_decay": 0.1,
    "epochs": 1,
    "max_steps": 1,
    "seed": 0,
}


def write_corpus(path: Path, n: int = 64, instructions: int = 3) -> Path:
    """Corpus-shaped parquet (all columns), a hard negative on every other row."""
    rows = [
        {
            "id": f"r{i}",
            "query": f"what is item {i} about",
            "positive": f"item {i} is a note on topic {i % 7}",
            "negative": f"item {i + 100} is about other things" if i % 2 == 0 else None,
            "instruction": f"Retrieve notes for task {i % instructions}",
            "family": "retrieval" if i % 2 == 0 else "s2s",
            "topic": "t",
        }
        for i in range(n)
    ]
    pl.DataFrame(rows).write_parquet(path)
    return path


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    return write_corpus(tmp_path_factory.mktemp("emb") / "corpus.parquet")


def test_datasets_split_by_negative(corpus):
    ds = load_datasets(corpus)
    assert ds["triplets"].column_names == ["anchor", "positive", "negative"]
    assert ds["pairs"].column_names == ["anchor", "positive"]
    assert len(ds["triplets"]) == len(ds["pairs"]) == 32
    assert (
        ds["pairs"][0]["anchor"]
        == "Instruct: Retrieve notes for task 1\nQuery: what is item 1 about"
    )


def test_instruction_format_reaches_the_model(corpus, tiny_models, tmp_path):
    model = build_model(tiny_models["base"], "decoder", max_length=48)
    trainer = embedding_trainer(model, load_datasets(corpus), tmp_path, **TRAINER_ARGS)
    tok = model.tokenizer
    seen = set()
    for batch in trainer.get_train_dataloader():
        seen.add("negative_input_ids" in batch)
        anchors = tok.batch_decode(batch["anchor_input_ids"], skip_special_tokens=True)
        for text in anchors:
            assert text.startswith("Instruct: Retrieve notes for task ")
            assert "\nQuery: what is item " in text
        for col in ("positive", "negative"):
            if f"{col}_input_ids" in batch:
                for text in tok.batch_decode(batch[f"{col}_input_ids"], skip_special_tokens=True):
                    assert (
                        text.startswith("item ") and "Instruct" not in text and "Query" not in text
                    )
        # EOS ends every text and is attended; padding is on the right.
        for col in ("anchor", "positive"):
            ids, mask = batch[f"{col}_input_ids"], batch[f"{col}_attention_mask"]
            last = mask.sum(1) - 1
            assert (ids[torch.arange(len(ids)), last] == tok.eos_token_id).all()
            assert (mask[:, 0] == 1).all()
    assert seen == {True, False}  # triplet batches and pair batches, never mixed


@pytest.mark.parametrize("temperature", [0.02, 0.05])
def test_temperature_reaches_the_loss(corpus, tiny_models, tmp_path, temperature):
    model = build_model(tiny_models["base"], "decoder", max_length=48)
    args = {**TRAINER_ARGS, "temperature": temperature, "mini_batch_size": 3}
    trainer = embedding_trainer(model, load_datasets(corpus), tmp_path, **args)
    assert type(trainer.loss).__name__ == "CachedMultipleNegativesRankingLoss"
    assert trainer.loss.scale == pytest.approx(1 / temperature)
    assert trainer.loss.mini_batch_size == 3
    assert trainer.args.batch_sampler == "no_duplicates"


def test_minilm_trains_and_loads(corpus, tmp_path):
    from sentence_transformers import SentenceTransformer

    out = tmp_path / "minilm"
    metrics = train_embedding(
        str(corpus), "minilm", out, tmp_path / "ckpt", kind="encoder", **MINILM
    )
    assert metrics["global_step"] == 2 and metrics["loss_scale"] == 50.0
    assert metrics["examples"] == {"triplets": 32, "pairs": 32}
    assert len(json.loads((out / CURVE_NAME).read_text())) == 2
    cfg = json.loads((out / CONFIG_NAME).read_text())
    assert cfg["query_format"] == DEFAULT_QUERY_FORMAT and cfg["kind"] == "encoder"
    model = SentenceTransformer(str(out), device="cpu")
    assert model.max_seq_length == 32
    assert model.prompts["query"] == "" and model.default_prompt_name is None
    emb = model.encode(["Instruct: Retrieve notes\nQuery: item 3", "item 3 is a note"])
    assert emb.shape == (2, 384)
    assert abs(float((emb**2).sum(1)[0]) - 1) < 1e-4  # MiniLM's own Normalize is kept


def _last_token_states(
    model_dir: Path, texts: list[str], weights: Path | None = None
) -> torch.Tensor:
    """Plain transformers, one text at a time (no padding): the hidden state at the last
    position, which must be the EOS the saved tokenizer appends."""
    from transformers import AutoModel, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(model_dir))
    lm = AutoModel.from_pretrained(str(weights or model_dir)).eval()
    rows = []
    for text in texts:
        ids = tok(text, return_tensors="pt")["input_ids"]
        assert ids[0, -1].item() == tok.eos_token_id
        with torch.no_grad():
            rows.append(lm(input_ids=ids).last_hidden_state[0, -1])
    return torch.nn.functional.normalize(torch.stack(rows), dim=-1)


@pytest.fixture(scope="module")
def decoder_out(corpus, tiny_models, tmp_path_factory) -> tuple[Path, Path, dict]:
    root = tmp_path_factory.mktemp("decoder")
    args = {**FAST, "max_steps": 3}
    metrics = train_embedding(
        str(corpus), tiny_models["base"], root / "out", root / "ckpt", kind="decoder", **args
    )
    return root / "out", root / "ckpt", metrics


def test_decoder_last_token_lora(decoder_out, tiny_models):
    from sentence_transformers import SentenceTransformer

    out, _, metrics = decoder_out
    assert metrics["global_step"] == 3 and metrics["kind"] == "decoder"
    assert not (out / "adapter_config.json").exists() and (out / "model.safetensors").exists()
    model = SentenceTransformer(str(out), device="cpu")
    assert model[1].pooling_mode == "lasttoken"
    texts = [
        "Instruct: Retrieve notes\nQuery: what is item 3 about",
        "item 3",
        "a much longer " * 5,
    ]
    emb = model.encode(texts, convert_to_tensor=True, batch_size=3)  # one padded batch
    assert torch.allclose(emb, _last_token_states(out, texts), atol=1e-5)
    # The LoRA was trained and merged: the base model gives other embeddings.
    assert not torch.allclose(
        emb, _last_token_states(out, texts, Path(tiny_models["base"])), atol=1e-3
    )
    # Truncation keeps the EOS at the end.
    feats = model.preprocess(["word " * 200])
    assert (
        feats["input_ids"].shape[1] == 48
        and feats["input_ids"][0, -1] == model.tokenizer.eos_token_id
    )


def test_decoder_rerun_resumes(decoder_out, corpus, tiny_models):
    out, ckpt_root, first = decoder_out
    before = (out / "model.safetensors").read_bytes()
    card = (out / "README.md").read_bytes()
    shutil.rmtree(out)
    args = {**FAST, "max_steps": 3}
    again = train_embedding(
        str(corpus), tiny_models["base"], out, ckpt_root, kind="decoder", **args
    )
    assert again["resumed_from_step"] == 3 and again["global_step"] == 3
    assert again["checkpoints"] == first["checkpoints"]
    assert (out / "model.safetensors").read_bytes() == before
    assert (out / "README.md").read_bytes() == card  # the model card is deterministic too


def test_single_instruction_sets_query_prompt(tiny_models, tmp_path):
    from sentence_transformers import SentenceTransformer

    corpus = write_corpus(tmp_path / "one.parquet", n=16, instructions=1)
    out = tmp_path / "out"
    args = {**FAST, "max_steps": 1}
    train_embedding(
        str(corpus), tiny_models["base"], out, tmp_path / "ckpt", kind="decoder", **args
    )
    model = SentenceTransformer(str(out), device="cpu")
    prefix = "Instruct: Retrieve notes for task 0\nQuery: "
    assert model.prompts == {"query": prefix, "document": ""}
    assert model.default_prompt_name is None
    raw = model.encode_query(["item 3"], convert_to_tensor=True)
    formatted = model.encode([prefix + "item 3"], convert_to_tensor=True)
    assert torch.allclose(raw, formatted, atol=1e-6)
    assert json.loads((out / CONFIG_NAME).read_text())["single_instruction"] is True
