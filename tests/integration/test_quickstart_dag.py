"""config/quickstart.yaml itself, run by the DAG to eval/summary.csv and report/cost.json, with
its hub model replaced by a hub-shaped fixture (tests/hub_models.py), its generators on vLLM
and its teacher a real local vLLM OpenAI-compatible server that this module starts.

The test loads the shipped file and overrides only what an offline, tiny, CPU run must change;
every other key (family mix, LoRA and DPO settings, precision, max_tokens, corpus and
embedding settings, engine `vllm`, `response_format`, `strict_subset`, resources) is the
quickstart's. The overrides, and why:

- `models.qwen25_0_5b.hub`: the Qwen2.5-0.5B-shaped fixture folder instead of the hub id (no
  network). `embedding.base` stays `minilm`, the packaged all-MiniLM-L6-v2 the quickstart names.
- `teacher.openai.base_url`: the server this module starts on a free port. It serves a tiny
  random teacher under the quickstart's `teacher.model` name, with `--max-model-len 8192` and an
  API key in the quickstart's `api_key_env` (SPEED_TEACHER_KEY), as the quickstart's header
  says to start it, so `teacher.model` and `api_key_env` stay.
- Counts: `topics.n`, `prompts.n`, and `evaluation.heldout_fraction` (5% of 24 synthesis prompts
  holds out about one; a quarter gives both held-out tasks data).
- Field bounds: `brainstorm.max_task_chars`, `prompts.max_field_chars`, `judge.max_reason_chars`,
  `revise.max_reason_chars`. Random weights never end a string early, so each answer is as long
  as its bounds allow: the quickstart's (4000 chars a field) would cost minutes of CPU decoding
  per answer. max_tokens stay: answers end at their bounds, long before them.
- `judge.temperature`: 1.0 (the quickstart's is the paper's 0). A random-weight judge decoding
  greedily names the same candidate best and worst in every list (dropped as "best equals
  worst"), which leaves the senior no DPO pair; config/config.yaml's tiny judge samples too.
- `evaluation.tasks`: the held-out tasks stay; of the `mteb:` tasks, STSBenchmark as a `local:`
  task: its first 300 test pairs from the offline test sets (tests/eval_data.py; the module
  skips without them unless SPEED_EVAL_DATA_REQUIRED=1), in its folder layout. All 1379 pairs
  take a minute or more per variant on two CPU cores, and a score is all the DAG needs; the
  other sets are larger (SciFact, Banking77Classification) or not offline here.
- `synthesis.shards`: 1 (a count, like the prompt counts): each generation job took 15-20 s
  here, nearly all of it its vLLM engine's start; tests/integration/test_default_dag.py covers
  several shards.
- `backends.vllm.enforce_eager`: true. A knob that changes no output (speed/llm/knobs.py): on a
  CPU, torch.compile at each engine start costs more than it saves at this size.

The qwen2-on-vLLM checks of tests/integration/test_hub_generators.py run here, on this DAG's
generators (that module's DAG run stops at the teacher outputs its stage runs need).
"""

from __future__ import annotations

import json
import math
import re
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import polars as pl
import pytest
import yaml

from speed.io import read_jsonl
from tests.conftest import copy_workflow, snakemake
from tests.generator_checks import (
    check_decoded_answers,
    check_seed_targets,
    check_stages_had_work,
    check_trained_folders,
)
from tests.hub_models import build_hub_model
from tests.servers import free_port, serve, vllm_server_cmd

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
QUICKSTART = yaml.safe_load((ROOT / "config" / "quickstart.yaml").read_text())
KEY = "local-secret-for-the-test"
TEACHER_STAGES = ("brainstorm", "seed", "judge", "revise")
EVAL_SETS = ("STSBenchmark",)
EVAL_PAIRS = 300


