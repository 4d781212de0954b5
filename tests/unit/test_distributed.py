"""Data-parallel training on CPU (gloo, 2 ranks): the batch split, the launcher, SFT, DPO and the
embedding loss against one process on the same global batches, and a killed 2-rank job that
resumes from its checkpoint."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
from transformers import TrainerCallback

from speed.llm.knobs import ENV_VAR
from speed.train import slurm_ranks
from speed.train.common import find_resume
from speed.train.distributed import (
    job_processes,
    resolve_processes,
    run_ranks,
    split_batch,
    split_contrastive_batch,
)
from speed.train.dpo import train_dpo
from speed.train.embedding import train_embedding
from speed.train.sft import train_sft
from tests.unit.test_embedding_train import write_corpus
from tests.unit.test_train import EXAMPLES, PAIRS, start_until_checkpoint

# Two ranks on the same global batches as one process: the per-step losses agree up to the
# float rounding of a different reduction order. No dropout anywhere: each rank draws its own
# dropout masks, one process another.
RTOL = 1e-3
SPEC = {"lora_dropout": 0.0, "max_length": 256, "learning_rate": 5e-3}


def test_the_global_batch_is_split_accumulation_first():
    assert split_batch(4, 4, 1) == (4, 4)
    assert split_batch(4, 4, 2) == (4, 2)
    assert split_batch(4, 4, 4) == (4, 1)
    assert split_batch(4, 4, 8) == (2, 1)  # then the per-device batch
    assert split_batch(4, 3, 2) == (3, 2)  # 12 = 2 ranks x 3 x 2: never above 4 per device
    with pytest.raises(ValueError, match=r"global batch 12 .* does not divide over 5"):
        split_batch(4, 3, 5)
    assert split_contrastive_batch(2048, 8) == 256
    with pytest.raises(ValueError, match="batch_size 10 does not divide over 4"):
        split_contrastive_batch(10, 4)


def test_processes_follow_the_gpus_unless_set(monkeypatch):
    assert resolve_processes("auto", 0) == 1 and resolve_processes("auto", 4) == 4
    assert resolve_processes(2, 0) == 2  # gloo ranks on CPU
    with pytest.raises(ValueError, match="3 ranks need 3 GPUs; the job has 2"):
        resolve_processes(3, 2)
    with pytest.raises(ValueError, match="'auto' or an integer"):
        resolve_processes(0, 1)
    monkeypatch.delenv(ENV_VAR, raising=False)
    assert job_processes("junior", 2) == 2
    monkeypatch.setenv(ENV_VAR, json.dumps({"training": {"junior": 1, "embedding": "auto"}}))
    assert job_processes("junior", 2) == 1 and job_processes("embedding", 3) == 3


def test_processes_spread_evenly_over_the_nodes():
    assert resolve_processes("auto", 4, nodes=2) == 8 and resolve_processes("auto", 0, 3) == 3
    assert resolve_processes(4, 4, nodes=2) == 4
    with pytest.raises(ValueError, match="3 ranks do not spread evenly over the job's 2 nodes"):
        resolve_processes(3, 4, nodes=2)
    with pytest.raises(ValueError, match="9 ranks need 9 GPUs; the job has 8"):
        resolve_processes(9, 4, nodes=2)


def test_an_srun_step_of_ranks_has_its_own_geometry():
    alloc = slurm_ranks.Allocation("42", ("gpu-a", "gpu-b"), cpus=32, here="gpu-a")
    cmd = slurm_ranks.srun_command(alloc, 8, ["python", "-m", "x"])
    assert cmd[:1] == ["srun"] and cmd[-3:] == ["python", "-m", "x"]
    assert {"--overlap", "--nodes=2", "--ntasks=8", "--ntasks-per-node=4"} <= set(cmd)
    assert "--cpus-per-task=4" in cmd and "--kill-on-bad-exit=1" in cmd
    # The step this job runs in must not impose its task geometry on the new one.
    env = {
        "SLURM_JOB_ID": "42",
        "SLURM_NTASKS": "1",
        "SLURM_CPUS_PER_TASK": "2",
        "SRUN_CPUS_PER_TASK": "2",
        "SLURM_CONF": "/etc/slurm/slurm.conf",
        "HOME": "/root",
    }
    assert slurm_ranks.step_env(env) == {
        "SLURM_JOB_ID": "42",
        "SLURM_CONF": "/etc/slurm/slurm.conf",
        "HOME": "/root",
    }
    # An srun task's rank is SLURM's task id; a local rank's is what the launcher set.
    task = {"SLURM_PROCID": "5", "SLURM_LOCALID": "1"}
    assert slurm_ranks.rank_from_task(task) == {"RANK": "5", "LOCAL_RANK": "1"}
    assert slurm_ranks.rank_from_task({**task, "RANK": "0"}) == {}


def rank_or_fail(fail_rank: int) -> int:
    if int(os.environ["RANK"]) == fail_rank:
        raise ValueError(f"rank {fail_rank} broke")
    time.sleep(300)  # ended by the launcher once the other rank failed
    return 0


def rank_info() -> dict:
    return {k: os.environ[k] for k in ("RANK", "WORLD_SIZE", "MASTER_ADDR")}


def test_a_failing_rank_fails_the_call_and_ends_the_others(capfd):
    assert run_ranks(2, rank_info) == {"RANK": "0", "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1"}
    started = time.monotonic()
    with pytest.raises(RuntimeError, match="training rank 1 of 2 failed"):
        run_ranks(2, rank_or_fail, 1)
    assert time.monotonic() - started < 60  # rank 0 did not sleep its 300 s
    assert "ValueError: rank 1 broke" in capfd.readouterr().err  # the traceback, in the log


def losses(metrics: dict) -> list[float]:
    return [h["loss"] for h in metrics["log_history"] if "loss" in h]


def assert_same_curve(one: dict, two: dict, rtol: float) -> None:
    assert one["world_size"] == 1 and two["world_size"] == 2
    a, b = losses(one), losses(two)
    assert len(a) == len(b) == one["global_step"]
    assert b == pytest.approx(a, rel=rtol), (a, b)


@pytest.mark.slow
def test_sft_on_two_ranks_follows_one_process(tiny_models, tmp_path):
    """One process, batch 4 x accumulation 2 = the 2 ranks' 4 x 1 each: the same 8 examples
    per step."""
    spec = {**SPEC, "per_device_batch_size": 4, "gradient_accumulation": 2, "max_steps": 3}
    args = (tiny_models["base"], EXAMPLES)
    one = train_sft(*args, tmp_path / "one", tmp_path / "ckpt1", spec)
    two = run_ranks(2, train_sft, *args, tmp_path / "two", tmp_path / "ckpt2", spec)
    assert_same_curve(one, two, RTOL)
    saved = json.loads((tmp_path / "two" / "metrics.json").read_text())
    assert saved["world_size"] == 2 and saved["global_step"] == 3


@pytest.mark.slow
def test_dpo_on_two_ranks_follows_one_process(tiny_models, tmp_path):
    spec = {**SPEC, "per_device_batch_size": 2, "gradient_accumulation": 2, "max_steps": 2}
    args = (tiny_models["base"], PAIRS)
    one = train_dpo(*args, tmp_path / "one", tmp_path / "ckpt1", 0.1, spec)
    two = run_ranks(2, train_dpo, *args, tmp_path / "two", tmp_path / "ckpt2", 0.1, spec)
    assert_same_curve(one, two, RTOL)
    assert two["beta"] == 0.1


@pytest.mark.slow
def test_the_embedding_loss_sees_every_ranks_negatives(tiny_models, tmp_path):
    """Triplet and pair batches mixed: each step's batch comes from one dataset on both ranks
    (speed.train.step_sampler), and the loss over the gathered candidates of the 2 ranks equals
    the one-process loss over the whole batch. Without the gather each query would see half of
    its negatives and the loss would drop by about log 2."""
    corpus = write_corpus(tmp_path / "corpus.parquet", n=64)
    params = {
        "kind": "decoder",
        "batch_size": 16,
        "mini_batch_size": 8,
        "max_steps": 4,
        "warmup_steps": 1,
        "max_length": 48,
        "learning_rate": 1e-3,
        "lora_dropout": 0.0,
    }
    base = tiny_models["base"]
    one = train_embedding(str(corpus), base, tmp_path / "one", tmp_path / "ckpt1", **params)
    two = run_ranks(
        2, train_embedding, str(corpus), base, tmp_path / "two", tmp_path / "ckpt2", **params
    )
    assert_same_curve(one, two, RTOL)


KILL_SCRIPT = """
import json, sys
from speed.train.distributed import run_ranks
from speed.train.sft import train_sft
from tests.unit.test_distributed import SlowSteps

