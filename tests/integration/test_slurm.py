"""The SLURM profile on a real SLURM cluster on localhost (.ci/slurm/start-slurm.sh): node `<host>`
with 2 fake GPUs, and partition `multinode` of two more nodes with one fake GPU each.

Part of the tiny DAG (tiny models, topics, brainstorm, seed prompts, teacher seed examples,
junior SFT) runs through `--workflow-profile profiles/slurm` with the GPU rules asking for two
GPUs, and again locally; the deterministic outputs must agree byte for byte. The junior, given
two GPUs, is one submission with one task that sees both devices and trains on two ranks
(`processes: auto`; gloo on this CPU, as the fake GPUs are no CUDA devices). A copy of that run
then retrains the junior across the two nodes of `multinode`, as a profile asks for it
(profiles/README.md, "Jobs across nodes"): one rank per node, the same losses.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT, copy_workflow, snakemake

pytestmark = pytest.mark.slow

START = ROOT / ".ci" / "slurm" / "start-slurm.sh"
RUN = "results/tiny"
TARGETS = [f"{RUN}/teacher/seed.jsonl", f"{RUN}/models/junior"]
# Small enough for a few minutes on 2 CPUs: one thread per job, so two jobs run at once on the
# 2-CPU node as they do locally with --cores 2; memory well under the CI node's.
SMALL = {
    "topics": {"n": 4},
    "prompts": {"n": {"seed": 8}},
    "junior": {"epochs": 1},
    "resources": {
        "default": {"mem_mb": 1000},
        "llm": {"threads": 1, "mem_mb": 3000},
        "gpu": {"threads": 1, "mem_mb": 3000},
    },
}
# torch sizes its thread pool from the CPUs it may use: 1 in a 1-CPU SLURM job, all of them
# locally. Float reductions (and so sampled tokens) can depend on it: same count in both runs.
THREADS_ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
# Training/generator rules ask for both fake GPUs, and a CPU per rank.
GPU = {"resources": {"gpu": {"gpu": 2, "threads": 2}}}
RULES = {"tiny_tokenizer", "tiny_llm", "topics", "brainstorm", "prompts", "seed", "junior"}
# Seeded outputs: equal across runs (the teacher samples per-row seeded, on CPU, with the same
# batches and thread count in both runs).
DETERMINISTIC = [
    "topics.jsonl",
    *(f"tasks/{f}.jsonl" for f in ("retrieval", "classification", "s2s", "p2p")),
    "prompts/seed.jsonl",
    "teacher/seed.jsonl",
]


def _cluster_up() -> bool:
    if shutil.which("sinfo") is None:
        return False
    try:
        states = subprocess.run(
            ["sinfo", "-h", "-N", "-o", "%T"], capture_output=True, text=True, timeout=20
        ).stdout.split()
    except (OSError, subprocess.SubprocessError):
        return False
    return any(s.rstrip("*") in ("idle", "mixed", "allocated", "completing") for s in states)


@pytest.fixture(scope="module")
def slurm_cluster() -> None:
    in_ci = os.environ.get("CI", "").lower() in ("1", "true", "yes")
    if not _cluster_up():
        if os.geteuid() != 0:
            msg = "no SLURM cluster up and not root to start one (.ci/slurm/start-slurm.sh)"
            if in_ci:
                pytest.fail(msg)
            pytest.skip(msg)
        proc = subprocess.run(
            ["bash", str(START)], capture_output=True, text=True, timeout=900, check=False
        )
        assert proc.returncode == 0, f"start-slurm.sh failed:\n{proc.stdout}\n{proc.stderr}"
    gres = subprocess.run(
        ["sinfo", "-h", "-o", "%G"], capture_output=True, text=True, check=True
    ).stdout
    assert "gpu" in gres, f"the cluster advertises no GPU: {gres!r}"


def _workflow(path: Path, *overrides: dict) -> tuple[Path, list[str]]:
    wf = copy_workflow(path)
    names = []
    for i, override in enumerate(overrides):
        (wf / f"override{i}.yaml").write_text(yaml.safe_dump(override))
        names.append(f"override{i}.yaml")
    return wf, names


def _slurm_jobs(wf: Path) -> dict[str, list[str]]:
    """rule -> SLURM job ids, from the plugin's per-job logs (`rule_<rule>/.../<jobid>.log`)."""
    jobs: dict[str, list[str]] = {}
    for log in (wf / ".snakemake" / "slurm_logs").rglob("*.log"):
        rule = next(p for p in log.relative_to(wf).parts if p.startswith("rule_"))[5:]
        jobs.setdefault(rule, []).append(log.stem)
    return jobs


def _job_info(job_id: str) -> dict[str, str]:
    out = subprocess.run(
        ["scontrol", "-o", "show", "job", job_id], capture_output=True, text=True, check=True
    ).stdout
    return dict(re.findall(r"(\w+)=(\S*)", out))


def _on_slurm(wf: Path, profile: str, *args: str) -> None:
    snakemake(
        wf,
        *args,
        "--workflow-profile",
        profile,
        "--slurm-init-seconds-before-status-checks",
        "1",
        "--seconds-between-status-checks",
        "1",
        "--slurm-keep-successful-logs",
        env=THREADS_ENV,
    )


