"""Data-parallel training: one job, several processes (ranks), one device each.

A training job given N GPUs runs N ranks by default (`processes: auto`; 1 on CPU), launched by
`run_ranks` inside the job, the way `torchrun` would: fresh Python processes with RANK,
LOCAL_RANK, WORLD_SIZE and a loopback rendezvous, which the Trainer (accelerate) reads to join
one torch.distributed group: NCCL on GPUs, gloo on CPU. Ranks are fresh interpreters, not
forks: a parent that has imported CUDA or torch cannot fork safely.

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

KNOBS_KIND = "training"  # SPEED_KNOBS entry: training section -> processes setting
_POLL_S = 0.5


def resolve_processes(setting: int | str | None, gpus: int) -> int:
    """The rank count of a job given `gpus` devices: `auto` (or None) is one per GPU (1 on CPU);
    a number is taken as is on CPU and must not exceed the GPUs on a GPU job."""
    if setting in (None, "auto"):
        return max(gpus, 1)
    if not isinstance(setting, int) or isinstance(setting, bool) or setting < 1:
        raise ValueError(f"processes must be 'auto' or an integer >= 1, not {setting!r}")
    if gpus and setting > gpus:
        raise ValueError(f"processes: {setting} ranks need {setting} GPUs; the job has {gpus}")
    return setting


def job_processes(section: str, gpus: int) -> int:
    """The rank count for training section `section` (junior, senior, revisor, embedding) from
    the knobs the workflow announced; 1 outside the workflow on CPU."""
    return resolve_processes(knobs_for(KNOBS_KIND).get(section), gpus)


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
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_env(rank: int, processes: int, port: int) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(processes),
        LOCAL_WORLD_SIZE=str(processes),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        # What this interpreter imports from (a Snakemake script's path, a checkout).
        PYTHONPATH=os.pathsep.join(p for p in sys.path if p),
    )
    return env


def run_ranks(processes: int, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """`fn(*args, **kwargs)` on `processes` ranks; returns rank 0's result. One process: called
    here. The call is pickled (a module-level function, plain arguments); a logger argument
    travels by name, and each rank routes its output into the file behind stderr here (the
    rule's log). Raises when a rank fails, after ending the others."""
    if processes == 1:
        return fn(*args, **kwargs)
    log = logging.getLogger(__name__)
    with tempfile.TemporaryDirectory(prefix="speed-ranks-") as tmp:
        call = Path(tmp) / "call.pkl"
        call.write_bytes(pickle.dumps((fn, args, kwargs)))
        port = _free_port()
        log.info("training on %d processes (rendezvous 127.0.0.1:%d)", processes, port)
        sys.stderr.flush()
        ranks = [
            subprocess.Popen(
                [sys.executable, "-m", __name__, str(call), str(Path(tmp) / "result.pkl")],
                env=_rank_env(rank, processes, port),
                stdout=sys.stderr,  # the rule's log, as the parent's own output is
                preexec_fn=_die_with_parent,
            )
            for rank in range(processes)
        ]
        _wait(ranks)
        return pickle.loads((Path(tmp) / "result.pkl").read_bytes())


def _die_with_parent() -> None:
    """In a rank before it starts: SIGKILL when the job process dies, even by SIGKILL itself
    (Linux), so no rank trains on, orphaned, into the checkpoints of the job's next try."""
    import ctypes
    import signal

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _wait(ranks: list[subprocess.Popen]) -> None:
    """Until every rank has exited 0; the first failure ends the others and raises."""
    try:
        while True:
            codes = [p.poll() for p in ranks]
            failed = [(r, c) for r, c in enumerate(codes) if c not in (None, 0)]
            if failed:
                rank, code = failed[0]
                raise RuntimeError(
                    f"training rank {rank} of {len(ranks)} failed (exit code {code}); "
                    "its traceback is in this log above"
                )
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
    rank, size = world()
    handler = logging.StreamHandler(sys.stderr)
    fmt = f"%(asctime)s %(levelname)s rank{rank}/{size} %(name)s: %(message)s"
    handler.setFormatter(logging.Formatter(fmt))
    logging.basicConfig(level=logging.INFO, handlers=[handler], force=True)
    logging.captureWarnings(True)
    fn, args, kwargs = pickle.loads(Path(call).read_bytes())
    out = fn(*args, **kwargs)
    if rank == 0:
        Path(result).write_bytes(pickle.dumps(out))


if __name__ == "__main__":
    _rank_main(*sys.argv[1:3])
