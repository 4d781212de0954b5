"""Content fingerprints of model and adapter folders, for cache keys and mteb revisions."""

from __future__ import annotations

import hashlib
from pathlib import Path

_FULL_HASH_LIMIT = 64 * 2**20  # bytes; larger weight files are sampled at both ends
_SAMPLE = 8 * 2**20


def _file_digest(path: Path) -> str:
    h = hashlib.sha256()
    size = path.stat().st_size
    with open(path, "rb") as f:
        if size <= _FULL_HASH_LIMIT:
            for block in iter(lambda: f.read(2**20), b""):
                h.update(block)
        else:  # an 8B model is 16 GB: head + tail + size identifies a checkpoint in seconds
            h.update(f.read(_SAMPLE))
            f.seek(size - _SAMPLE)
            h.update(f.read(_SAMPLE))
            h.update(str(size).encode())
    return h.hexdigest()


def fingerprint(path: str | Path | None) -> str | None:
    """Hash of a folder's files (names and contents); a hub id that is no local folder hashes
    as its name. Logs, checkpoints and training metrics do not change a model's outputs, so they
    are left out."""
    if path is None:
        return None
    p = Path(path)
    h = hashlib.sha256()
    if not p.exists():
        h.update(f"hub:{path}".encode())
        return h.hexdigest()[:16]
    files = [p] if p.is_file() else sorted(q for q in p.rglob("*") if q.is_file())
    for f in files:
        rel = f.relative_to(p).as_posix() if p.is_dir() else f.name
        if rel.endswith((".log", "metrics.json")) or "checkpoint" in rel:
            continue
        h.update(rel.encode())
        h.update(_file_digest(f).encode())
    return h.hexdigest()[:16]
