"""Content identities of model folders: call-cache keys, checkpoint keys, mteb revisions.

A folder's identity hashes the relative paths and full SHA-256 digests of its counted files and
nothing else (no sampling, no sizes or times, no absolute path): a moved or copied folder keeps
it, and a change to any byte of a counted file changes it. Counted is every file except logs
(`*.log`), `metrics.json`, the model card (`README.md` at the folder's root: it describes the
model without changing its outputs, so rewording a card keeps every cache key), paths containing
"checkpoint", hidden files and folders (`.snakemake_timestamp`, `hf download`'s `.cache/`, temp
files) and the manifest itself.

Hashing 16 GB of weights takes 10 s or more (SHA-256 runs at about 1.3 GB/s per core; see
benchmarks/fingerprint.py), so the digests are kept in a manifest, `speed_digest.json` at the
folder's root. The job that saves a model writes it (`write_digest`); `fingerprint` rewrites
it, where the folder is writable, whenever it had to hash something.

What is trusted: a manifest entry is used without reading its file when the file still has the
recorded size, mtime_ns and ctime_ns, and that ctime is older than the manifest's clock (the
filesystem's time, read off the manifest's temp file, before hashing began). Every write,
rename, chmod or utime sets a file's ctime to the current time and nothing short of setting the
system clock back resets it, so a file rewritten and then given its old size and mtime (`touch
-d`, `os.utime`, `rsync -t`) is hashed again. The clock condition covers coarse timestamps (a
change within the same tick as the recorded ctime; git's "racily clean" entries). An added or
removed file changes the counted set. A copy (`cp -r`, `rsync -a`, `shutil.copytree`) has new
ctimes: its files are hashed once, to the same identity. Not covered: writes to the raw block
device, a clock set back, filesystems without a real ctime (Windows reports creation time).

A hub id that is no local folder is keyed by the commit its `main` ref names in the local
Hugging Face cache (HF_HUB_CACHE, else HF_HOME/hub, else ~/.cache/huggingface/hub, read at each
call), and by its name alone when it is not cached there.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MANIFEST = "speed_digest.json"
CARD = "README.md"  # the model card (speed.train.cards)
_VERSION = 1
_STATS = ("size", "mtime_ns", "ctime_ns")
_CLOCK_WAIT_S = 3.0  # longest wait for the filesystem clock to pass the newest ctime
_THREADS = min(4, os.cpu_count() or 1)  # hashlib releases the GIL: shards hash in parallel


def _counted(rel: str) -> bool:
    if rel in (MANIFEST, CARD) or any(part.startswith(".") for part in rel.split("/")):
        return False
    return not (rel.endswith((".log", "metrics.json")) or "checkpoint" in rel)


def _files(folder: Path) -> list[str]:
    rels = (q.relative_to(folder).as_posix() for q in folder.rglob("*") if q.is_file())
    return sorted(rel for rel in rels if _counted(rel))


def _stats(st: os.stat_result) -> dict[str, int]:
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "ctime_ns": st.st_ctime_ns}


def _hash_file(path: Path) -> dict[str, Any]:
    """Full SHA-256 of a file with its stats, which must be the same before and after the read."""
    for _ in range(3):
        before = _stats(path.stat())
        with open(path, "rb") as f:
            digest = hashlib.file_digest(f, "sha256").hexdigest()
        if _stats(path.stat()) == before:
            return {**before, "sha256": digest}
    raise RuntimeError(f"{path} kept changing while it was hashed")


def _identity(digests: dict[str, str]) -> str:
    h = hashlib.sha256()
    for rel in sorted(digests):  # names hold no NUL and digests are fixed-length: unambiguous
        h.update(f"{rel}\0{digests[rel]}\n".encode())
    return h.hexdigest()[:16]


def _read_manifest(folder: Path) -> dict[str, Any]:
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError):
        return {}
    ok = isinstance(manifest, dict) and manifest.get("version") == _VERSION
    return manifest if ok and isinstance(manifest.get("files"), dict) else {}


def _trusted(entry: Any, st: os.stat_result, clock: int) -> bool:
    if not isinstance(entry, dict) or not isinstance(entry.get("sha256"), str):
        return False
    return {k: entry.get(k) for k in _STATS} == _stats(st) and st.st_ctime_ns < clock


@dataclass
class _Probe:
    """The manifest's temp file; its ctime is the filesystem's clock before hashing begins."""

    fd: int
    path: str
    clock: int


def _probe(folder: Path, newest_ctime: int) -> _Probe | None:
    """None where the folder is read-only. Waits (a tick, on a fresh save) until the clock is
    past every counted file's ctime, so the entries about to be hashed are trusted next time."""
    try:
        fd, path = tempfile.mkstemp(prefix=f".{MANIFEST}.", suffix=".tmp", dir=folder)
    except OSError:
        return None
    deadline = time.monotonic() + _CLOCK_WAIT_S
    while os.fstat(fd).st_ctime_ns <= newest_ctime and time.monotonic() < deadline:
        time.sleep(0.002)
        os.utime(fd)
    return _Probe(fd, path, os.fstat(fd).st_ctime_ns)


