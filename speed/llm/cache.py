"""Content-addressed cache of LLM completions, shared by every job and variant.

SQLite in WAL mode: concurrent writers from several Snakemake jobs serialize on SQLite's own
lock, and a process killed mid-write (even SIGKILL) leaves the last committed state readable,
because a transaction is either in the database or in nothing. Each sample of a request is its
own entry, so a request with n=5 whose first 3 samples were paid for only pays for 2 more.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from pathlib import Path
from typing import Any

from speed.llm.types import Completion, Request

_SCHEMA = """
CREATE TABLE IF NOT EXISTS completions (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL,
    created REAL NOT NULL
)
"""


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
    def __init__(self, path: str | Path, timeout_s: float = 600.0):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, timeout=timeout_s, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(_SCHEMA)

    def get_many(self, keys: list[str]) -> dict[str, Completion]:
        found: dict[str, Completion] = {}
        for start in range(0, len(keys), 500):  # SQLite caps bound parameters per statement
            chunk = keys[start : start + 500]
            marks = ",".join("?" * len(chunk))
            rows = self._db.execute(
                f"SELECT key, value FROM completions WHERE key IN ({marks})", chunk
            )
            for key, value in rows:
                found[key] = Completion(**json.loads(value))
        return found

    def put_many(self, items: dict[str, Completion]) -> None:
        now = time.time()
        rows = [(k, json.dumps(c.to_json(), ensure_ascii=False), now) for k, c in items.items()]
        with self._db:  # one transaction: all of these entries or none
            self._db.execute("BEGIN IMMEDIATE")
            self._db.executemany(
                "INSERT OR REPLACE INTO completions (key, value, created) VALUES (?, ?, ?)", rows
            )

    def __len__(self) -> int:
        return self._db.execute("SELECT COUNT(*) FROM completions").fetchone()[0]

    def close(self) -> None:
        self._db.close()
