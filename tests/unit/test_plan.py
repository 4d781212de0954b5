"""speed-plan: the plan of a config from the config alone, and the budget check on it."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from speed.plan import check_budget, load_config, make_plan

ROOT = Path(__file__).resolve().parents[2]
PLAN = str(Path(sys.executable).with_name("speed-plan"))
# The teacher tokens the paper reports for its own run (25K seeds, 10K judgments and revisions).
PAPER_TOKENS = {"seed": 10e6, "judge": 12e6, "revise": 10e6}


def test_paper_config_shows_the_papers_plan_fast():
    start = time.perf_counter()
    out = subprocess.run(
        [PLAN, str(ROOT / "config/paper.yaml"), "--json"],
        capture_output=True,
        text=True,
        check=True,
    )
    elapsed = time.perf_counter() - start
    plan = json.loads(out.stdout)
    stages = plan["stages"]
    assert (stages["seed"]["calls"], stages["judge"]["calls"], stages["revise"]["calls"]) == (
        25_000,
        10_000,
        10_000,
    )
    assert plan["comparison"]["speed_teacher_calls"] == 45_000
    assert plan["synthesis"]["raw_examples"] == 1_150_000
    per_family = plan["synthesis"]["per_family"]
    matching = per_family["s2s"] + per_family["p2p"]
    # 7:7:7:2 (classification : STS : retrieval : matching)
    assert [per_family["classification"], per_family["sts"], per_family["retrieval"], matching] == [
        350_000,
        350_000,
        350_000,
        100_000,
    ]
    # The token estimates are as close to the paper's as the plan says they are: seed and
    # revise within +-25% (measured +18% and +9%), judge over (measured +75%, see below).
    error = plan["assumptions"]["token_error"]
    assert (error["stages"], error["relative"], error["judge_over_by_up_to"]) == (
        ["seed", "revise"],
        0.25,
        1.0,
    )
    for stage in error["stages"]:
        ratio = stages[stage]["tokens"] / PAPER_TOKENS[stage]
        assert abs(ratio - 1) <= error["relative"], (stage, ratio)
    judge = stages["judge"]["tokens"] / PAPER_TOKENS["judge"]
    assert 1 + error["relative"] < judge <= 1 + error["judge_over_by_up_to"], judge
    assert stages["seed"]["usd"] > 0 and set(stages) >= {"brainstorm", "seed", "judge", "revise"}
    assert plan["jobs"]["synth_raw"] == plan["shards"] == 64
    print(f"speed-plan config/paper.yaml: {elapsed:.2f} s")  # the issue asks for < 10 s


def test_the_judge_estimate_is_over_by_the_candidates_it_counts():
    """Every judge prompt counts all k candidates at full length: the estimate grows by the same
    amount per candidate, and at about 2 candidates it is within +-25% of the paper's 12M."""
    config = load_config(ROOT / "config/paper.yaml")
    assert config["candidates"]["k"] == 5
    judge = {}
    for k in range(1, 6):
        config["candidates"]["k"] = k
        judge[k] = make_plan(config)["stages"]["judge"]["tokens"]
    per_candidate = judge[2] - judge[1]
    assert per_candidate > 0
    for k in range(2, 6):
        assert judge[k] - judge[k - 1] == pytest.approx(per_candidate, abs=2), k
    assert abs(judge[2] / PAPER_TOKENS["judge"] - 1) <= 0.25
    assert judge[5] / PAPER_TOKENS["judge"] - 1 > 0.25  # k = 5: over, as the plan says


def test_text_output_names_every_stage():
    out = subprocess.run(
        [PLAN, str(ROOT / "config/paper.yaml")], capture_output=True, text=True, check=True
    ).stdout
    for word in ("brainstorm", "seed", "judge", "revise", "45,000", "1,150,000", "GPU jobs"):
        assert word in out
    assert (
        "token estimates: \u00b125% of the paper's reported tokens (seed, revise); "
        "judge up to 2x over" in out
    )


def test_a_broken_config_is_refused_with_the_key(tmp_path):
    cfg = yaml.safe_load((ROOT / "config/config.yaml").read_text())
    cfg["prompts"]["n"]["seed"] = "many"
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    out = subprocess.run([PLAN, str(path)], capture_output=True, text=True)
    assert out.returncode == 2 and "many" in out.stderr


