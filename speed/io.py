"""Atomic file and folder writes: a killed job never leaves an output that looks finished."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any


@contextmanager
def atomic_file(path: str | Path, mode: str = "w") -> Iterator[IO[Any]]:
    """Write to a hidden temp file beside `path`; rename over `path` only on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Build a folder under a temp name; rename it into place only on success."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        yield tmp
        shutil.rmtree(path, ignore_errors=True)
        os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_jsonl(path: str | Path, rows: Iterable[dict[str, Any]]) -> int:
    n = 0
    with atomic_file(path) as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
            n += 1
    return n


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def read_jsonl_share(path: str | Path, part: int, parts: int) -> list[dict[str, Any]]:
    """`read_jsonl(path)[part::parts]`, parsing only those rows: the others are read as bytes and
    skipped, so a shard job of a file of millions of prompts holds and decodes only its share
    (a row's own shard never moves, whatever the row lengths)."""
    if not 0 <= part < parts:
        raise ValueError(f"part {part} outside 0..{parts - 1}")
    rows, i = [], 0
    with open(path, "rb") as f:
        for line in f:
            if not line.strip():  # blank lines are no rows, as in read_jsonl
                continue
            if i % parts == part:
                rows.append(json.loads(line))
            i += 1
    return rows


def read_json(path: str | Path) -> Any:
    with open(path) as f:
        return json.load(f)


def read_json_each(names: Iterable[str], paths: Iterable[str | Path]) -> dict[str, Any]:
    """name -> parsed JSON, for parallel lists (a rule's params and inputs)."""
    return {name: read_json(p) for name, p in zip(names, paths, strict=True)}
