"""A key-value store made of one append-only log per writing process, safe on NFS.

Why this shape (docs/architecture.md, "Call cache"): no two processes ever write one file, so
writers need no lock, on one host or many; a commit is one write and one fsync of the writer's
own log; a reader checks every record's checksum and ignores a torn tail; indexes and merged
logs appear only by rename. Nothing relies on shared memory or on byte-range locks for
correctness (the merge lock only keeps two merges from doing the same work twice).
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import socket
import threading
import time
from pathlib import Path

import numpy as np

from speed.llm import segment
from speed.llm.logview import LogView, winner
from speed.llm.segment import Index, Record

log = logging.getLogger(__name__)

ROTATE_RECORDS = 65536  # a log this long is closed (indexed, final) and a new one started
ROTATE_BYTES = 256 << 20
CHECKPOINT_RECORDS = 4096  # a writer re-indexes its log this often: what a reader must scan
FANIN = 8  # this many final logs of one size tier are merged into one
ORPHAN_AGE_S = 3600.0
REFRESH_S = 1.0  # a lookup that misses looks for new logs and records at most this often


def boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def new_log_name() -> str:
    return f"{time.time_ns():016x}-{os.urandom(6).hex()}"


def start_log(root: Path, name: str, meta: dict) -> tuple[Path, int, int]:
    """A log under a temporary name holding its header: (temp path, read-write fd, size)."""
    tmp = root / f"{name}.log.{os.getpid()}.tmp"
    fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
    head = segment.log_header(meta)
    segment.write_all(fd, head)
    return tmp, fd, len(head)


def publish_log(root: Path, tmp: Path, fd: int) -> Path:
    """fsync the log and rename it into place: readers see it whole or not at all."""
    os.fsync(fd)
    path = root / (tmp.name.split(".log.")[0] + ".log")
    os.rename(tmp, path)
    segment.fsync_dir(root)
    return path


class Writer:
    """This process's log: appends, checkpoints its index, closes it final."""

    def __init__(self, root: Path):
        self.pid = os.getpid()
        meta = {"host": socket.gethostname(), "boot": boot_id(), "pid": self.pid}
        tmp, fd, start = start_log(root, new_log_name(), {**meta, "created": time.time()})
        self.view = LogView(publish_log(root, tmp, fd), fd, meta, start)
        self.records = 0
        self.unindexed = 0

    def append(self, items: list[tuple[str, bytes]]) -> None:
        """Commit `items`: on disk (fsync'd) when this returns, or not at all."""
        view, now = self.view, time.time()
        blobs = [segment.encode_record(k, v, now) for k, v in items]
        data, at = memoryview(b"".join(blobs)), view.end
        done = 0
        while done < len(data):
            done += os.pwrite(view.fd, data[done:], at + done)
        os.fdatasync(view.fd)
        for (key, value), blob in zip(items, blobs, strict=True):
            view.remember(Record(key, value, now, at, len(blob)))
            at += len(blob)
        view.end = at
        self.records += len(items)
        self.unindexed += len(items)
        if self.unindexed >= CHECKPOINT_RECORDS:
            self.checkpoint(final=False)

    def checkpoint(self, final: bool) -> None:
        """Index everything written so far, so readers need not scan it. The records are
        committed already: an index that cannot be written only makes readers scan more."""
        try:
            index = self.view.entries()
            index.final = final
            write_and_adopt(self.view, index)
            self.unindexed = 0
        except OSError as err:
            log.warning("could not index %s (readers read it in full): %s", self.view.path, err)

    def full(self) -> bool:
        return self.records >= ROTATE_RECORDS or self.view.end >= ROTATE_BYTES


def write_and_adopt(view: LogView, index: Index) -> None:
    """Write `index` for `view`'s log and use it in this process from now on."""
    ipath = view.path.with_suffix(".idx")
    segment.write_index(ipath, index)
    st = os.stat(ipath)
    view.index, view.index_stamp, view.final = (
        index,
        (st.st_ino, st.st_size, st.st_mtime_ns),
        index.final,
    )
    view.tail = {k: r for k, r in view.tail.items() if r.offset >= index.end}


