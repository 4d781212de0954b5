"""Data-parallel training: one job, several processes (ranks), one device each.

A training job given N GPUs runs N ranks by default (`processes: auto`; 1 on CPU), launched by
`run_ranks` inside the job, the way `torchrun` would: fresh Python processes with RANK,
LOCAL_RANK, WORLD_SIZE and a loopback rendezvous, which the Trainer (accelerate) reads to join
one torch.distributed group: NCCL on GPUs, gloo on CPU. Ranks are fresh interpreters, not
forks: a parent that has imported CUDA or torch cannot fork safely. A job whose SLURM
allocation spans several nodes runs as many ranks on each of them, started by one `srun`
(speed.train.slurm_ranks).

The global batch stays what the config says: `split_batch` divides it over the ranks, taking
the gradient accumulation first (per-device memory stays as configured), and refuses, with the
numbers, a batch that does not divide. Only rank 0 writes outputs; the Trainer saves
checkpoints from rank 0 and every rank resumes from them. A rank that fails ends the others and
fails the job; each rank logs into the rule's log, its lines prefixed with its rank.

How many processes a job runs changes no output beyond float rounding (the same global batches
in the same order), so `processes` is a knob (speed.llm.knobs): changing it reruns nothing.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from speed.llm.knobs import knobs_for
from speed.train import slurm_ranks

KNOBS_KIND = "training"  # SPEED_KNOBS entry: training section -> processes setting
_POLL_S = 0.5


def resolve_processes(setting: int | str | None, gpus: int, nodes: int = 1) -> int:
    """The rank count of a job on `nodes` nodes given `gpus` devices on each: `auto` (or None)
    is one per GPU (one per node on CPU); a number must spread evenly over the nodes, and on a
    GPU job not exceed its GPUs."""
    if setting in (None, "auto"):
        return max(gpus, 1) * nodes
    if not isinstance(setting, int) or isinstance(setting, bool) or setting < 1:
        raise ValueError(f"processes must be 'auto' or an integer >= 1, not {setting!r}")
    if gpus and setting > gpus * nodes:
        raise ValueError(
            f"processes: {setting} ranks need {setting} GPUs; the job has {gpus * nodes}"
        )
    if setting % nodes:
        raise ValueError(
            f"processes: {setting} ranks do not spread evenly over the job's {nodes} nodes"
        )
    return setting


def job_processes(section: str, gpus: int) -> int:
    """The rank count for training section `section` (junior, senior, revisor, embedding) from
    the knobs the workflow announced, for a job with `gpus` devices on each of its nodes; 1
    outside the workflow on CPU."""
    alloc = slurm_ranks.allocation()
    nodes = len(alloc.nodes) if alloc else 1
    return resolve_processes(knobs_for(KNOBS_KIND).get(section), gpus, nodes)


def world() -> tuple[int, int]:
    """(rank, world size) of this process, from the launcher's environment."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def is_main_rank() -> bool:
    return world()[0] == 0


def split_batch(per_device: int, accumulation: int, processes: int) -> tuple[int, int]:
    """(per-device batch, accumulation) for `processes` ranks keeping the global batch
    `per_device * accumulation`: accumulation is divided first, then the per-device batch
    (the largest that divides what is left, so a rank never holds more than configured)."""
    total = per_device * accumulation
    if total % processes:
        raise ValueError(
            f"the global batch {total} (per_device_batch_size {per_device} x "
            f"gradient_accumulation {accumulation}) does not divide over {processes} processes: "
            f"choose sizes whose product is a multiple of {processes}, or another `processes`"
        )
    per_rank = total // processes
    device = next(d for d in range(min(per_device, per_rank), 0, -1) if per_rank % d == 0)
    return device, per_rank // device


def split_contrastive_batch(batch_size: int, processes: int) -> int:
    """The per-device share of the contrastive batch (in-batch negatives are gathered across
    ranks, so every query still sees the whole global batch)."""
    if batch_size % processes:
        raise ValueError(
            f"embedding.batch_size {batch_size} does not divide over {processes} processes: "
            f"choose a multiple of {processes}, or another `processes`"
        )
    return batch_size // processes


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]


def _group_env(processes: int, per_node: int, addr: str, port: int) -> dict[str, str]:
    """What every rank of the group reads, beside its own RANK and LOCAL_RANK."""
    return dict(
        WORLD_SIZE=str(processes),
        LOCAL_WORLD_SIZE=str(per_node),
        MASTER_ADDR=addr,
        MASTER_PORT=str(port),
        # What this interpreter imports from (a Snakemake script's path, a checkout).
        PYTHONPATH=os.pathsep.join(p for p in sys.path if p),
    )


