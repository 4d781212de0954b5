"""How long a model identity takes: streaming SHA-256 of the weights, and the manifest check that
spares it at each job start.

    python benchmarks/fingerprint.py [--gib 2] [--shards 4] [--dir /tmp]

Writes --gib GiB of weights as --shards files in a temp folder under --dir (deleted afterwards),
evicts them from the page cache (posix_fadvise DONTNEED, this file only) so the reads come from the
disk ("cold-ish": the device's own cache may still help), then times: SHA-256 of an in-memory
buffer (the CPU bound), one shard streamed alone, the whole folder hashed and its manifest written
(shards in parallel, as a saving job or a first use does), and the manifest check of a later job
start. Prints each and the time extrapolated to 16 GB, an 8B model in bf16.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import statistics
import tempfile
import time
from pathlib import Path

from speed.llm.fingerprint import MANIFEST, fingerprint, write_digest

_BLOCK = 64 * 2**20
_MODEL_8B = 16e9  # bytes


def write_shards(folder: Path, total: int, shards: int) -> list[Path]:
    block = os.urandom(_BLOCK)
    paths = []
    for i in range(shards):
        path = folder / f"model-{i + 1:05d}-of-{shards:05d}.safetensors"
        with open(path, "wb") as f:
            for _ in range(total // shards // _BLOCK):
                f.write(block)
            f.flush()
            os.fsync(f.fileno())
        paths.append(path)
    (folder / "config.json").write_text('{"model_type": "llama"}')
    return paths


def evict(paths: list[Path]) -> None:
    for path in paths:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def timed(fn, *args) -> float:
    start = time.perf_counter()
    fn(*args)
    return time.perf_counter() - start


def rehash(folder: Path) -> None:
    """write_digest with nothing to reuse, as in a saving job."""
    (folder / MANIFEST).unlink(missing_ok=True)
    write_digest(folder)


def report(what: str, nbytes: int, seconds: float) -> None:
    rate = nbytes / seconds
    print(
        f"{what:<42} {nbytes / 2**30:5.2f} GiB in {seconds:6.2f} s = {rate / 1e9:5.2f} GB/s"
        f" -> 16 GB in {_MODEL_8B / rate:6.1f} s"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--gib", type=float, default=2.0)
    ap.add_argument("--shards", type=int, default=4)
    ap.add_argument("--dir", default=None, help="where the temp folder goes (default: $TMPDIR)")
    args = ap.parse_args()
    total = int(args.gib * 2**30)
    buf = os.urandom(256 * 2**20)
    report("sha256 of memory (CPU bound)", len(buf), timed(lambda: hashlib.sha256(buf).digest()))
    with tempfile.TemporaryDirectory(prefix="speed-fp-bench-", dir=args.dir) as tmp:
        folder = Path(tmp)
        paths = write_shards(folder, total, args.shards)
        nbytes = sum(p.stat().st_size for p in paths)
        evict(paths)
        report("one shard streamed, cold", paths[0].stat().st_size, timed(fingerprint, paths[0]))
        evict(paths)
        report(f"{args.shards} shards + manifest, cold", nbytes, timed(rehash, folder))
        report(f"{args.shards} shards + manifest, page cache", nbytes, timed(rehash, folder))
        checks = [timed(fingerprint, folder) for _ in range(50)]
        print(f"{'manifest check at job start':<42} {statistics.median(checks) * 1e3:.2f} ms")


if __name__ == "__main__":
    main()