@pytest.fixture(scope="module")
def cluster_run(slurm_cluster, tmp_path_factory) -> tuple[Path, list[str]]:
    """The targets run through the SLURM profile (one run shared by this module's tests)."""
    cluster, cluster_cfg = _workflow(tmp_path_factory.mktemp("slurm") / "wf", SMALL, GPU)
    _on_slurm(cluster, "profiles/slurm", *TARGETS, "--configfile", *cluster_cfg)
    return cluster, cluster_cfg


def test_slurm_profile_runs_the_dag_on_the_cluster(cluster_run, tmp_path):
    cluster, _ = cluster_run

    # Every job went through SLURM and completed there, in this workflow's directory.
    jobs = _slurm_jobs(cluster)
    assert set(jobs) == RULES
    assert len(jobs["brainstorm"]) == 4 and len(jobs["tiny_llm"]) == 2
    info = {rule: [_job_info(j) for j in ids] for rule, ids in jobs.items()}
    for rule, records in info.items():
        for rec in records:
            assert rec["JobState"] == "COMPLETED", (rule, rec)
            assert Path(rec["WorkDir"]).resolve() == cluster.resolve()

    # The GPU rule asked SLURM for two GPUs in one submission of one task (not one task per
    # GPU, the executor plugin's `tasks` pitfall), saw both and trained on two ranks; the
    # other rules asked for no GPU.
    (junior,) = info["junior"]
    assert "gpu:2" in junior.get("TresPerJob", "") + junior.get("TresPerNode", "")
    assert junior["NumTasks"] == "1", junior
    for rule in RULES - {"junior"}:
        for rec in info[rule]:
            assert "gpu" not in rec.get("TresPerJob", "") + rec.get("TresPerNode", ""), rule
    junior_log = (cluster / RUN / "logs" / "junior.log").read_text()
    assert "keeping CUDA_VISIBLE_DEVICES=0,1 set by SLURM" in junior_log
    assert "training on 2 processes" in junior_log
    assert " rank0/2 " in junior_log and " rank1/2 " in junior_log
    metrics = json.loads((cluster / RUN / "models" / "junior" / "metrics.json").read_text())
    assert metrics["world_size"] == 2

    # The same targets locally (default profile, no GPU): the seeded outputs are identical.
    local, local_cfg = _workflow(tmp_path / "local", SMALL)
    snakemake(local, TARGETS[0], "--cores", "2", "--configfile", *local_cfg, env=THREADS_ENV)
    for name in DETERMINISTIC:
        a, b = cluster / RUN / name, local / RUN / name
        assert a.read_bytes() == b.read_bytes(), f"{name} differs between SLURM and local runs"


# What a user's profile adds for a training rule spanning nodes (profiles/README.md): GPUs per
# node by gres, as the plugin turns `gpu` into one job-wide --gpus that its own one-node step
# then asks for.
ACROSS_NODES = {"junior": {"nodes": 2, "gpu": 0, "gres": "gpu:1", "slurm_partition": "multinode"}}


def test_a_profile_asking_for_two_nodes_trains_on_both(cluster_run, tmp_path):
    first, cluster_cfg = cluster_run
    wf = tmp_path / "wf"
    shutil.copytree(first, wf, symlinks=True)  # the same upstream outputs, up to date
    shutil.rmtree(wf / ".snakemake" / "slurm_logs")
    profile = yaml.safe_load((ROOT / "profiles" / "slurm" / "config.yaml").read_text())
    profile["set-resources"] = ACROSS_NODES
    (wf / "profiles" / "nodes").mkdir()
    (wf / "profiles" / "nodes" / "config.yaml").write_text(yaml.safe_dump(profile))
    _on_slurm(
        wf, "profiles/nodes", TARGETS[1], "--forcerun", "junior", "--configfile", *cluster_cfg
    )

    # One submission over both nodes; rank 0 on the first, rank 1 on the second.
    (job_id,) = _slurm_jobs(wf)["junior"]
    job = _job_info(job_id)
    assert job["JobState"] == "COMPLETED" and job["NumNodes"] == "2", job
    nodes = subprocess.run(
        ["sinfo", "-h", "-N", "-p", "multinode", "-o", "%N"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert len(nodes) == 2, nodes
    log = (wf / RUN / "logs" / "junior.log").read_text()
    assert f"training on 2 processes, 1 on each of the nodes {nodes[0]},{nodes[1]}" in log
    assert f" rank0/2 speed.train.distributed: rank 0 of 2 on {nodes[0]} " in log
    assert f" rank1/2 speed.train.distributed: rank 1 of 2 on {nodes[1]} " in log

    # The same training as two ranks on one node: the same global batches, the same losses.
    one_node = json.loads((first / RUN / "models" / "junior" / "metrics.json").read_text())
    two_nodes = json.loads((wf / RUN / "models" / "junior" / "metrics.json").read_text())
    assert two_nodes["world_size"] == 2
    losses = [[h["loss"] for h in m["log_history"] if "loss" in h] for m in (one_node, two_nodes)]
    assert len(losses[0]) == len(losses[1]) > 0
    assert losses[1] == pytest.approx(losses[0], rel=1e-3)