def eval_subsets(eval_data: Path, root: Path) -> Path:
    """The first EVAL_PAIRS test pairs of each of EVAL_SETS, in the same layout and names."""
    for name in EVAL_SETS:
        lines = (eval_data / name / "test.jsonl").read_text().splitlines(keepends=True)
        (root / name).mkdir(parents=True)
        (root / name / "test.jsonl").write_text("".join(lines[:EVAL_PAIRS]))
    return root


def quickstart_config(base: Path, teacher_url: str, eval_data: Path) -> dict:
    """config/quickstart.yaml with the overrides of the module docstring, and no others;
    `eval_data` holds the evaluation subsets (eval_subsets)."""
    c = yaml.safe_load((ROOT / "config" / "quickstart.yaml").read_text())
    c["models"]["qwen25_0_5b"]["hub"] = str(base)
    c["teacher"]["openai"]["base_url"] = teacher_url
    c["topics"]["n"] = 2
    c["prompts"]["n"] = {"seed": 6, "candidates": 4, "synthesis": 24, "teacher_only": 1}
    c["evaluation"]["heldout_fraction"] = 0.25
    c["synthesis"]["shards"] = 1
    c["brainstorm"]["max_task_chars"] = 60
    c["prompts"]["max_field_chars"] = 30
    c["judge"]["max_reason_chars"] = 20
    c["judge"]["temperature"] = 1.0
    c["revise"]["max_reason_chars"] = 20
    heldout = [t for t in c["evaluation"]["tasks"] if t.startswith("heldout:")]
    local = [f"local:{eval_data / name}" for name in EVAL_SETS]
    assert all(f"mteb:{name}" in c["evaluation"]["tasks"] for name in EVAL_SETS)
    c["evaluation"]["tasks"] = heldout + local
    c["backends"]["vllm"]["enforce_eager"] = True
    return c


@pytest.fixture(scope="module")
def teacher(tmp_path_factory, tiny_models) -> Iterator[str]:
    """The base_url of a tiny random teacher behind vLLM's OpenAI-compatible server,
    started as config/quickstart.yaml's header says (served name, API key, 8192 tokens)."""
    from speed.models.tiny import build_llama

    root = tmp_path_factory.mktemp("teacher")
    model = root / "model"
    build_llama(model, tiny_models["tokenizer"], 128, 2, 4, seed=11, max_positions=8192)
    port, log = free_port(), root / "vllm.log"
    name = QUICKSTART["teacher"]["model"]
    cmd = vllm_server_cmd(str(model), port, served_name=name, api_key=KEY, max_model_len=8192)
    with serve(cmd, f"http://127.0.0.1:{port}/health", log, timeout_s=240):
        yield f"http://127.0.0.1:{port}/v1"


def served_requests(base_url: str) -> int:
    """Requests the server finished, from its Prometheus counter (summed over finish reasons)."""
    with urllib.request.urlopen(base_url.removesuffix("/v1") + "/metrics", timeout=10) as r:
        text = r.read().decode()
    counts = re.findall(r"^vllm:request_success_total\{[^}]*\} ([0-9.e+]+)$", text, re.M)
    assert counts, "no vllm:request_success_total in /metrics"
    return round(sum(float(c) for c in counts))


@pytest.fixture(scope="module")
def quickstart(eval_data, tmp_path_factory, teacher) -> dict:
    """The DAG run: its results folder and the requests the server answered during it."""
    url = teacher
    root = tmp_path_factory.mktemp("quickstart")
    base = build_hub_model("qwen2", root / "bases" / "qwen2")
    workflow = copy_workflow(root / "wf")
    cfg = workflow / "config" / "quickstart-offline.yaml"
    subsets = eval_subsets(eval_data, root / "eval-data")
    cfg.write_text(yaml.safe_dump(quickstart_config(base, url, subsets), sort_keys=False))
    before = served_requests(url)
    start = time.perf_counter()
    run = f"{QUICKSTART['results_dir']}/{QUICKSTART['run']}"
    targets = (f"{run}/eval/summary.csv", f"{run}/report/cost.json")
    snakemake(
        workflow, *targets, "--cores", "2", "--configfile", str(cfg),
        env={QUICKSTART["teacher"]["openai"]["api_key_env"]: KEY},
    )  # fmt: skip
    print(f"quickstart DAG: {time.perf_counter() - start:.0f} s")
    return {"out": workflow / run, "served": served_requests(url) - before}