def _commit(probe: _Probe, folder: Path, entries: dict[str, dict[str, Any]]) -> None:
    manifest = {"version": _VERSION, "clock_ns": probe.clock, "files": entries}
    with open(probe.fd, "w", closefd=False) as f:
        json.dump(manifest, f, indent=1, sort_keys=True)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(probe.path, folder / MANIFEST)


def _rehash(
    folder: Path, stats: dict[str, os.stat_result], reused: dict[str, Any], required: bool
) -> dict[str, str]:
    """Hash the files not in `reused`; write the manifest where the folder allows it."""
    probe = _probe(folder, max((st.st_ctime_ns for st in stats.values()), default=0))
    if probe is None and required:
        raise PermissionError(f"cannot write {folder / MANIFEST}")
    try:
        todo = [rel for rel in stats if rel not in reused]
        with ThreadPoolExecutor(_THREADS) as pool:
            hashed = dict(zip(todo, pool.map(_hash_file, (folder / r for r in todo)), strict=True))
        entries = {rel: reused.get(rel) or hashed[rel] for rel in stats}
        if probe is not None:
            _commit(probe, folder, entries)
    finally:
        if probe is not None:
            os.close(probe.fd)
            Path(probe.path).unlink(missing_ok=True)
    return {rel: e["sha256"] for rel, e in entries.items()}


def _folder_digests(folder: Path, write: bool = False) -> dict[str, str]:
    """rel path -> SHA-256 of every counted file, from the manifest where it can be trusted."""
    manifest = _read_manifest(folder)
    entries, clock = manifest.get("files", {}), manifest.get("clock_ns", 0)
    stats = {rel: (folder / rel).stat() for rel in _files(folder)}
    reused = {r: entries[r] for r, st in stats.items() if _trusted(entries.get(r), st, clock)}
    if not write and len(reused) == len(stats) == len(entries):
        return {rel: e["sha256"] for rel, e in reused.items()}
    return _rehash(folder, stats, reused, required=write)


def write_digest(folder: str | Path) -> str:
    """Write the manifest of a folder just saved (after its last counted file); its identity."""
    return _identity(_folder_digests(Path(folder), write=True))


def hub_cache() -> Path:
    """The Hugging Face hub cache as huggingface_hub finds it, from the environment now."""
    env = os.environ
    cache = env.get("HF_HUB_CACHE") or env.get("HUGGINGFACE_HUB_CACHE")
    if cache:
        return Path(cache).expanduser()
    xdg = Path(env.get("XDG_CACHE_HOME") or "~/.cache") / "huggingface"
    return Path(env.get("HF_HOME") or xdg).expanduser() / "hub"


def hub_revision(repo_id: str, revision: str = "main") -> str | None:
    """The commit `revision` of a model resolves to in the local hub cache; None if not there."""
    repo = hub_cache() / f"models--{repo_id.replace('/', '--')}"
    try:
        commit = (repo / "refs" / revision).read_text().strip()
    except OSError:
        commit = revision if re.fullmatch(r"[0-9a-f]{40}", revision) else ""
    return commit if commit and (repo / "snapshots" / commit).is_dir() else None


def fingerprint(path: str | Path | None) -> str | None:
    """16 hex digits identifying a model folder or file by content (see the module docstring),
    or a hub id by the cached commit it resolves to."""
    if path is None:
        return None
    p = Path(path)
    if not p.exists():
        commit = hub_revision(str(path))
        key = f"hub:{path}@{commit}" if commit else f"hub:{path}"
        return hashlib.sha256(key.encode()).hexdigest()[:16]
    if p.is_file():
        return _identity({p.name: _hash_file(p)["sha256"]})
    return _identity(_folder_digests(p))