base, out, ckpt, data, slow = sys.argv[1:6]
examples = [json.loads(line) for line in open(data)]
spec = {"per_device_batch_size": 4, "gradient_accumulation": 2, "max_length": 256,
        "max_steps": 8, "save_steps": 2, "learning_rate": 5e-3}
run_ranks(2, train_sft, base, examples, out, ckpt, spec,
          callbacks=[SlowSteps()] if slow == "slow" else None)
"""


class SlowSteps(TrainerCallback):
    """Time for the test to kill the job between checkpoints."""

    def on_step_end(self, args, state, control, **kwargs) -> None:
        time.sleep(1.0)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.slow
def test_a_killed_two_rank_job_resumes_from_its_checkpoint(tiny_models, tmp_path):
    """SIGKILL of the job process alone (not its group): its ranks die with it, leave a
    checkpoint, and the rerun resumes there on 2 ranks."""
    script = tmp_path / "kill_run.py"
    script.write_text(textwrap.dedent(KILL_SCRIPT))
    data = tmp_path / "examples.jsonl"
    data.write_text("".join(json.dumps(e) + "\n" for e in EXAMPLES))
    out, ckpt = tmp_path / "junior", tmp_path / "ckpt"
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": os.getcwd()}

    def cmd(mode: str) -> list[str]:
        args = [tiny_models["base"], str(out), str(ckpt), str(data), mode]
        return [sys.executable, str(script), *args]

    proc = start_until_checkpoint(cmd("slow"), ckpt, tmp_path / "first.log", env)
    ranks = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True)
    ranks = [int(p) for p in ranks.stdout.split()]
    assert len(ranks) == 2
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + 30
    while any(alive(p) for p in ranks) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not any(alive(p) for p in ranks), "a rank outlived its job"
    assert not out.exists()
    step = int(find_resume(next(ckpt.iterdir())).name.split("-")[1])
    assert step < 8
    second = subprocess.run(cmd("fast"), capture_output=True, text=True, env=env, timeout=600)
    assert second.returncode == 0, second.stdout + second.stderr
    resumed = f"resuming from checkpoint-{step} at step {step}"
    assert any("rank0/2" in line and resumed in line for line in second.stderr.splitlines())
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["resumed_from_step"] == step and metrics["global_step"] == 8
    assert metrics["world_size"] == 2
    assert [h["step"] for h in metrics["log_history"] if "loss" in h] == list(range(1, 9))