def run_ranks(processes: int, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """`fn(*args, **kwargs)` on `processes` ranks; returns rank 0's result. One process: called
    here. The call is pickled (a module-level function, plain arguments); a logger argument
    travels by name, and each rank routes its output into the file behind stderr here (the
    rule's log). Raises when a rank fails, after ending the others."""
    if processes == 1:
        return fn(*args, **kwargs)
    alloc = slurm_ranks.allocation()
    nodes = alloc.nodes if alloc and len(alloc.nodes) > 1 else ()
    # Ranks on other nodes read the call from a folder they see too: the job's working
    # directory (a cluster's workflow directory is shared); one node's ranks use a temp dir.
    with tempfile.TemporaryDirectory(prefix=".speed-ranks-", dir="." if nodes else None) as tmp:
        call, result = Path(tmp).resolve() / "call.pkl", Path(tmp).resolve() / "result.pkl"
        call.write_bytes(pickle.dumps((fn, args, kwargs)))
        argv = [sys.executable, "-m", __name__, str(call), str(result)]
        if nodes:
            _run_srun(alloc, processes, argv)
        else:
            _run_local(processes, argv)
        return pickle.loads(result.read_bytes())


def _run_local(processes: int, argv: list[str]) -> None:
    port = _free_port()
    logging.getLogger(__name__).info(
        "training on %d processes (rendezvous 127.0.0.1:%d)", processes, port
    )
    sys.stderr.flush()
    group = _group_env(processes, processes, "127.0.0.1", port)
    ranks = [
        subprocess.Popen(
            argv,
            env={**os.environ, **group, "RANK": str(rank), "LOCAL_RANK": str(rank)},
            stdout=sys.stderr,  # the rule's log, as the parent's own output is
            preexec_fn=_die_with_parent,
        )
        for rank in range(processes)
    ]
    _wait(ranks, lambda i, code: f"training rank {i} of {processes} failed (exit code {code})")


def _run_srun(alloc: slurm_ranks.Allocation, processes: int, argv: list[str]) -> None:
    """One srun step over the allocation's nodes; rank 0, on the first node, hosts the
    rendezvous (a free port when that is this node, as it is for the plugin's jobs)."""
    addr = alloc.master_addr()
    port = _free_port() if alloc.here == alloc.nodes[0] else 29500 + int(alloc.job_id) % 20000
    per_node = processes // len(alloc.nodes)
    logging.getLogger(__name__).info(
        "training on %d processes, %d on each of the nodes %s (rendezvous %s:%d)",
        *(processes, per_node, ",".join(alloc.nodes), addr, port),
    )
    sys.stderr.flush()
    env = {**slurm_ranks.step_env(dict(os.environ)), **_group_env(processes, per_node, addr, port)}
    step = subprocess.Popen(
        slurm_ranks.srun_command(alloc, processes, argv),
        env=env,
        stdout=sys.stderr,
        preexec_fn=_die_with_parent,
    )
    _wait(
        [step],
        lambda _, code: f"the srun step of {processes} training ranks failed (exit code {code})",
    )


def _die_with_parent() -> None:
    """In a rank before it starts: SIGKILL when the job process dies, even by SIGKILL itself
    (Linux), so no rank trains on, orphaned, into the checkpoints of the job's next try."""
    import ctypes
    import signal

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _wait(ranks: list[subprocess.Popen], failure: Callable[[int, int], str]) -> None:
    """Until every process has exited 0; the first failure ends the others and raises with
    `failure(index, exit code)`."""
    try:
        while True:
            codes = [p.poll() for p in ranks]
            failed = [(r, c) for r, c in enumerate(codes) if c not in (None, 0)]
            if failed:
                raise RuntimeError(f"{failure(*failed[0])}; its traceback is in this log above")
            if all(c == 0 for c in codes):
                return
            time.sleep(_POLL_S)
    finally:
        for p in ranks:
            if p.poll() is None:
                p.terminate()
        for p in ranks:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()


def _rank_main(call: str, result: str) -> None:
    os.environ.update(slurm_ranks.rank_from_task(dict(os.environ)))  # an srun task
    rank, size = world()
    handler = logging.StreamHandler(sys.stderr)
    fmt = f"%(asctime)s %(levelname)s rank{rank}/{size} %(name)s: %(message)s"
    handler.setFormatter(logging.Formatter(fmt))
    logging.basicConfig(level=logging.INFO, handlers=[handler], force=True)
    logging.captureWarnings(True)
    node = os.environ.get("SLURMD_NODENAME") or socket.gethostname()
    logging.getLogger("speed.train.distributed").info(  # __name__ is __main__ here
        "rank %d of %d on %s (local rank %s)", rank, size, node, os.environ["LOCAL_RANK"]
    )
    fn, args, kwargs = pickle.loads(Path(call).read_bytes())
    out = fn(*args, **kwargs)
    if rank == 0:
        Path(result).write_bytes(pickle.dumps(out))


if __name__ == "__main__":
    _rank_main(*sys.argv[1:3])
