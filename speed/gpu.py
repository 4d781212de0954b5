"""GPU pinning for local multi-GPU runs.

Snakemake counts GPUs (`--resources gpu=N`) but does not say which device a job gets, so two
concurrent GPU jobs would both land on device 0. A GPU job therefore claims N free devices
itself: one lock file per device in a runtime folder, taken with `fcntl.flock`, held for the
life of the process. The kernel drops a flock when its holder exits, so a crashed or killed job
frees its devices by itself; nothing is ever cleaned up by hand.

Call `claim_gpus(n)` first thing in a job script, before torch or vLLM are imported: CUDA reads
CUDA_VISIBLE_DEVICES once, at initialisation.

- n == 0: nothing is set (a CPU job), except under SLURM.
- Under SLURM (SLURM_JOB_ID set) or when CUDA_VISIBLE_DEVICES is already set (a scheduler or the
  user chose): what is set is kept. Under SLURM the devices it gave the job are returned even
  for n == 0: a profile may ask for GPUs per node by `gres` with the rule's `gpu` at 0 (a job
  spanning nodes, profiles/README.md).
- Otherwise devices come from SPEED_GPU_COUNT (tests, or to restrict a run to the first K
  devices) or `nvidia-smi -L`. Lock files live in SPEED_GPU_LOCK_DIR (default
  `$XDG_RUNTIME_DIR/speed-gpus` or `<tempdir>/speed-gpus-<uid>`), shared by every workflow of the
  user on the machine.

On a shared machine the temp dir is writable by everyone, so the lock folder is private: created
0700, and refused (LockDirError, naming it) when it is a symlink, not a directory, owned by
another user or writable by group or others. Lock files are opened relative to that folder with
O_NOFOLLOW: a symlink (or anything but a regular file) planted where a lock would go fails the
claim with LockDirError and nothing is written through it.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import random
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

log = logging.getLogger(__name__)

_HELD: list[int] = []  # fds of the locks this process holds (closed only at exit)


def device_count() -> int:
    """GPUs on this machine: SPEED_GPU_COUNT if set, else `nvidia-smi -L` (0 without it)."""
    override = os.environ.get("SPEED_GPU_COUNT")
    if override is not None and override.strip():
        return int(override)
    if shutil.which("nvidia-smi") is None:
        return 0
    try:
        out = subprocess.run(
            ["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30, check=True
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return 0
    return sum(1 for line in out.splitlines() if line.startswith("GPU "))


class LockDirError(RuntimeError):
    """The lock folder or a lock file is not safe to use (a symlink, someone else's, shared)."""


def lock_dir() -> Path:
    if os.environ.get("SPEED_GPU_LOCK_DIR"):
        return Path(os.environ["SPEED_GPU_LOCK_DIR"])
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime and os.path.isdir(runtime):
        return Path(runtime) / "speed-gpus"  # per user and 0700 by the XDG spec
    return Path(tempfile.gettempdir()) / f"speed-gpus-{os.getuid()}"


def _open_lock_dir(folder: Path) -> int:
    """An fd of `folder`, created 0700 if missing, after checking nobody else can plant files
    there. Lock files are opened relative to this fd, so the folder cannot be swapped after the
    check."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileExistsError):  # whatever is there is checked below
        os.mkdir(folder, 0o700)
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(folder, flags)
    except OSError as e:  # ELOOP: a symlink; ENOTDIR: a file
        raise LockDirError(
            f"GPU lock folder {folder} is not a plain directory ({e.strerror}): remove it "
            "or set SPEED_GPU_LOCK_DIR to a private folder"
        ) from e
    st = os.fstat(fd)
    problem = None
    if st.st_uid != os.getuid():
        problem = f"owned by uid {st.st_uid}, not {os.getuid()}"
    elif st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        problem = f"writable by group or others (mode {stat.S_IMODE(st.st_mode):o}; chmod 700 it)"
    if problem:
        os.close(fd)
        raise LockDirError(f"GPU lock folder {folder} is {problem}: refusing to use it")
    return fd


def _try_lock(dir_fd: int, name: str, folder: Path) -> int | None:
    flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
    try:
        fd = os.open(name, flags, 0o600, dir_fd=dir_fd)
    except OSError as e:
        if e.errno != errno.ELOOP:
            raise
        # A planted symlink: following it would truncate whatever it points to.
        raise LockDirError(f"GPU lock {folder / name} is a symlink: remove it") from e
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1:  # a FIFO, a device, a hard link
        os.close(fd)
        raise LockDirError(f"GPU lock {folder / name} is not a plain file: remove it")
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        os.close(fd)
        if e.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
            return None
        raise
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    return fd


def _try_claim(n: int, count: int, dir_fd: int, folder: Path) -> list[int] | None:
    """All-or-nothing: n free devices, or none held (no hold-and-wait, so no deadlock)."""
    got: list[tuple[int, int]] = []
    try:
        for device in range(count):
            fd = _try_lock(dir_fd, f"gpu{device}.lock", folder)
            if fd is not None:
                got.append((device, fd))
                if len(got) == n:
                    _HELD.extend(fd for _, fd in got)
                    return [device for device, _ in got]
    except LockDirError:
        for _, fd in got:  # a bad lock file fails the claim: hold nothing
            os.close(fd)
        raise
    for _, fd in got:
        os.close(fd)
    return None


def _wait_for(
    n: int, count: int, dir_fd: int, folder: Path, timeout: float | None, poll: float
) -> list[int]:
    start = time.monotonic()
    waiting_logged = False
    while (devices := _try_claim(n, count, dir_fd, folder)) is None:
        if timeout is not None and time.monotonic() - start > timeout:
            raise TimeoutError(f"no {n} free GPUs of {count} after {timeout} s ({folder})")
        if not waiting_logged:
            log.info("GPUs: waiting for %d free device(s) of %d (locks in %s)", n, count, folder)
            waiting_logged = True
        time.sleep(poll * (0.5 + random.random()))
    return devices


def claim_gpus(n: int | None, timeout: float | None = None, poll: float = 1.0) -> list[str]:
    """Pin this process to `n` GPUs via CUDA_VISIBLE_DEVICES; returns the visible device ids.

    Blocks until n devices are free (at most `timeout` seconds, None: forever). Safe to call
    once per process, before any CUDA library is imported.
    """
    n = int(n or 0)
    slurm = bool(os.environ.get("SLURM_JOB_ID"))
    if n <= 0 and not (slurm and os.environ.get("CUDA_VISIBLE_DEVICES")):
        return []
    if slurm or "CUDA_VISIBLE_DEVICES" in os.environ:
        visible = os.environ.get("CUDA_VISIBLE_DEVICES", "")
        set_by = "SLURM" if slurm else "the environment"
        log.info("GPUs: keeping CUDA_VISIBLE_DEVICES=%s set by %s", visible, set_by)
        return [d for d in visible.split(",") if d]
    for mod in ("torch", "vllm"):
        if mod in sys.modules:
            log.warning("GPUs: %s was imported before claim_gpus; pinning may not apply", mod)
    count = device_count()
    if count == 0:
        log.warning("GPUs: %d requested but none found; running on CPU", n)
        return []
    if n > count:
        raise RuntimeError(f"{n} GPUs requested but this machine has {count}")
    folder = lock_dir()
    dir_fd = _open_lock_dir(folder)
    try:
        devices = _wait_for(n, count, dir_fd, folder, timeout, poll)
    finally:
        os.close(dir_fd)  # the lock files' fds stay open: they hold the claim
    visible = ",".join(map(str, devices))
    # nvidia-smi numbers devices by PCI bus; make CUDA use the same order.
    os.environ.setdefault("CUDA_DEVICE_ORDER", "PCI_BUS_ID")
    os.environ["CUDA_VISIBLE_DEVICES"] = visible
    log.info("GPUs: claimed CUDA_VISIBLE_DEVICES=%s (locks in %s)", visible, folder)
    return [str(d) for d in devices]
