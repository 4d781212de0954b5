"""Folding the call cache's logs together, so a lookup searches a few indexes, not thousands.

Only final logs are merged: they never grow, so a merge copies all of them. The merged log is
written under a temporary name, indexed, fsync'd and renamed into place before its inputs are
deleted, so at every moment each record is in some log a reader can list (for a moment in two:
identical copies, which read alike). A merge never copies a record whose checksum fails.

One merge runs at a time per cache (an fcntl lock, which NFSv4 carries across hosts). Where
locks do not reach across hosts, two merges of the same logs make two identical merged logs:
wasted space, never a lost or changed answer. Merged logs are tiered (FANIN logs of one size
become one of the next), so a record is copied about log_FANIN(entries) times in its life.
"""

from __future__ import annotations

import logging
import math
import os
import socket
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

from speed.llm import segment
from speed.llm.logstore import (
    FANIN,
    ORPHAN_AGE_S,
    LogStore,
    alive,
    boot_id,
    new_log_name,
    publish_log,
    start_log,
    try_lock,
    write_and_adopt,
)
from speed.llm.logview import LogView
from speed.llm.segment import Index

log = logging.getLogger(__name__)


def compact(store: LogStore, full: bool = False) -> int:
    """Merge one tier of small final logs (all final logs with `full`); how many were merged.
    Returns 0 at once when another process is merging."""
    lock = try_lock(store.root / "merge.lock")
    if lock is None:
        return 0
    try:
        store.refresh()
        finalize_dead(store)
        merged = 0
        while group := plan(store, full):
            merge(store, group)
            merged += len(group)
            if not full:
                break
        remove_orphans(store.root)
        return merged
    finally:
        os.close(lock)


def plan(store: LogStore, full: bool) -> list[LogView]:
    finals = [v for v in store.views.values() if v.final and v.index is not None]
    if full:
        return finals if len(finals) > 1 else []
    tiers: dict[int, list[LogView]] = defaultdict(list)
    for view in finals:
        tiers[int(math.log(max(len(view.index), 1), FANIN))].append(view)
    return next((tiers[t] for t in sorted(tiers) if len(tiers[t]) >= FANIN), [])


def finalize_dead(store: LogStore) -> None:
    """Close the logs of this host's writers that died without closing them (kill -9, OOM): a
    dead writer never appends again, so its whole records can be indexed as final and merged.
    Other hosts' dead logs are left to a job on their host: a pid means nothing elsewhere."""
    host, boot, me = socket.gethostname(), boot_id(), os.getpid()
    for view in list(store.views.values()):
        meta = view.meta
        if view.final or meta.get("host") != host or meta.get("boot") != boot:
            continue
        if meta.get("pid") == me or alive(int(meta.get("pid", 0))):
            continue
        view.scan_tail()
        index = view.entries()
        index.final = True
        write_and_adopt(view, index)
        log.info("closed the log %s of pid %s, which died writing it", view.name, meta["pid"])


def _resolve(group: list[LogView]) -> tuple[np.ndarray, ...]:
    """The rows of the group's indexes to keep (one per key), in read order."""
    parts = [v.index for v in group]
    hi, lo, off, ln = (
        np.concatenate([getattr(p, f) for p in parts]) for f in ("hi", "lo", "offset", "length")
    )
    src = np.concatenate([np.full(len(p), i, dtype=np.int64) for i, p in enumerate(parts)])
    order = np.lexsort((lo, hi))
    hi, lo, off, ln, src = hi[order], lo[order], off[order], ln[order], src[order]
    keep = np.ones(len(hi), dtype=bool)
    for run in segment.repeats(hi, lo):
        recs = [group[src[r]].read_at(int(off[r]), int(ln[r])) for r in run]
        ok = [i for i, r in enumerate(recs) if r is not None]
        best = min(ok, key=lambda i: (recs[i].created, recs[i].value), default=-1)
        keep[[r for i, r in enumerate(run) if i != best]] = False
    rows = np.flatnonzero(keep)
    rows = rows[np.lexsort((off[rows], src[rows]))]  # each input read front to back
    return hi[rows], lo[rows], off[rows], ln[rows], src[rows]


