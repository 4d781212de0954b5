"""One log of the call cache as a reader sees it: its index plus the records beyond it."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from speed.llm import segment
from speed.llm.segment import Index, Record

log = logging.getLogger(__name__)


def winner(a: Record, b: Record) -> Record:
    """Which of two answers to one key every reader keeps: the earlier, ties by value. Only
    jobs racing on the same call make two, and any one of them is a correct answer."""
    return a if (a.created, a.value) <= (b.created, b.value) else b


class LogView:
    def __init__(self, path: Path, fd: int, meta: dict[str, Any], start: int):
        self.path, self.name, self.fd, self.meta = path, path.stem, fd, meta
        self.start = start  # first record
        self.end = start  # every record before this offset is whole and known
        self.index: Index | None = None
        self.index_stamp: tuple[int, int, int] | None = None
        # Records past the index, by key: where each is, not its value (reads go to the file,
        # so a reader following many live writers holds a few bytes per record, not answers).
        self.tail: dict[str, Record] = {}
        self.final = False

    @staticmethod
    def open(path: Path) -> LogView | None:
        """None for a file that is not (yet) a whole log; FileNotFoundError if it is gone."""
        fd = os.open(path, os.O_RDONLY)
        head = segment.read_log_header(fd)
        if head is None:
            os.close(fd)
            return None
        return LogView(path, fd, *head)

    def refresh(self, own: bool = False) -> None:
        """Catch up: a newer index if its writer wrote one, then the records past what is known.
        A final log never changes again, so it costs nothing from then on."""
        if self.final:
            return
        self.load_index()
        if not own and not self.final:
            self.scan_tail()

    def load_index(self) -> None:
        ipath = self.path.with_suffix(".idx")
        try:
            st = os.stat(ipath)
        except FileNotFoundError:
            return
        stamp = (st.st_ino, st.st_size, st.st_mtime_ns)
        if stamp == self.index_stamp:
            return
        index = segment.read_index(ipath)
        if index is None:
            log.warning("ignoring the unreadable index %s: its log is read in full", ipath)
            return
        if self.index is not None and index.end < self.index.end:
            return  # an older checkpoint renamed in late: keep the newer one
        self.index, self.index_stamp, self.final = index, stamp, index.final
        self.tail = {k: r for k, r in self.tail.items() if r.offset >= index.end}
        self.end = max(self.end, index.end)

    def scan_tail(self) -> None:
        """Read the records appended since the last look. Reopening the file first is what makes
        an NFS client revalidate its cache (close-to-open consistency), so we see other hosts'
        appends and not a stale page."""
        try:
            size = os.stat(self.path).st_size
        except FileNotFoundError:
            return  # merged away; our descriptor still reads what we know
        if size <= self.end:
            return
        fd = os.open(self.path, os.O_RDONLY)
        os.close(self.fd)
        self.fd = fd
        for rec in segment.scan(fd, self.end, size):
            self.remember(rec)
            self.end = rec.offset + rec.length

    def remember(self, rec: Record) -> None:
        """Note a record past the index; where its key repeats, keep the one readers keep."""
        old = self.tail.get(rec.key)
        if old is not None and old.created <= rec.created:
            full = self.read_at(old.offset, old.length) if old.created == rec.created else old
            if full is not None and winner(full, rec) is full:
                return
        self.tail[rec.key] = rec._replace(value=b"")

    def find(self, keys: list[str], hi: np.ndarray, lo: np.ndarray) -> list[tuple[int, int, int]]:
        """(query position, record offset, record length) of each key this log holds."""
        found: list[tuple[int, int, int]] = []
        if self.index is not None and len(self.index):
            at = self.index.find(hi, lo)
            rows = np.flatnonzero(at >= 0)
            offs, lens = self.index.offset[at[rows]].tolist(), self.index.length[at[rows]].tolist()
            found.extend(zip(rows.tolist(), offs, lens, strict=True))
        if self.tail:
            for q, key in enumerate(keys):
                rec = self.tail.get(key)
                if rec is not None:
                    found.append((q, rec.offset, rec.length))
        return found

    def read(self, offset: int, length: int, key: str) -> Record | None:
        """The record at `offset` if it is whole and holds `key` (digests can collide)."""
        rec = self.read_at(offset, length)
        return rec if rec is not None and rec.key == key else None

    def read_at(self, offset: int, length: int | None = None) -> Record | None:
        if length is None:
            head = os.pread(self.fd, segment.RECORD.size, offset)
            if len(head) < segment.RECORD.size:
                return None
            length = segment.RECORD.size + segment.RECORD.unpack(head)[2]
        rec = segment.decode_record(os.pread(self.fd, length, offset), 0, offset)
        if rec is None:
            log.error("corrupt record at %s:%d: treated as not cached", self.path, offset)
        return rec

    def entries(self) -> Index:
        """Everything this log holds as one index, one row per key (what its checkpoints write)."""
        recs = list(self.tail.values())
        parts = [
            Index.build(
                [r.key for r in recs],
                [r.offset for r in recs],
                [r.length for r in recs],
                end=self.end,
                final=False,
                sources=[],
            )
        ]
        if self.index is not None:
            parts.append(self.index)
        both = Index(
            *(
                np.concatenate([getattr(p, f) for p in parts])
                for f in ("hi", "lo", "offset", "length")
            ),
            end=self.end,
            final=False,
            sources=[],
        ).sorted()
        drop = []
        for run in both.repeats():  # a key put twice: keep the answer every reader keeps
            recs_ = [self.read_at(int(both.offset[r]), int(both.length[r])) for r in run]
            best = min(
                (i for i, r in enumerate(recs_) if r is not None),
                key=lambda i: (recs_[i].created, recs_[i].value),
                default=0,
            )
            drop.extend(int(r) for i, r in enumerate(run) if i != best)
        keep = np.setdiff1d(np.arange(len(both)), np.asarray(drop, dtype=np.int64))
        return both.take(keep)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