class LogStore:
    """Keys to bytes. Any number of processes on any hosts may share `root`."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.views: dict[str, LogView] = {}
        self.writer: Writer | None = None
        self._lock = threading.RLock()
        self.refresh_s = REFRESH_S
        self._refreshed = 0.0
        self.refresh()

    # -- reading ---------------------------------------------------------------------------
    def refresh(self) -> None:
        """Pick up logs, indexes and records that appeared since the last look."""
        with self._lock:
            logs = self._list()
            for name in set(self.views) - logs:  # merged away (their records are elsewhere)
                if self.writer is None or self.writer.view is not self.views[name]:
                    self.views.pop(name).close()
            for name in sorted(logs - set(self.views)):
                try:
                    view = LogView.open(self.root / f"{name}.log")
                except FileNotFoundError:
                    continue  # merged away between the listing and now
                if view is not None:
                    self.views[name] = view
            own = self.writer.view if self.writer is not None else None
            for view in list(self.views.values()):
                try:
                    view.refresh(own=view is own)
                except OSError as err:
                    if err.errno not in (errno.ENOENT, errno.ESTALE):
                        raise
            self._refreshed = time.monotonic()

    def _list(self) -> set[str]:
        """The logs in the folder. A listing taken while a merge renames its log in and deletes
        its inputs may miss both; a merge renames before it deletes, so of two listings in a
        row that agree, neither missed a merged log (a file there all along is always listed)."""
        seen = None
        for _ in range(8):
            logs = {n[:-4] for n in os.listdir(self.root) if n.endswith(".log")}
            if logs == seen:
                break
            seen = logs
        return logs

    def get_many(self, keys: list[str]) -> dict[str, Record]:
        with self._lock:
            found = self._lookup(keys)
            missing = [k for k in keys if k not in found]
            # Another job may have answered them since: look again before paying, at most once a
            # second (a listing costs a round trip per live log on NFS).
            if missing and time.monotonic() - self._refreshed >= self.refresh_s:
                self.refresh()
                found.update(self._lookup(missing))
            return found

    def _lookup(self, keys: list[str]) -> dict[str, Record]:
        for attempt in range(3):
            try:
                return self._lookup_once(keys)
            except OSError as err:  # a log another host merged and deleted under us (NFS)
                if err.errno not in (errno.ESTALE, errno.ENOENT) or attempt == 2:
                    raise
                for name in [n for n, v in self.views.items() if not v.path.exists()]:
                    self.views.pop(name).close()
                self.refresh()
        return {}

    def _lookup_once(self, keys: list[str]) -> dict[str, Record]:
        if not keys:
            return {}
        hi, lo = segment.digests(keys)
        best: dict[int, Record] = {}
        for view in list(self.views.values()):
            for q, offset, length in view.find(keys, hi, lo):
                rec = view.read(offset, length, keys[q])
                if rec is not None:
                    best[q] = rec if q not in best else winner(rec, best[q])
        return {keys[q]: rec for q, rec in best.items()}

    def __len__(self) -> int:
        """Distinct keys (by 128-bit digest)."""
        with self._lock:
            self.refresh()
            parts = [v.entries() for v in self.views.values()]
            if not parts:
                return 0
            pairs = np.stack(
                [np.concatenate([p.hi for p in parts]), np.concatenate([p.lo for p in parts])], 1
            )
            return len(np.unique(pairs, axis=0))

    # -- writing ---------------------------------------------------------------------------
    def put_many(self, items: dict[str, bytes]) -> None:
        """One commit: every item is durable when this returns. A single item is cheap: one
        write and one fsync of this process's own log, no lock."""
        if not items:
            return
        with self._lock:
            for attempt in range(2):
                writer = self._writer()
                try:
                    writer.append(list(items.items()))
                    break
                except OSError as err:
                    # The log may end in a torn record now, and after a failed fsync the kernel
                    # may have dropped the pages: leave it (no record may follow a torn one)
                    # and write the whole commit again to a new log, once.
                    self._retire(writer, final=False)
                    if attempt:
                        raise
                    log.warning("cache write failed (%s); retrying in a new log", err)
            if writer.full():
                self._retire(writer, final=True)

    def _writer(self) -> Writer:
        if self.writer is not None and self.writer.pid != os.getpid():
            self.writer = None  # a forked child: the parent's log is the parent's alone
        if self.writer is None:
            self.writer = Writer(self.root)
            self.views[self.writer.view.name] = self.writer.view
        return self.writer

    def _retire(self, writer: Writer, final: bool) -> None:
        if writer.records and final:
            writer.checkpoint(final=True)
        self.writer = None

    def close(self, compact: bool = True) -> None:
        """Close this process's log final, then fold small logs together if no one else is."""
        with self._lock:
            if self.writer is not None and self.writer.pid == os.getpid():
                self._retire(self.writer, final=True)
            self.writer = None
            if compact:
                try:
                    from speed.llm.compaction import compact as run

                    run(self, full=False)
                except OSError as err:  # never fail a finished job over housekeeping
                    log.warning("cache compaction skipped: %s", err)
            for view in self.views.values():
                view.close()
            self.views.clear()


def try_lock(path: Path) -> int | None:
    """An fcntl lock on `path` if free now (released when the fd closes or the process dies;
    NFSv4 carries these locks to the server), else None."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return fd