@pytest.mark.parametrize("name", ["config.yaml", "quickstart.yaml", "paper.yaml"])
def test_every_shipped_config_plans(name):
    plan = make_plan(load_config(ROOT / "config" / name))
    assert plan["total"]["calls"] == sum(s["calls"] for s in plan["stages"].values())
    assert plan["stages"]["brainstorm"]["calls"] % 4 == 0


def test_teacher_only_and_variants_change_the_plan():
    cfg = load_config(ROOT / "config/config.yaml")
    base = make_plan(cfg)
    assert "teacher_only" not in base["stages"]
    cfg["corpus"]["variants"] = ["speed", "no_dpo", "teacher_only"]
    plan = make_plan(cfg)
    assert plan["stages"]["teacher_only"]["calls"] == cfg["prompts"]["n"]["teacher_only"]
    assert plan["synthesis"]["generators"] == ["junior", "senior"]
    assert plan["jobs"]["synth_raw"] == 2 * cfg["synthesis"]["shards"]


def test_budget_check():
    plan = make_plan(load_config(ROOT / "config/config.yaml"))
    calls = plan["total"]["calls"]
    assert check_budget(plan, None) == []
    assert check_budget(plan, {"max_calls": calls, "max_tokens": None, "max_usd": None}) == []
    [problem] = check_budget(plan, {"max_calls": calls - 1})
    assert "max_calls" in problem and f"{calls:,}" in problem


def test_batch_api_discounts_the_plan_and_reaches_the_backend(tmp_path, monkeypatch):
    from speed.llm.factory import make_backend
    from speed.llm.openai_batch import OpenAIBatchBackend
    from speed.workflow import teacher_spec

    config = load_config(ROOT / "config/paper.yaml")
    assert config["teacher"]["openai"]["batch"]["enabled"] is False  # the schema's default
    sync = make_plan(config)
    config["teacher"]["openai"]["batch"]["enabled"] = True
    batch = make_plan(config)
    assert batch["total"]["calls"] == sync["total"]["calls"]
    assert batch["total"]["usd"] == pytest.approx(sync["total"]["usd"] * 0.5, rel=1e-3)
    assert batch["teacher"]["batch_api"] and not sync["teacher"]["batch_api"]

    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    spec = teacher_spec(config)
    assert spec["options"]["batch"]["state_dir"] == ".cache/speed/openai-batches"
    backend = make_backend(spec)
    assert isinstance(backend, OpenAIBatchBackend)
    assert (
        backend.identity
        == make_backend(teacher_spec(load_config(ROOT / "config/paper.yaml"))).identity
    )


@pytest.mark.parametrize(
    ("name", "jobs"), [("config.yaml", 6), ("quickstart.yaml", 32), ("paper.yaml", 280)]
)
def test_evaluation_is_one_job_per_model_and_task(name, jobs):
    """The base, every variant and every scaling point, each on every task."""
    config = load_config(ROOT / "config" / name)
    models = 1 + len(config["corpus"]["variants"]) + len(config["scaling"]["fractions"])
    assert make_plan(config)["jobs"]["evaluate"] == models * len(config["evaluation"]["tasks"])
    assert make_plan(config)["jobs"]["evaluate"] == jobs


def test_evaluation_task_keys_and_resources():
    from speed.workflow import check_eval_resources, eval_resources, eval_task_key, eval_tasks

    assert eval_task_key("mteb:SICK-R") == "SICK-R"
    assert eval_task_key("heldout:SyntheticSTS") == "SyntheticSTS"
    assert eval_task_key("local:data/AmazonCounterfactualClassification/en") == (
        "AmazonCounterfactualClassification-en"
    )
    assert eval_task_key("local:data/nq") == "nq"
    config = load_config(ROOT / "config/paper.yaml")
    assert list(eval_tasks(config))[:2] == [
        "AmazonCounterfactualClassification",
        "AmazonPolarityClassification",
    ]
    gpu = config["resources"]["gpu"]
    assert eval_resources(config, "MSMARCO") == {"mem_mb": 192000, "runtime": 2880, "gpu": 1}
    assert eval_resources(config, "STS12") == {
        "mem_mb": gpu["mem_mb"], "runtime": gpu["runtime"], "gpu": 1
    }  # fmt: skip
    check_eval_resources(config)
    config["evaluation"]["resources"]["MSMARCOO"] = {"runtime": 1}
    with pytest.raises(ValueError, match="MSMARCOO"):
        check_eval_resources(config)
    config["evaluation"]["tasks"].append("local:elsewhere/STS12")  # named as mteb:STS12 is
    with pytest.raises(ValueError, match="as another task is"):
        eval_tasks(config)
