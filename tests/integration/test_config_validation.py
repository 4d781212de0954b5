"""Every kind of bad config is refused before any job runs, with the key in the message."""

import copy

import pytest
import yaml

from speed.io import read_jsonl
from tests.conftest import snakemake


def _with(config, path, value):
    cfg = copy.deepcopy(config)
    *parents, last = path
    node = cfg
    for p in parents:
        node = node[p]
    if value is KeyError:
        del node[last]
    else:
        node[last] = value
    return cfg


CASES = [
    ("unknown key", ("smoke", "requestz"), 3, "requestz"),
    ("unknown top-level key", ("seeed",), 3, "seeed"),
    ("wrong type", ("smoke", "requests"), "many", "requests"),
    ("missing required key", ("teacher", "price"), KeyError, "price"),
    ("bad enum", ("teacher", "backend"), "gpt", "backend"),
    ("bad model spec", ("models", "base"), {"tiny": {"hidden_size": 64}}, "num_layers"),
]


@pytest.mark.parametrize(("what", "path", "value", "key"), CASES, ids=[c[0] for c in CASES])
def test_bad_config_is_refused_naming_the_key(workflow, what, path, value, key):
    cfg_file = workflow / "config" / "config.yaml"
    config = yaml.safe_load(cfg_file.read_text())
    cfg_file.write_text(yaml.safe_dump(_with(config, path, value), sort_keys=False))
    proc = snakemake(workflow, "--cores", "1", check=False)
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr
    assert "Error validating config file" in out
    assert key in out
    assert not (workflow / "results").exists()


def test_default_config_is_valid(workflow):
    proc = snakemake(workflow, "-n", "--quiet")
    assert proc.returncode == 0


def test_a_budget_below_the_plan_stops_before_any_job(workflow):
    cfg_file = workflow / "config" / "config.yaml"
    config = yaml.safe_load(cfg_file.read_text())
    config["teacher"]["budget"]["max_calls"] = 10
    cfg_file.write_text(yaml.safe_dump(config, sort_keys=False))
    proc = snakemake(workflow, "--cores", "1", check=False)
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr
    assert "exceeds teacher.budget" in out and "teacher.budget.max_calls is 10" in out
    assert not (workflow / "results").exists()


def test_scaling_needs_its_variant_in_the_corpus_variants(workflow):
    cfg_file = workflow / "config" / "config.yaml"
    config = yaml.safe_load(cfg_file.read_text())
    config["scaling"]["variant"] = "no_dpo"
    cfg_file.write_text(yaml.safe_dump(config, sort_keys=False))
    proc = snakemake(workflow, "-n", check=False)
    assert proc.returncode != 0 and "scaling.variant no_dpo" in proc.stdout + proc.stderr


@pytest.mark.parametrize("name", ["paper", "quickstart"])
def test_shipped_configs_dry_run_with_the_plans_gpu_jobs(workflow, name):
    """`snakemake -n` under the slurm profile: the GPU rules with their resources, as many jobs
    per rule as speed-plan says."""
    from speed.plan import load_config, make_plan

    if name == "paper":  # the ODP dump is an input; its content does not matter to a dry run
        (workflow / "data" / "odp").mkdir(parents=True)
        (workflow / "data" / "odp" / "content.rdf.u8.gz").write_bytes(b"")
    proc = snakemake(
        workflow,
        "-n",
        "--configfile",
        f"config/{name}.yaml",
        "--workflow-profile",
        "profiles/slurm",
    )
    counts = {}
    for line in proc.stdout.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].isdigit():
            counts[parts[0]] = int(parts[1])
    config = load_config(workflow / "config" / f"{name}.yaml")
    for rule, n in make_plan(config)["jobs"].items():
        if rule != "total":
            assert counts.get(rule) == n, (rule, counts)
    assert "gpu=1" in proc.stdout
    # one evaluation job per (model, task), each with its task's resources
    models = 1 + len(config["corpus"]["variants"]) + len(config["scaling"]["fractions"])
    assert counts["evaluate"] == models * len(config["evaluation"]["tasks"])
    jobs = proc.stdout.split("\nrule ")
    for key, extra in config["evaluation"].get("resources", {}).items():
        [job] = [
            j for j in jobs if j.startswith("evaluate:") and f"variant=base, task={key}\n" in j
        ]
        assert f"runtime={extra['runtime']}" in job and f"mem_mb={extra['mem_mb']}" in job, job
    # the corpus is decontaminated against every evaluated mteb: task
    evaluated = [t for t in config["evaluation"]["tasks"] if t.startswith("mteb:")]
    assert counts.get("eval_texts", 0) == len(evaluated) > 0


@pytest.mark.slow
def test_a_run_over_budget_stops_and_keeps_what_it_paid(workflow):
    """A token budget the plan fits in, but with brainstorm calls whose worst case (max_tokens)
    is most of it: calls go one at a time while their worst case fits, then the job stops
    without overspending; a rerun with more budget pays only for the calls it had not made.

    The slack left beside one call's worst case (2,500 tokens) is about five real calls' cost
    (~500 tokens each), less one worst-case prompt, so the stop falls inside the one job."""
    import sqlite3

    from speed.llm.cache import CompletionCache
    from speed.plan import load_config, make_plan

    cfg_file = workflow / "config" / "config.yaml"
    config = yaml.safe_load(cfg_file.read_text())
    config["topics"]["n"] = 8
    cfg_file.write_text(yaml.safe_dump(config, sort_keys=False))
    limit = make_plan(load_config(cfg_file))["total"]["tokens"] + 1
    config["teacher"]["budget"]["max_tokens"] = limit
    config["brainstorm"]["max_tokens"] = limit - 2500  # the plan does not change with it
    cfg_file.write_text(yaml.safe_dump(config, sort_keys=False))
    target = "results/tiny/tasks/retrieval.jsonl"
    proc = snakemake(workflow, "--cores", "1", target, check=False)
    assert proc.returncode != 0
    logs = "".join(p.read_text() for p in (workflow / "results/tiny/logs").glob("brainstorm_*"))
    assert "BudgetExceeded" in logs and "raise teacher.budget and rerun" in logs
    spend = sqlite3.connect(workflow / ".cache/speed/spend.sqlite")
    assert spend.execute("SELECT tokens FROM spend").fetchone()[0] <= limit
    n_paid = len(CompletionCache(workflow / ".cache/speed/completions"))
    assert 0 < n_paid < 8

    config["teacher"]["budget"]["max_tokens"] = None
    cfg_file.write_text(yaml.safe_dump(config, sort_keys=False))
    snakemake(workflow, "--cores", "1", target)
    rerun = read_jsonl(workflow / "results/tiny/ledger/brainstorm_retrieval.jsonl")
    # the rerun paid exactly for the calls the stopped run had not made, and reused the rest
    assert sum(not r["cached"] for r in rerun) == 8 - n_paid
    assert sum(r["cached"] for r in rerun) == n_paid
