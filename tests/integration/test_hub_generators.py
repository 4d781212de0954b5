"""Hub-shaped generator bases (tests/hub_models.py) through the alignment and synthesis stages:
junior -> candidates -> judge -> senior and revisor -> synthesis and revision, with the tiny
teacher, on both local engines.

One base runs the DAG (qwen2 on vLLM) to the senior's revised synthesis shard. The other pairs
(llama3, qwen2 and mistral on transformers, llama3 on vLLM) run the same stage functions with
the same params in this process, on the DAG's teacher outputs (prompts and seed examples do not
depend on the generator base): a DAG job spends most of its time starting a Python process, and
the suite must stay inside CI's time. Sizes are tiny throughout.

Every trained folder must reload with `from_pretrained`, carry the template it was trained with
and render with it; every constrained answer a generator decoded must be byte for byte what the
training serializer writes for the object it holds (speed.llm.json_format).
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest
import yaml

from speed import workflow as wf
from speed.io import read_jsonl
from speed.llm.chat_template import PROJECT_TEMPLATE, eos_ids
from speed.llm.json_format import decoder_json, in_decoder_form, parse_pairs
from speed.prompts.families import FAMILIES
from tests.conftest import copy_workflow, snakemake
from tests.hub_models import build_hub_model

pytestmark = pytest.mark.slow

DAG_RUNS = [("qwen2", "vllm")]
STAGE_RUNS = [
    ("llama3", "transformers"),
    ("qwen2", "transformers"),
    ("mistral", "transformers"),
    ("llama3", "vllm"),
]
SHARED = "hub"  # the DAG runs' `run:`; the stage runs use its teacher outputs
TRAINED = ("junior", "senior", "revisor")


def hub_config(workflow: Path, shape: str, engine: str) -> dict:
    """The default tiny config with a hub-shaped generator base and the smallest sizes at
    which each stage still has work: every bound is short enough that no constrained answer
    reaches its max_tokens."""
    c = yaml.safe_load((workflow / "config" / "config.yaml").read_text())
    c["run"] = f"{shape}-{engine}"
    c["models"]["hubbase"] = {"hub": str(workflow.parent / "bases" / shape)}
    c["generation"] = {"base": "hubbase", "backend": engine}
    c["topics"]["n"] = 2
    c["brainstorm"].update(list_size=2, max_task_chars=60, max_tokens=200)
    c["prompts"]["n"] = {"seed": 6, "candidates": 4, "synthesis": 3, "teacher_only": 1}
    c["prompts"]["max_field_chars"] = 30
    c["seed_data"]["max_tokens"] = 200
    c["candidates"].update(k=3, max_tokens=200)
    c["judge"].update(max_tokens=120, max_reason_chars=20)
    c["revise"].update(max_tokens=250, max_reason_chars=20)
    c["synthesis"].update(shards=1)
    c["synthesis"]["sampling"]["max_tokens"] = 200
    c["synthesis"]["revision_sampling"]["max_tokens"] = 200
    for stage in TRAINED:
        c[stage].update(epochs=1, per_device_batch_size=4, gradient_accumulation=1)
    return c


@pytest.fixture(scope="module")
def workflow(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("hub_generators")
    for shape in ("qwen2", "llama3", "mistral"):
        build_hub_model(shape, root / "bases" / shape)
    return copy_workflow(root / "wf")


# The generator side of a run: what a change of generation.base or .backend rebuilds.
GENERATOR_SIDE = ("models/junior", "models/senior", "models/revisor", "align", "synth")


@pytest.fixture(scope="module")
def dag_runs(workflow) -> dict[tuple[str, str], Path]:
    """The DAG run, its generator side copied aside as a snapshot."""
    results = workflow / "results" / SHARED
    done = {}
    for shape, engine in DAG_RUNS:
        cfg = workflow / "config" / f"{shape}-{engine}.yaml"
        config = {**hub_config(workflow, shape, engine), "run": SHARED}
        cfg.write_text(yaml.safe_dump(config, sort_keys=False))
        start = time.perf_counter()
        target = f"results/{SHARED}/synth/revised/senior/0.jsonl"
        snakemake(workflow, target, "--cores", "2", "--configfile", str(cfg))
        print(f"DAG {shape}-{engine}: {time.perf_counter() - start:.0f} s")
        snapshot = workflow / "dag" / f"{shape}-{engine}"
        for part in ("teacher", *GENERATOR_SIDE):
            shutil.copytree(results / part, snapshot / part)
        done[(shape, engine)] = snapshot
    return done


def run_stages(c: dict, shared: Path, out: Path) -> None:
    """The rules' jobs from junior to synth_revised, as the rules call them (same params)."""
    from speed.stages.align import (
        revisor_sft_examples,
        run_candidates,
        run_judge,
        run_revise,
        seed_sft_examples,
    )
    from speed.stages.synthesize import run_generate, run_revise_shard
    from speed.train.dpo import train_dpo
    from speed.train.sft import train_sft

    base, seed, cache, ckpt = wf.model_path(c, "hubbase"), c["seed"], c["cache_dir"], out / "ckpt"
    m, a, s = out / "models", out / "align", out / "synth"
    teacher, price = wf.teacher_spec(c), wf.teacher_price(c)

    def card(name: str) -> dict:
        return wf.card_params(c, "hubbase", name)

    def train(name: str) -> dict:
        return {**{k: v for k, v in c[name].items() if k != "beta"}, "seed": seed}

    seeds = seed_sft_examples(
        str(shared / "teacher/seed.jsonl"), str(shared / "prompts/seed.jsonl")
    )
    train_sft(base, seeds, m / "junior", ckpt, spec=train("junior"), card=card("junior"))
    run_candidates(
        llm=wf.generator_spec(c, "junior", str(m / "junior")),
        prompts_path=str(shared / "prompts/candidates.jsonl"),
        k=c["candidates"]["k"],
        sampling={k: v for k, v in c["candidates"].items() if k != "k"},
        seed=seed,
        cache_dir=cache,
        output=str(a / "candidates.jsonl"),
        stats_output=str(a / "candidates.stats.json"),
    )
    run_judge(
        llm=teacher,
        candidates_path=str(a / "candidates.jsonl"),
        temperature=c["judge"]["temperature"],
        max_tokens=c["judge"]["max_tokens"],
        max_reason_chars=c["judge"]["max_reason_chars"],
        price=price,
        cache_dir=cache,
        judgments_output=str(a / "judgments.jsonl"),
        pairs_output=str(a / "preference_pairs.jsonl"),
        stats_output=str(a / "judgments.stats.json"),
        ledger=str(out / "ledger/judge.jsonl"),
    )
    pairs = read_jsonl(a / "preference_pairs.jsonl")
    beta = c["senior"]["beta"]
    train_dpo(
        str(m / "junior"), pairs, m / "senior", ckpt, beta, train("senior"), card=card("senior")
    )
    run_revise(
        llm=teacher,
        candidates_path=str(a / "candidates.jsonl"),
        sampling=dict(
            temperature=c["teacher"]["temperature"],
            top_p=c["teacher"]["top_p"],
            max_tokens=c["revise"]["max_tokens"],
        ),
        max_field_chars=c["prompts"]["max_field_chars"],
        max_reason_chars=c["revise"]["max_reason_chars"],
        seed=seed,
        price=price,
        cache_dir=cache,
        output=str(a / "revisions.jsonl"),
        rejects_output=str(a / "revisions.rejects.jsonl"),
        stats_output=str(a / "revisions.stats.json"),
        ledger=str(out / "ledger/revise.jsonl"),
    )
    revisions = revisor_sft_examples(str(a / "revisions.jsonl"))
    train_sft(base, revisions, m / "revisor", ckpt, spec=train("revisor"), card=card("revisor"))
    run_generate(
        llm=wf.generator_spec(c, "senior", str(m / "senior")),
        generator="senior",
        prompts_path=str(shared / "prompts/synthesis.jsonl"),
        shard=0,
        shards=1,
        sampling=c["synthesis"]["sampling"],
        seed=seed,
        cache_dir=cache,
        output=str(s / "raw/senior/0.jsonl"),
    )
    run_revise_shard(
        llm=wf.generator_spec(c, "revisor", str(m / "revisor")),
        raw_path=str(s / "raw/senior/0.jsonl"),
        prompts_path=str(shared / "prompts/synthesis.jsonl"),
        sampling=c["synthesis"]["revision_sampling"],
        seed=seed,
        cache_dir=cache,
        output=str(s / "revised/senior/0.jsonl"),
        stats_output=str(s / "revised/senior/0.stats.json"),
    )