def test_summary_has_every_variant_and_task(quickstart):
    summary = pl.read_csv(quickstart["out"] / "eval" / "summary.csv")
    tasks = {"SyntheticRetrieval", "SyntheticSTS", *EVAL_SETS}
    per_task = summary.filter(pl.col("task") != "average")
    assert per_task.height == 2 * len(tasks)
    for variant in ("base", "speed"):
        rows = per_task.filter(pl.col("variant") == variant)
        assert set(rows["task"]) == tasks, variant
    overall = summary.filter((pl.col("task") == "average") & (pl.col("category") == "all"))
    assert sorted(overall["variant"]) == ["base", "speed"]
    assert all(math.isfinite(s) and -100 <= s <= 100 for s in summary["score"])
    # The trained model is another model than its base.
    sts = per_task.filter(pl.col("task") == EVAL_SETS[0])
    assert sts["score"][0] != sts["score"][1]


def test_every_teacher_call_went_through_the_server(quickstart):
    out, ledger = quickstart["out"], []
    for path in sorted((out / "ledger").glob("*.jsonl")):
        ledger += read_jsonl(path)
    assert {r["stage"] for r in ledger} == set(TEACHER_STAGES)
    assert all(r["model"] == QUICKSTART["teacher"]["model"] for r in ledger)
    assert not any(r["cached"] for r in ledger)
    assert quickstart["served"] == len(ledger)  # the server counted each call, once
    cost = json.loads((out / "report" / "cost.json").read_text())
    for stage in TEACHER_STAGES:
        calls = sum(r["stage"] == stage for r in ledger)
        assert calls > 0 and cost["stages"][stage]["calls"] == calls, stage
        assert cost["stages"][stage]["completion_tokens"] > 0
    assert cost["total"]["usd"] == 0.0  # the quickstart's price: a local server is free
    assert not (out / "models" / "teacher").exists()  # no local teacher was built


def _truncated(stats: object) -> int:
    """Counts under any key that names truncation, anywhere in a stats file."""
    if isinstance(stats, dict):
        return sum(
            v if "truncated" in k and isinstance(v, int) else _truncated(v)
            for k, v in stats.items()
        )
    return sum(map(_truncated, stats)) if isinstance(stats, list) else 0


def test_no_teacher_answer_was_cut_off(quickstart):
    """The server decodes the full schema (teacher.openai.strict_subset: false): every field
    ends at its length bound, so no answer of the teacher stops at max_tokens."""
    out = quickstart["out"]
    paths = [*(out / "tasks").glob("*.stats.json"), out / "teacher" / "seed.stats.json"]
    paths += [out / "align" / "judgments.stats.json", out / "align" / "revisions.stats.json"]
    for path in paths:
        assert _truncated(json.loads(path.read_text())) == 0, path
    seed = json.loads((out / "teacher" / "seed.stats.json").read_text())
    assert seed["kept"] == seed["prompts"]


def test_trained_generators_reload_with_their_template(quickstart):
    check_trained_folders(quickstart["out"])


def test_trained_embedding_model_reloads(quickstart):
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(quickstart["out"] / "embedding" / "speed"))
    vectors = model.encode(["a query", "a document"], normalize_embeddings=True)
    assert vectors.shape[0] == 2 and math.isfinite(float(vectors.sum()))


def test_decoded_answers_are_what_training_writes(quickstart):
    check_decoded_answers(quickstart["out"])


def test_the_stages_had_work(quickstart):
    check_stages_had_work(quickstart["out"])
    check_seed_targets(quickstart["out"])
