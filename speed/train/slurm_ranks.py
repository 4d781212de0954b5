"""Ranks across the nodes of a SLURM allocation: one `srun` job step, one task per rank.

A training job whose allocation spans several nodes (the profile gives the rule `nodes: N`)
starts its ranks with one `srun` from the job itself, spread evenly over the nodes, the way
`torchrun` would start them on one node. The allocation is read from `scontrol`, not from the
environment: the executor plugin starts the job with SLURM's task variables stripped (and
inside a one-task step of its own), so only SLURM_JOB_ID is certain to be there. For the same
reason the step is started with those variables stripped again, and with `--overlap`: the
plugin's own step, which runs this job, holds CPUs and GPUs of the first node.

The rendezvous is on the first node (rank 0 runs there, `--distribution=block`), at the address
SLURM itself reaches that node by (NodeAddr). Every node must see the same working directory,
as a SLURM cluster's workflow directory always is: the pickled call and rank 0's result pass
through it.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
from dataclasses import dataclass

# What the nested srun may inherit: the job's identity and where SLURM's config is. Task
# geometry (SLURM_NTASKS, SLURM_CPUS_PER_TASK, ...) of the step this job runs in would
# override the new step's options.
_KEEP = {"SLURM_JOB_ID", "SLURM_JOBID", "SLURM_CONF", "SLURM_CLUSTER_NAME"}


@dataclass(frozen=True)
class Allocation:
    job_id: str
    nodes: tuple[str, ...]  # in SLURM's order: rank 0 runs on the first
    cpus: int  # CPUs of the job over all its nodes
    here: str  # the node this process runs on

    def master_addr(self) -> str:
        """How the other nodes reach the first one: its NodeAddr (its name when unset)."""
        return _fields("node", self.nodes[0]).get("NodeAddr") or self.nodes[0]


def _scontrol(*args: str) -> str:
    return subprocess.run(
        ["scontrol", *args], capture_output=True, text=True, timeout=60, check=True
    ).stdout


def _fields(kind: str, name: str) -> dict[str, str]:
    return dict(re.findall(r"(\S+?)=(\S*)", _scontrol("-o", "show", kind, name)))


@functools.cache
def allocation() -> Allocation | None:
    """The SLURM allocation this process runs in (None outside one, or without scontrol)."""
    job_id = os.environ.get("SLURM_JOB_ID")
    if not job_id or shutil.which("scontrol") is None:
        return None
    try:
        job = _fields("job", job_id)
    except subprocess.CalledProcessError as e:
        raise RuntimeError(
            f"SLURM_JOB_ID={job_id} is set but `scontrol show job {job_id}` fails "
            f"({e.stderr.strip()}): unset it when this is no SLURM job"
        ) from e
    nodes = tuple(_scontrol("show", "hostnames", job["NodeList"]).split())
    here = os.environ.get("SLURMD_NODENAME") or nodes[0]
    return Allocation(job_id, nodes, int(job["NumCPUs"]), here)


def srun_command(alloc: Allocation, processes: int, argv: list[str]) -> list[str]:
    """`srun` starting `argv` as `processes` tasks, the same number on every node of `alloc`,
    each with an equal share of the job's CPUs; one failing task ends the step."""
    per_node = processes // len(alloc.nodes)
    cpus = max(1, alloc.cpus // processes)
    return [
        "srun",
        "--overlap",
        f"--nodes={len(alloc.nodes)}",
        f"--ntasks={processes}",
        f"--ntasks-per-node={per_node}",
        f"--cpus-per-task={cpus}",
        "--distribution=block",
        "--kill-on-bad-exit=1",
        *argv,
    ]


def step_env(env: dict[str, str]) -> dict[str, str]:
    """`env` without the SLURM/srun variables of the step this job runs in."""
    return {
        k: v
        for k, v in env.items()
        if k in _KEEP or not k.startswith(("SLURM_", "SRUN_", "SBATCH_"))
    }


def rank_from_task(env: dict[str, str]) -> dict[str, str]:
    """RANK and LOCAL_RANK of an srun task, from SLURM's task ids (what torch.distributed and
    accelerate read); nothing when the launcher set them itself."""
    if "RANK" in env or "SLURM_PROCID" not in env:
        return {}
    return {"RANK": env["SLURM_PROCID"], "LOCAL_RANK": env["SLURM_LOCALID"]}
