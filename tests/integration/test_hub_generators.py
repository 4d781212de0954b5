"""Hub-shaped generator bases (tests/hub_models.py) through the alignment and synthesis stages:
junior -> candidates -> judge -> senior and revisor -> synthesis and revision, with the tiny
teacher, on both local engines.

qwen2 on vLLM runs through the DAG in tests/integration/test_quickstart_dag.py (config/
quickstart.yaml on this fixture), with the checks below (tests/generator_checks.py). Here the
DAG runs the teacher side once (the tiny teacher, prompts, seed examples: they do not depend on
the generator base), and the other pairs (llama3, qwen2 and mistral on transformers, llama3 on
vLLM) run the rules' stage functions with the same params in this process, on those outputs: a
DAG job spends most of its time starting a Python process, and the suite must stay inside CI's
time. Sizes are tiny throughout.

Every trained folder must reload with `from_pretrained`, carry the template it was trained with
and render with it; every constrained answer a generator decoded must be byte for byte what the
training serializer writes for the object it holds (speed.llm.json_format).
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import yaml

from speed import workflow as wf
from speed.io import read_jsonl
from tests.conftest import copy_workflow, snakemake
from tests.generator_checks import (
    TRAINED,
    check_decoded_answers,
    check_seed_targets,
    check_stages_had_work,
    check_trained_folders,
)
from tests.hub_models import build_hub_model

pytestmark = pytest.mark.slow

STAGE_RUNS = [
    ("llama3", "transformers"),
    ("qwen2", "transformers"),
    ("mistral", "transformers"),
    ("llama3", "vllm"),
]
SHARED = "hub"  # the DAG run's `run:`; the stage runs use its teacher outputs


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


@pytest.fixture(scope="module")
def shared(workflow) -> Path:
    """The DAG's teacher side (the tiny teacher, the prompts, the seed examples)."""
    cfg = workflow / "config" / "hub.yaml"
    config = {**hub_config(workflow, "qwen2", "vllm"), "run": SHARED}
    cfg.write_text(yaml.safe_dump(config, sort_keys=False))
    results = workflow / "results" / SHARED
    targets = [f"results/{SHARED}/{p}" for p in ("teacher/seed.jsonl", *PROMPTS)]
    snakemake(workflow, *targets, "--cores", "2", "--configfile", str(cfg))
    return results


PROMPTS = ("prompts/candidates.jsonl", "prompts/synthesis.jsonl")


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
def runs(workflow, shared) -> dict[tuple[str, str], Path]:
    from speed.llm.knobs import ENV_VAR, knobs_env

    done = {}
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(workflow)  # the config's relative paths: the tiny teacher, the cache
        for shape, engine in STAGE_RUNS:
            c = hub_config(workflow, shape, engine)
            c["run"] = SHARED  # its tiny teacher
            mp.setenv(ENV_VAR, knobs_env(wf.knobs(c)))  # as the Snakefile sets them for jobs
            out = workflow / "stages" / f"{shape}-{engine}"
            start = time.perf_counter()
            run_stages(c, shared, out)
            print(f"stages {shape}-{engine}: {time.perf_counter() - start:.0f} s")
            done[(shape, engine)] = out
    return done


@pytest.mark.parametrize("shape, engine", STAGE_RUNS)
def test_trained_folders_reload_with_their_template(runs, shape, engine):
    check_trained_folders(runs[(shape, engine)])


@pytest.mark.parametrize("shape, engine", STAGE_RUNS)
def test_decoded_answers_are_what_training_writes(runs, shape, engine):
    check_decoded_answers(runs[(shape, engine)])


@pytest.mark.parametrize("shape, engine", STAGE_RUNS)
def test_the_stages_had_work(runs, shape, engine):
    check_stages_had_work(runs[(shape, engine)])


def test_seed_targets_are_in_decoder_form(shared):
    check_seed_targets(shared)
