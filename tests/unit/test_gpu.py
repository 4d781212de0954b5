"""The local GPU allocator: per-device flock claims, SLURM passthrough, crash release."""

from __future__ import annotations

import json
import os
import re
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from speed import gpu

ROOT = Path(__file__).resolve().parents[2]

# A job: claim, record the devices and the hold interval, hold, exit.
JOB = """
import json, os, sys, time
from speed.gpu import claim_gpus
n, hold, out = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
devices = claim_gpus(n, poll=0.05)
start = time.time()
print("claimed", flush=True)
time.sleep(hold)
with open(out, "w") as f:
    json.dump({"devices": devices, "env": os.environ.get("CUDA_VISIBLE_DEVICES"),
               "start": start, "end": time.time()}, f)
"""


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    for var in ("SLURM_JOB_ID", "CUDA_VISIBLE_DEVICES", "CUDA_DEVICE_ORDER"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("SPEED_GPU_LOCK_DIR", str(tmp_path / "locks"))
    monkeypatch.setattr(gpu, "_HELD", [])
    yield tmp_path
    for fd in gpu._HELD:  # release what this test's claims took
        os.close(fd)


def job_env(tmp_path: Path, count: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("SLURM_JOB_ID", "CUDA_VISIBLE_DEVICES")}
    env.update(SPEED_GPU_COUNT=str(count), SPEED_GPU_LOCK_DIR=str(tmp_path / "locks"))
    return env


def test_zero_gpus_sets_nothing(clean_env, monkeypatch):
    monkeypatch.setenv("SPEED_GPU_COUNT", "2")
    assert gpu.claim_gpus(0) == []
    assert gpu.claim_gpus(None) == []
    assert "CUDA_VISIBLE_DEVICES" not in os.environ


def test_slurm_allocation_is_kept(clean_env, monkeypatch):
    monkeypatch.setenv("SPEED_GPU_COUNT", "4")
    monkeypatch.setenv("SLURM_JOB_ID", "17")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3")
    assert gpu.claim_gpus(1) == ["3"]
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "3"
    assert not (clean_env / "locks").exists()  # no lock taken under a scheduler


def test_slurm_gres_devices_are_returned_for_a_zero_gpu_rule(clean_env, monkeypatch):
    # A job spanning nodes asks for its GPUs by `gres` with the rule's gpu at 0.
    monkeypatch.setenv("SLURM_JOB_ID", "17")
    assert gpu.claim_gpus(0) == []  # SLURM gave no device
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    assert gpu.claim_gpus(0) == ["0", "1"]


def test_preset_visible_devices_are_kept(clean_env, monkeypatch):
    monkeypatch.setenv("SPEED_GPU_COUNT", "4")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")
    assert gpu.claim_gpus(2) == ["2", "3"]


def test_claim_sets_visible_devices(clean_env, monkeypatch):
    monkeypatch.setenv("SPEED_GPU_COUNT", "3")
    assert gpu.claim_gpus(2) == ["0", "1"]
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "0,1"
    assert os.environ["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID"
    lock = clean_env / "locks" / "gpu0.lock"
    assert lock.read_text().strip() == str(os.getpid())


def test_more_than_the_machine_has_fails(clean_env, monkeypatch):
    monkeypatch.setenv("SPEED_GPU_COUNT", "2")
    with pytest.raises(RuntimeError, match="3 GPUs requested"):
        gpu.claim_gpus(3)


def test_no_gpu_machine_runs_on_cpu(clean_env, monkeypatch):
    monkeypatch.setenv("SPEED_GPU_COUNT", "0")
    assert gpu.claim_gpus(1) == []
    assert "CUDA_VISIBLE_DEVICES" not in os.environ


def test_device_count_from_nvidia_smi(monkeypatch, tmp_path):
    monkeypatch.delenv("SPEED_GPU_COUNT", raising=False)
    fake = tmp_path / "nvidia-smi"
    fake.write_text("#!/bin/sh\necho 'GPU 0: NVIDIA H100 (UUID: a)'\necho 'GPU 1: NVIDIA H100'\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    assert gpu.device_count() == 2


# --- shared machines: a private lock folder, locks never opened through a symlink ---------------


def planted(tmp_path: Path) -> tuple[Path, bytes, int]:
    """A file outside the lock folder with known content and an old mtime."""
    target = tmp_path / "outside.txt"
    target.write_bytes(b"precious\n")
    os.utime(target, ns=(1_000_000_000_000_000_000, 1_000_000_000_000_000_000))
    return target, target.read_bytes(), target.stat().st_mtime_ns


def claim_outcome(n: int) -> str:
    """The LockDirError a claim raises ('claimed' when it succeeds)."""
    try:
        gpu.claim_gpus(n, timeout=1)
    except gpu.LockDirError as e:
        return str(e)
    return "claimed"


def test_symlink_at_a_lock_path_is_never_followed(clean_env, monkeypatch):
    """A symlink where gpu1's lock goes fails the claim; the target is untouched and the lock
    already taken on gpu0 is let go (all-or-nothing)."""
    monkeypatch.setenv("SPEED_GPU_COUNT", "2")
    target, content, mtime = planted(clean_env)
    locks = clean_env / "locks"
    locks.mkdir(mode=0o700)
    (locks / "gpu1.lock").symlink_to(target)
    outcome = claim_outcome(2)
    assert target.read_bytes() == content and target.stat().st_mtime_ns == mtime
    assert "gpu1.lock is a symlink" in outcome
    assert (locks / "gpu1.lock").is_symlink()
    assert gpu._HELD == [] and "CUDA_VISIBLE_DEVICES" not in os.environ
    # A dangling symlink is not followed to create its target either.
    (locks / "gpu0.lock").unlink()  # the plain lock file the first claim made (and let go)
    (locks / "gpu0.lock").symlink_to(clean_env / "created-through-link")
    outcome = claim_outcome(1)
    assert not (clean_env / "created-through-link").exists()
    assert "gpu0.lock is a symlink" in outcome


def test_lock_folder_that_is_a_symlink_is_refused(clean_env, monkeypatch):
    monkeypatch.setenv("SPEED_GPU_COUNT", "1")
    elsewhere = clean_env / "elsewhere"
    elsewhere.mkdir(mode=0o700)
    (clean_env / "locks").symlink_to(elsewhere)
    with pytest.raises(gpu.LockDirError, match=r"locks is not a plain directory"):
        gpu.claim_gpus(1, timeout=1)
    assert list(elsewhere.iterdir()) == []


def test_lock_folder_writable_by_others_is_refused(clean_env, monkeypatch):
    monkeypatch.setenv("SPEED_GPU_COUNT", "1")
    locks = clean_env / "locks"
    locks.mkdir()
    locks.chmod(0o777)
    with pytest.raises(gpu.LockDirError, match=r"locks is writable by group or others"):
        gpu.claim_gpus(1, timeout=1)
    assert list(locks.iterdir()) == []


def test_lock_folder_of_another_user_is_refused(clean_env, monkeypatch):
    monkeypatch.setenv("SPEED_GPU_COUNT", "1")
    monkeypatch.setattr(gpu.os, "getuid", lambda: os.geteuid() + 1)
    with pytest.raises(gpu.LockDirError, match=r"locks is owned by uid"):
        gpu.claim_gpus(1, timeout=1)


@pytest.mark.parametrize("runtime", [True, False], ids=["xdg-runtime-dir", "tempdir"])
def test_default_lock_folder_is_private(clean_env, monkeypatch, runtime):
    monkeypatch.setenv("SPEED_GPU_COUNT", "1")
    monkeypatch.delenv("SPEED_GPU_LOCK_DIR")
    monkeypatch.setattr(gpu.tempfile, "tempdir", str(clean_env))
    (clean_env / "run").mkdir(mode=0o700)
    if runtime:
        monkeypatch.setenv("XDG_RUNTIME_DIR", str(clean_env / "run"))
        expected = clean_env / "run" / "speed-gpus"
    else:
        monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
        expected = clean_env / f"speed-gpus-{os.getuid()}"
    old = os.umask(0)  # the widest umask: the folder must still come out 0700
    try:
        assert gpu.claim_gpus(1) == ["0"]
    finally:
        os.umask(old)
    assert gpu.lock_dir() == expected
    assert expected.is_dir() and not expected.is_symlink()
    assert stat.S_IMODE(expected.stat().st_mode) == 0o700
    assert stat.S_IMODE((expected / "gpu0.lock").stat().st_mode) == 0o600


def test_concurrent_jobs_never_share_a_device(tmp_path):
    """4 jobs asking 1 GPU each on 2 devices: at most 2 hold at once, no device twice."""
    env = job_env(tmp_path, 2)
    outs = [tmp_path / f"job{i}.json" for i in range(4)]
    procs = [
        subprocess.Popen([sys.executable, "-c", JOB, "1", "0.6", str(o)], env=env) for o in outs
    ]
    assert [p.wait(timeout=60) for p in procs] == [0] * 4
    jobs = [json.loads(o.read_text()) for o in outs]
    for j in jobs:
        assert j["env"] == ",".join(j["devices"]) and len(j["devices"]) == 1
    for i, a in enumerate(jobs):
        overlapping = [b for b in jobs[i + 1 :] if b["start"] < a["end"] and a["start"] < b["end"]]
        assert all(b["devices"] != a["devices"] for b in overlapping)
    events = sorted([(j["start"], 1) for j in jobs] + [(j["end"], -1) for j in jobs])
    running = peak = 0
    for _, step in events:
        running += step
        peak = max(peak, running)
    assert peak == 2


def test_two_gpu_jobs_do_not_deadlock(tmp_path):
    """Jobs asking for 2 of 2 devices next to 1-device jobs all finish (all-or-nothing claims)."""
    env = job_env(tmp_path, 2)
    asks = [2, 1, 2, 1]
    outs = [tmp_path / f"job{i}.json" for i in range(len(asks))]
    procs = [
        subprocess.Popen([sys.executable, "-c", JOB, str(n), "0.3", str(o)], env=env)
        for n, o in zip(asks, outs, strict=True)
    ]
    assert [p.wait(timeout=60) for p in procs] == [0] * len(asks)
    for n, o in zip(asks, outs, strict=True):
        assert len(json.loads(o.read_text())["devices"]) == n


def test_killed_holder_releases_its_device(tmp_path):
    env = job_env(tmp_path, 1)
    holder = subprocess.Popen(
        [sys.executable, "-c", JOB, "1", "600", str(tmp_path / "holder.json")],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "claimed"
        waiter = subprocess.run(
            [sys.executable, "-c", "from speed.gpu import claim_gpus; claim_gpus(1, timeout=1)"],
            env=env,
            capture_output=True,
            text=True,
        )
        assert waiter.returncode != 0 and "TimeoutError" in waiter.stderr
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait(timeout=10)
        start = time.monotonic()
        after = subprocess.run(
            [sys.executable, "-c", JOB, "1", "0", str(tmp_path / "after.json")],
            env=env,
            timeout=30,
        )
        assert after.returncode == 0 and time.monotonic() - start < 20
        assert json.loads((tmp_path / "after.json").read_text())["devices"] == ["0"]
    finally:
        if holder.poll() is None:
            holder.kill()


GPU_SCRIPTS = [
    "train_junior",
    "train_senior",
    "train_revisor",
    "candidates",
    "synth_raw",
    "synth_revised",
    "brainstorm",
    "seed",
    "judge",
    "revise",
    "teacher_only",
    "smoke_teacher",
    "train_embedding",
    "evaluate",
]


@pytest.mark.parametrize("name", GPU_SCRIPTS)
def test_gpu_scripts_claim_before_any_cuda_library_loads(name):
    """Each model-running script claims its rule's GPUs, and nothing it imports before the
    claim loads torch, vLLM or transformers (CUDA reads CUDA_VISIBLE_DEVICES once)."""
    text = (ROOT / "scripts" / f"{name}.py").read_text()
    assert 'claim_gpus(sm.resources.get("gpu", 0))' in text
    before_claim = text.split("claim_gpus(sm.", 1)[0]
    modules = re.findall(r"^from (\S+) import", before_claim, re.M)
    modules += re.findall(r"^import (\S+)", before_claim, re.M)
    probe = (
        "import importlib, sys\n"
        f"for m in {modules!r}: importlib.import_module(m)\n"
        "print([m for m in ('torch', 'vllm', 'transformers') if m in sys.modules])"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=ROOT
    )
    assert out.stdout.strip() == "[]", f"{name} imports {out.stdout.strip()} before claiming"
