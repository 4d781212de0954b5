"""Content-addressed cache of LLM completions, shared by every job and variant, on any host.

The store (`logstore.py`) is a folder of append-only logs, one per writing process, so jobs on
different nodes can share it over NFS: no shared memory, no lock a writer depends on. A commit
(`put_many`) is on disk when it returns, a killed job loses at most the commit in flight, and
no reader ever sees part of an entry. Each sample of a request is its own entry, so a request
with n=5 whose first 3 samples were paid for only pays for 2 more.

A cache of an earlier version (one SQLite file beside the folder, `<folder>.sqlite`) is read
into the folder once, the first time the folder is opened, so no answer paid for is lost.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sqlite3
from pathlib import Path
from typing import Any

from speed.llm.logstore import LogStore, publish_log, start_log
from speed.llm.segment import Index, encode_record, write_all, write_index
from speed.llm.types import Completion, Request

log = logging.getLogger(__name__)


def cache_key(identity: dict[str, Any], request: Request, sample_index: int) -> str:
    """Hash of everything that decides a completion; the caller's request id is left out."""
    payload = {
        "identity": identity,
        "messages": list(request.messages),
        "sampling": request.sampling.as_dict(),
        "schema": request.schema,
        "sample": sample_index,
    }
    blob = json.dumps(payload, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()


class CompletionCache:
    """`path` is the cache's folder (`cache_dir/completions`)."""

    def __init__(self, path: str | Path, timeout_s: float | None = None):
        self.path = Path(path)
        if self.path.is_file():
            raise ValueError(
                f"{self.path} is a single-file (SQLite) cache of an earlier version; the cache is "
                f"now a folder: open {self.path.with_suffix('')} and it is imported from this file"
            )
        self.store = LogStore(self.path)
        legacy = self.path.with_suffix(".sqlite")
        if legacy != self.path and legacy.is_file():
            import_sqlite(self.store, legacy)

    def get_many(self, keys: list[str]) -> dict[str, Completion]:
        found = self.store.get_many(keys)
        return {k: Completion(**json.loads(rec.value.decode())) for k, rec in found.items()}

    def put_many(self, items: dict[str, Completion]) -> None:
        """One commit: durable when this returns. A single entry is a cheap commit."""
        self.store.put_many(
            {k: json.dumps(c.to_json(), ensure_ascii=False).encode() for k, c in items.items()}
        )

    def __len__(self) -> int:
        return len(self.store)

    def compact(self) -> int:
        """Merge every closed log into one (housekeeping; `close` merges small ones)."""
        from speed.llm.compaction import compact

        return compact(self.store, full=True)

    def check(self) -> list[str]:
        """Faults of the store on disk (empty when there are none): see compaction.check."""
        from speed.llm.compaction import check

        return check(self.path)

    def close(self, compact: bool = True) -> None:
        """Close this process's log; with `compact`, merge small logs if no one else is."""
        self.store.close(compact=compact)


def import_sqlite(store: LogStore, db: Path) -> None:
    """Copy a SQLite cache of an earlier version into `store` as one final log, named by the
    file's size and time so it is imported once (two jobs importing at once write the same)."""
    st = db.stat()
    tag = hashlib.sha256(f"{db.resolve()}:{st.st_size}:{st.st_mtime_ns}".encode()).hexdigest()
    name = f"0000000000000000-sqlite{tag[:12]}"
    if (store.root / f"{name}.log").exists():
        return
    con = sqlite3.connect(db)
    try:
        rows = con.execute("SELECT key, value, created FROM completions").fetchall()
    except sqlite3.DatabaseError as err:
        raise RuntimeError(f"cannot read the earlier cache {db}: {err}") from err
    finally:
        con.close()
    tmp, fd, at = start_log(store.root, name, {"imported": str(db)})
    keys, offsets, lengths = [], [], []
    try:
        blobs = []
        for key, value, created in rows:
            blobs.append(encode_record(key, value.encode(), float(created)))
            keys.append(key)
            offsets.append(at)
            lengths.append(len(blobs[-1]))
            at += len(blobs[-1])
        write_all(fd, b"".join(blobs))
        index = Index.build(keys, offsets, lengths, end=at, final=True, sources=[str(db)])
        write_index(store.root / f"{name}.idx", index)
        publish_log(store.root, tmp, fd)
    finally:
        os.close(fd)
        tmp.unlink(missing_ok=True)
    log.info("imported %d cached completions from %s", len(rows), db)
    store.refresh()
