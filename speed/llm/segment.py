"""On-disk format of the call cache: append-only logs of checksummed records, and their indexes.

A log has one writer (a process) and any number of readers, on any host. It starts with a header
(who wrote it) and is then only ever appended to. Each record is

    magic u32 | crc32(length + payload) u32 | payload length u32 | payload

and the payload is `created f64 | key length u16 | key | value`. A reader trusts a record only
when the whole of it is there and its checksum matches, and stops at the first record that is
not: a writer killed mid-append (or a node that died before its data reached the server) leaves
at most a torn tail, which no reader ever returns.

An index (`<log>.idx`) is an accelerator, never the truth: the sorted 128-bit digests of a
log's keys with their record offsets, covering the log up to `end`. It is written to a
temporary name and renamed into place, so a reader sees a whole index or the previous one.
`final` says the log will never grow again (its writer closed it, or a merge wrote it).
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

RECORD = struct.Struct("<III")  # magic, crc32 of what follows it, payload length
PAYLOAD = struct.Struct("<dH")  # created, key length
RECORD_MAGIC = 0x31445053  # b"SPD1"
LOG_MAGIC = b"SPEEDLOG"
INDEX_MAGIC = b"SPEEDIDX"
LEN = struct.Struct("<I")
MAX_KEY_BYTES = 65535


def digests(keys: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(hi, lo) uint64 halves of each key's 128-bit BLAKE2b digest: what indexes sort on."""
    raw = b"".join(hashlib.blake2b(k.encode(), digest_size=16).digest() for k in keys)
    both = np.frombuffer(raw, dtype="<u8").reshape(-1, 2)
    return both[:, 0].copy(), both[:, 1].copy()


def encode_record(key: str, value: bytes, created: float) -> bytes:
    kb = key.encode()
    if len(kb) > MAX_KEY_BYTES:
        raise ValueError(f"cache key of {len(kb)} bytes; at most {MAX_KEY_BYTES}")
    payload = PAYLOAD.pack(created, len(kb)) + kb + value
    body = LEN.pack(len(payload)) + payload
    return LEN.pack(RECORD_MAGIC) + LEN.pack(zlib.crc32(body)) + body


class Record(NamedTuple):  # a tuple: built once per hit, so cheap to build
    key: str
    value: bytes
    created: float
    offset: int
    length: int  # of the whole record, header included


def decode_record(buf: bytes, pos: int, base: int = 0) -> Record | None:
    """The record at `pos` of `buf` (file offset `base + pos`), or None when it is torn/corrupt."""
    if len(buf) - pos < RECORD.size:
        return None
    magic, crc, size = RECORD.unpack_from(buf, pos)
    stop = pos + RECORD.size + size
    if magic != RECORD_MAGIC or size < PAYLOAD.size or stop > len(buf):
        return None
    view = memoryview(buf)
    if zlib.crc32(view[pos + 8 : stop]) != crc:
        return None
    created, klen = PAYLOAD.unpack_from(buf, pos + RECORD.size)
    kstart = pos + RECORD.size + PAYLOAD.size
    if kstart + klen > stop:
        return None
    key = str(view[kstart : kstart + klen], "utf-8", "replace")
    return Record(key, bytes(view[kstart + klen : stop]), created, base + pos, stop - pos)


def log_header(meta: dict[str, Any]) -> bytes:
    blob = json.dumps(meta, sort_keys=True).encode()
    return LOG_MAGIC + LEN.pack(len(blob)) + blob + LEN.pack(zlib.crc32(blob))


def read_log_header(fd: int) -> tuple[dict[str, Any], int] | None:
    """(meta, offset of the first record), or None for a file that is not a whole log."""
    head = os.pread(fd, 4096, 0)
    if not head.startswith(LOG_MAGIC) or len(head) < 12:
        return None
    (size,) = LEN.unpack_from(head, 8)
    end = 12 + size + 4
    if end > len(head):
        head = os.pread(fd, end, 0)
    if len(head) < end:
        return None
    blob = head[12 : 12 + size]
    if LEN.unpack_from(head, 12 + size)[0] != zlib.crc32(blob):
        return None
    return json.loads(blob), end


def scan(fd: int, start: int, stop: int, block: int = 8 << 20) -> Iterator[Record]:
    """Every whole record from `start` on, up to the first torn or corrupt one (or `stop`)."""
    pos = start
    while pos < stop:
        buf = os.pread(fd, max(block, RECORD.size), pos)
        if not buf:
            return
        at = 0
        while True:
            rec = decode_record(buf, at, pos)
            if rec is None:
                break
            yield rec
            at += rec.length
        if at == 0:
            # Nothing whole in this block: either a record larger than it, or the torn end.
            if len(buf) < RECORD.size:
                return
            size = RECORD.unpack_from(buf, 0)[2]
            if RECORD.size + size <= len(buf) or RECORD.size + size > stop - pos:
                return
            block = RECORD.size + size
            continue
        pos += at


