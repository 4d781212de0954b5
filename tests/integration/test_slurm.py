"""The SLURM profile on a real one-node SLURM cluster (.ci/slurm/start-slurm.sh, 2 fake GPUs).

Part of the tiny DAG (tiny models, topics, brainstorm, seed prompts, teacher seed examples,
junior SFT) runs through `--workflow-profile profiles/slurm` with the GPU rules asking for two
GPUs, and again locally; the deterministic outputs must agree byte for byte. The junior, given
two GPUs, is one submission with one task that sees both devices and trains on two ranks
(`processes: auto`; gloo on this CPU, as the fake GPUs are no CUDA devices).
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


def test_slurm_profile_runs_the_dag_on_the_cluster(slurm_cluster, tmp_path):
    cluster, cluster_cfg = _workflow(tmp_path / "slurm", SMALL, GPU)
    snakemake(
        cluster,
        *TARGETS,
        "--workflow-profile",
        "profiles/slurm",
        "--configfile",
        *cluster_cfg,
        "--slurm-init-seconds-before-status-checks",
        "1",
        "--seconds-between-status-checks",
        "1",
        "--slurm-keep-successful-logs",
        env=THREADS_ENV,
    )

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
