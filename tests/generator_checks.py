"""What every run of the trained generators must satisfy, wherever it ran (a DAG or the stage
functions in process): the trained folders reload with their template, every decoded answer is
byte for byte what the training serializer writes, and each stage had work. `out` is a run's
folder (results/<run> or its copy) holding models/, align/ and synth/."""

from __future__ import annotations

import json
from pathlib import Path

from speed.io import read_jsonl
from speed.llm.chat_template import PROJECT_TEMPLATE, eos_ids
from speed.llm.json_format import decoder_json, in_decoder_form, parse_pairs
from speed.prompts.families import FAMILIES

TRAINED = ("junior", "senior", "revisor")


def _shards(out: Path, kind: str) -> list[Path]:
    paths = sorted((out / "synth" / kind / "senior").glob("*.jsonl"))
    assert paths, f"no {kind} senior shard under {out}"
    return paths


def check_trained_folders(out: Path) -> None:
    """Each generator folder reloads with `from_pretrained`, carries the project's template (no
    base here has generation markers) and renders with it; its EOS is a generation stop id."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    messages = [{"role": "user", "content": "Write one example."}]
    for name in TRAINED:
        folder = out / "models" / name
        tok = AutoTokenizer.from_pretrained(folder)
        assert tok.chat_template == PROJECT_TEMPLATE, name  # as trained: no base had markers
        metrics = json.loads((folder / "metrics.json").read_text())
        # The junior and revisor chose it; the senior kept the junior's (which has markers).
        assert metrics["chat_template"] == ("base" if name == "senior" else "project")
        assert tok.pad_token is not None
        text = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        assert text.endswith("Assistant:\n") and "None" not in text
        assert tok.eos_token_id in eos_ids(GenerationConfig.from_pretrained(folder))
        model = AutoModelForCausalLM.from_pretrained(folder)
        assert model.config.vocab_size >= len(tok)


def check_decoded_answers(out: Path) -> None:
    """Every answer of the junior (candidates), the senior (synthesis) and the revisor
    (revisions) parses, and re-serialized by the training serializer it is the decoded text,
    byte for byte: compact, its family's keys in order."""
    texts = [
        (row["family"], cand["text"])
        for row in read_jsonl(out / "align" / "candidates.jsonl")
        for cand in row["candidates"]
    ]
    for path in _shards(out, "raw"):
        texts += [(r["family"], r["text"]) for r in read_jsonl(path)]
    for path in _shards(out, "revised"):
        texts += [(r["family"], r["revision"]) for r in read_jsonl(path)]
    assert len(texts) >= 12
    for family, text in texts:
        pairs = parse_pairs(text)
        assert pairs is not None, text  # the fields are bounded: no answer is cut off
        assert decoder_json(dict(pairs)) == text
        assert in_decoder_form(text, FAMILIES[family].keys)


def check_stages_had_work(out: Path) -> None:
    assert read_jsonl(out / "align" / "preference_pairs.jsonl")
    assert read_jsonl(out / "align" / "revisions.jsonl")
    revised = [r for path in _shards(out, "revised") for r in read_jsonl(path)]
    assert revised and all(r["revisor"] == "revisor" for r in revised)


def check_seed_targets(out: Path) -> None:
    seeds = read_jsonl(out / "teacher" / "seed.jsonl")
    assert seeds and all(in_decoder_form(r["output"]) for r in seeds)