def merge(store: LogStore, group: list[LogView]) -> None:
    hi, lo, off, ln, src = _resolve(group)
    name = new_log_name()
    meta = {"merged": [v.name for v in group], "created": time.time()}
    tmp, fd, at = start_log(store.root, name, meta)
    try:
        keep, offsets, lengths, buf = [], [], [], []
        for row in range(len(hi)):
            blob = os.pread(group[src[row]].fd, int(ln[row]), int(off[row]))
            if segment.decode_record(blob, 0) is None:
                log.error("dropping a corrupt record of %s at %d", group[src[row]].name, off[row])
                continue
            keep.append(row)
            offsets.append(at)
            lengths.append(len(blob))
            buf.append(blob)
            at += len(blob)
            if len(buf) >= 4096:
                segment.write_all(fd, b"".join(buf))
                buf.clear()
        segment.write_all(fd, b"".join(buf))
        rows = np.asarray(keep, dtype=np.int64)
        index = Index(
            hi[rows],
            lo[rows],
            np.asarray(offsets, dtype="<u8"),
            np.asarray(lengths, dtype="<u4"),
            end=at,
            final=True,
            sources=[v.name for v in group],
        ).sorted()
        segment.write_index(store.root / f"{name}.idx", index)
        publish_log(store.root, tmp, fd)
    finally:
        os.close(fd)
        tmp.unlink(missing_ok=True)
    for view in group:  # the log first: a reader must never find an input log without its index
        for suffix in (".log", ".idx"):
            view.path.with_suffix(suffix).unlink(missing_ok=True)
    segment.fsync_dir(store.root)
    store.refresh()


def remove_orphans(root: Path) -> None:
    """Indexes whose log is gone and temp files of crashed writers, once they are old."""
    now = time.time()
    names = set(os.listdir(root))
    for name in names:
        stale = name.endswith(".tmp") or (name.endswith(".idx") and name[:-4] + ".log" not in names)
        if not stale:
            continue
        try:
            if now - os.stat(root / name).st_mtime > ORPHAN_AGE_S:
                (root / name).unlink()
        except FileNotFoundError:
            pass


def check(root: Path) -> list[str]:
    """What is wrong with the store at `root` (empty when nothing is): every index row must
    point at a whole record of its key, and a final log must end in a whole record. A torn tail
    of a log that is not final is a killed writer's commit in flight, not a fault."""
    problems: list[str] = []
    for name in sorted(n for n in os.listdir(root) if n.endswith(".log")):
        view = LogView.open(root / name)
        if view is None:
            problems.append(f"{name}: no whole header")
            continue
        try:
            size = os.fstat(view.fd).st_size
            end = view.start
            for rec in segment.scan(view.fd, view.start, size):
                end = rec.offset + rec.length
            index = segment.read_index(view.path.with_suffix(".idx"))
            if index is not None:
                problems += _check_index(view, index, end)
            if (index is not None and index.final) and end != size:
                problems.append(f"{name}: final, but {size - end} bytes after its last record")
        finally:
            view.close()
    return problems


def _check_index(view: LogView, index: Index, end: int) -> list[str]:
    problems = []
    if index.end > end:
        problems.append(f"{view.name}: indexed up to {index.end}, whole records end at {end}")
    for row in range(len(index)):
        rec = view.read_at(int(index.offset[row]), int(index.length[row]))
        hi, lo = segment.digests([rec.key]) if rec is not None else (None, None)
        if rec is None or hi[0] != index.hi[row] or lo[0] != index.lo[row]:
            problems.append(f"{view.name}: index row {row} does not point at its record")
    return problems
