"""A Mistral-7B-v0.1-shaped decoder (the real v0.1 sentencepiece tokenizer, no pad token, no chat
template; tests/hub_models.py) as the embedding base: it trains, and both the untrained `base`
variant and the trained one evaluate through mteb on an offline MTEB test set."""

from __future__ import annotations

import json

import pytest
from transformers import AutoTokenizer

from speed.eval.results import read_scores
from speed.stages.evaluate import evaluate_variant
from speed.train.embedding import CONFIG_NAME, train_embedding
from tests.hub_models import build_hub_model
from tests.unit.test_embedding_train import FAST, write_corpus


@pytest.fixture(scope="module")
def mistral(tmp_path_factory):
    return build_hub_model("mistral", tmp_path_factory.mktemp("bases") / "mistral")


def test_the_fixture_has_the_trap(mistral):
    tok = AutoTokenizer.from_pretrained(mistral)
    assert tok.pad_token is None and tok.chat_template is None


@pytest.mark.slow
def test_mistral_decoder_trains_and_both_variants_evaluate(mistral, eval_data, tmp_path):
    task = f"local:{eval_data / 'STSBenchmark'}"
    base_file, cache = tmp_path / "eval" / "base" / "STSBenchmark.json", tmp_path / "mteb"
    evaluate_variant("base", task, None, str(mistral), base_file, cache, "decoder", 48)
    out = tmp_path / "speed"
    corpus = write_corpus(tmp_path / "corpus.parquet")
    metrics = train_embedding(
        str(corpus), str(mistral), out, tmp_path / "ckpt", kind="decoder", **FAST
    )
    assert metrics["global_step"] == 2
    assert json.loads((out / CONFIG_NAME).read_text())["kind"] == "decoder"
    trained_file = tmp_path / "eval" / "speed" / "STSBenchmark.json"
    evaluate_variant("speed", task, str(out), str(mistral), trained_file, cache)
    base, trained = read_scores([base_file]), read_scores([trained_file])
    for scores in (base, trained):
        assert scores["task"].to_list() == ["STSBenchmark"]
        assert -100 <= scores["score"][0] <= 100
    assert base["score"][0] != trained["score"][0]  # the trained weights are another model