@dataclass
class Index:
    """Sorted digests of a log's keys and where their records are."""

    hi: np.ndarray  # uint64, sorted with lo as the tie-break
    lo: np.ndarray
    offset: np.ndarray  # uint64
    length: np.ndarray  # uint32
    end: int  # the log is covered up to this offset
    final: bool
    sources: list[str]  # the logs a merge folded into this one (provenance only)

    @staticmethod
    def build(keys: list[str], offsets: list[int], lengths: list[int], **kw: Any) -> Index:
        hi, lo = digests(keys)
        return Index(
            hi, lo, np.asarray(offsets, dtype="<u8"), np.asarray(lengths, dtype="<u4"), **kw
        ).sorted()

    def sorted(self) -> Index:
        order = np.lexsort((self.lo, self.hi))
        self.hi, self.lo = self.hi[order], self.lo[order]
        self.offset, self.length = self.offset[order], self.length[order]
        return self

    def __len__(self) -> int:
        return len(self.hi)

    def take(self, rows: np.ndarray) -> Index:
        return Index(
            self.hi[rows],
            self.lo[rows],
            self.offset[rows],
            self.length[rows],
            end=self.end,
            final=self.final,
            sources=self.sources,
        )

    def repeats(self) -> list[np.ndarray]:
        return repeats(self.hi, self.lo)

    def find(self, hi: np.ndarray, lo: np.ndarray) -> np.ndarray:
        """Position in this index of each queried digest, -1 where it is not here."""
        if not len(self.hi):
            return np.full(len(hi), -1)
        pos = np.searchsorted(self.hi, hi)
        at = np.minimum(pos, len(self.hi) - 1)
        # Equal `hi` with different `lo` (1 in 2**64 per pair): look along the run of equal hi.
        hit = (self.hi[at] == hi) & (self.lo[at] == lo)
        for q in np.flatnonzero((self.hi[at] == hi) & ~hit):
            run = np.flatnonzero(
                self.lo[pos[q] : np.searchsorted(self.hi, hi[q], "right")] == lo[q]
            )
            if len(run):
                at[q], hit[q] = pos[q] + run[0], True
        return np.where(hit, at, -1)


def repeats(hi: np.ndarray, lo: np.ndarray) -> list[np.ndarray]:
    """Runs of rows (of digests sorted by hi, lo) that share one digest: one key twice."""
    same = (hi[1:] == hi[:-1]) & (lo[1:] == lo[:-1])
    runs: list[np.ndarray] = []
    for start in np.flatnonzero(same & ~np.concatenate([[False], same[:-1]])):
        stop = start + 1
        while stop < len(same) and same[stop]:
            stop += 1
        runs.append(np.arange(start, stop + 1))
    return runs


def write_index(path: Path, index: Index) -> None:
    """Write `index` beside its log under a temporary name, fsync, rename into place."""
    meta = {"end": index.end, "final": index.final, "n": len(index), "sources": index.sources}
    blob = json.dumps(meta).encode()
    body = b"".join(
        [
            INDEX_MAGIC,
            LEN.pack(len(blob)),
            blob,
            index.hi.astype("<u8").tobytes(),
            index.lo.astype("<u8").tobytes(),
            index.offset.astype("<u8").tobytes(),
            index.length.astype("<u4").tobytes(),
        ]
    )
    tmp = path.with_name(f"{path.name}.{os.getpid()}.{os.urandom(4).hex()}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(body + LEN.pack(zlib.crc32(body)))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def read_index(path: Path) -> Index | None:
    """The index at `path`, or None when it is missing or not whole (then the log is scanned)."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    if not raw.startswith(INDEX_MAGIC) or len(raw) < 16:
        return None
    body, (crc,) = raw[:-4], LEN.unpack(raw[-4:])
    if zlib.crc32(body) != crc:
        return None
    (size,) = LEN.unpack_from(body, 8)
    meta = json.loads(body[12 : 12 + size])
    n, at = meta["n"], 12 + size
    arrays = []
    for dtype, width in (("<u8", 8), ("<u8", 8), ("<u8", 8), ("<u4", 4)):
        arrays.append(np.frombuffer(body, dtype=dtype, count=n, offset=at))
        at += n * width
    return Index(*arrays, end=meta["end"], final=meta["final"], sources=meta["sources"])


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def fsync_dir(path: Path) -> None:
    """Make a rename in `path` durable (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