@pytest.fixture(scope="module")
def runs(workflow, dag_runs) -> dict[tuple[str, str], Path]:
    from speed.llm.knobs import ENV_VAR, knobs_env

    done = dict(dag_runs)
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(workflow)  # the config's relative paths: the tiny teacher, the cache
        for shape, engine in STAGE_RUNS:
            c = hub_config(workflow, shape, engine)
            c["run"] = SHARED  # its tiny teacher
            mp.setenv(ENV_VAR, knobs_env(wf.knobs(c)))  # as the Snakefile sets them for jobs
            out = workflow / "stages" / f"{shape}-{engine}"
            start = time.perf_counter()
            run_stages(c, workflow / "results" / SHARED, out)
            print(f"stages {shape}-{engine}: {time.perf_counter() - start:.0f} s")
            done[(shape, engine)] = out
    return done


ALL_RUNS = DAG_RUNS + STAGE_RUNS


@pytest.mark.parametrize("shape, engine", ALL_RUNS)
def test_trained_folders_reload_with_their_template(runs, shape, engine):
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    out = runs[(shape, engine)]
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


@pytest.mark.parametrize("shape, engine", ALL_RUNS)
def test_decoded_answers_are_what_training_writes(runs, shape, engine):
    """Every answer of the junior (candidates), the senior (synthesis) and the revisor
    (revisions) parses, and re-serialized by the training serializer it is the decoded text,
    byte for byte: compact, its family's keys in order."""
    out = runs[(shape, engine)]
    texts = [
        (row["family"], cand["text"])
        for row in read_jsonl(out / "align" / "candidates.jsonl")
        for cand in row["candidates"]
    ]
    texts += [(r["family"], r["text"]) for r in read_jsonl(out / "synth/raw/senior/0.jsonl")]
    revised = read_jsonl(out / "synth/revised/senior/0.jsonl")
    texts += [(r["family"], r["revision"]) for r in revised]
    assert len(texts) >= 12
    for family, text in texts:
        pairs = parse_pairs(text)
        assert pairs is not None, text  # the fields are bounded: no answer is cut off
        assert decoder_json(dict(pairs)) == text
        assert in_decoder_form(text, FAMILIES[family].keys)


@pytest.mark.parametrize("shape, engine", ALL_RUNS)
def test_the_stages_had_work(runs, shape, engine):
    out = runs[(shape, engine)]
    assert read_jsonl(out / "align" / "preference_pairs.jsonl")
    assert read_jsonl(out / "align" / "revisions.jsonl")
    revised = read_jsonl(out / "synth/revised/senior/0.jsonl")
    assert revised and all(r["revisor"] == "revisor" for r in revised)


def test_seed_targets_are_in_decoder_form(dag_runs):
    for out in dag_runs.values():
        seeds = read_jsonl(out / "teacher" / "seed.jsonl")
        assert seeds and all(in_decoder_form(r["output"]) for r in seeds)
