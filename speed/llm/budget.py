"""The teacher budget guard: a run never pays for more teacher calls, tokens or USD than
`teacher.budget` allows.

Spend is counted per run in a SQLite file next to the call cache, shared by every teacher job
(concurrent jobs, other cluster nodes on the same file system: rollback journal and fcntl
locks, never WAL; see docs/architecture.md). Before a chunk of calls is sent,
its worst case (prompt estimated generously, completion at max_tokens) is reserved; after it
returns, the reservation is replaced by what the calls really cost. A chunk that does not fit
is cut to what fits, and when nothing fits the job stops with BudgetExceeded: every completion
paid for so far is already in the cache, so a rerun with a larger budget pays only for the rest.
Cached calls are free and never counted.

Reservations are held per process (host, pid). A job that ends without settling (a failed call,
kill -9, a wall-time limit) must not shrink the budget for good: its reservation is dropped when
it closes, or, if it died, by the next guard that starts on the same host and finds the pid gone.

The limits reach jobs through the SPEED_TEACHER_BUDGET environment variable that the Snakefile
sets, not through rule params: a budget changes no output, so raising it must rerun nothing.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

from speed.llm.ledger import Price
from speed.llm.mounts import lock_problem
from speed.llm.types import Completion, Request

log = logging.getLogger(__name__)

ENV_VAR = "SPEED_TEACHER_BUDGET"
WORST_CASE_CHARS_PER_TOKEN = 2.0  # fewer chars per token than any English text: never undercount
LIMITS = ("max_calls", "max_tokens", "max_usd")


class BudgetExceeded(RuntimeError):
    pass


def budget_env(run: str, budget: dict[str, Any] | None) -> str:
    """The environment value the Snakefile exports for the teacher jobs of `run`."""
    return json.dumps({"run": run, **{k: (budget or {}).get(k) for k in LIMITS}})


def _leave_wal(db: sqlite3.Connection, tries: int = 600) -> None:
    """Rollback-journal mode. A table an earlier version left in WAL is switched once; the
    switch needs the file to itself and SQLite answers "locked" at once instead of waiting
    while another job has it open, so it is retried. A table already out of WAL needs no lock."""
    for _ in range(tries):
        try:
            if db.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
                return
            db.execute("PRAGMA journal_mode=DELETE")
        except sqlite3.OperationalError as err:
            if "locked" not in str(err) and "busy" not in str(err):
                raise
            time.sleep(1.0)
    raise RuntimeError("the spend table stays in WAL mode: another job holds it open")


class SpendGuard:
    def __init__(self, path: str | Path, run: str, limits: dict[str, Any], price: Price):
        self.run, self.price = run, price
        self.limits = {k: limits.get(k) for k in LIMITS}
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        if problem := lock_problem(Path(path).parent):
            raise RuntimeError(problem)
        # A streaming client settles from a thread of its own while its event loop reserves:
        # one connection, used under a lock.
        self._db = sqlite3.connect(
            path, timeout=600.0, isolation_level=None, check_same_thread=False
        )
        self._lock = threading.RLock()
        # A rollback journal under fcntl locks, which NFS carries across hosts; WAL would need
        # memory shared by every process that opens the file, which hosts cannot share.
        _leave_wal(self._db)
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS spend (run TEXT PRIMARY KEY, calls INTEGER NOT NULL, "
            "tokens INTEGER NOT NULL, usd REAL NOT NULL)"
        )
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS reserved (run TEXT NOT NULL, host TEXT NOT NULL, "
            "pid INTEGER NOT NULL, calls INTEGER NOT NULL, tokens INTEGER NOT NULL, "
            "usd REAL NOT NULL, PRIMARY KEY (run, host, pid))"
        )
        self._db.execute("INSERT OR IGNORE INTO spend VALUES (?, 0, 0, 0.0)", (run,))
        self.host, self.pid = socket.gethostname(), os.getpid()
        with self._db:
            self._db.execute("BEGIN IMMEDIATE")
            self._release_dead()
            self._db.execute(
                "INSERT OR REPLACE INTO reserved VALUES (?, ?, ?, 0, 0, 0.0)",
                (run, self.host, self.pid),
            )

    @classmethod
    def from_env(cls, cache_dir: str | Path, price: Price) -> SpendGuard | None:
        """The guard of the run the Snakefile announced, or None without limits."""
        raw = os.environ.get(ENV_VAR)
        if not raw:
            return None
        cfg = json.loads(raw)
        if all(cfg.get(k) is None for k in LIMITS):
            return None
        return cls(Path(cache_dir) / "spend.sqlite", cfg["run"], cfg, price)

    def spent(self) -> dict[str, float]:
        """What the run has paid plus what its live jobs have reserved."""
        with self._lock:
            return self._spent()

    def _spent(self) -> dict[str, float]:
        calls, tokens, usd = self._db.execute(
            "SELECT s.calls + COALESCE(SUM(r.calls), 0), s.tokens + COALESCE(SUM(r.tokens), 0), "
            "s.usd + COALESCE(SUM(r.usd), 0) FROM spend s LEFT JOIN reserved r ON r.run = s.run "
            "WHERE s.run = ?",
            (self.run,),
        ).fetchone()
        return {"calls": calls, "tokens": tokens, "usd": usd}

    def _release_dead(self) -> None:
        """Drop the reservations of this host's jobs that died without settling."""
        rows = self._db.execute(
            "SELECT pid, calls, tokens FROM reserved WHERE run = ? AND host = ? AND pid != ?",
            (self.run, self.host, self.pid),
        ).fetchall()
        for pid, calls, tokens in rows:
            if not _alive(pid):
                self._db.execute(
                    "DELETE FROM reserved WHERE run = ? AND host = ? AND pid = ?",
                    (self.run, self.host, pid),
                )
                if calls:
                    log.warning(
                        "released %d calls / %d tokens reserved by pid %d, which ended unsettled",
                        calls,
                        tokens,
                        pid,
                    )

    def worst_case(self, request: Request) -> tuple[int, int, float]:
        chars = sum(len(m["content"]) for m in request.messages)
        prompt = int(chars / WORST_CASE_CHARS_PER_TOKEN) + 16 * len(request.messages)
        completion = request.sampling.max_tokens
        return 1, prompt + completion, self.price.usd(prompt, completion)

    def reserve(self, requests: list[Request]) -> int:
        """Reserve the worst case of the longest prefix of `requests` that fits; its length."""
        with self._lock, self._db:
            self._db.execute("BEGIN IMMEDIATE")
            spent = self._spent()
            calls, tokens, usd = spent["calls"], spent["tokens"], spent["usd"]
            fits = 0
            for request in requests:
                c, t, u = self.worst_case(request)
                if not self._within(calls + c, tokens + t, usd + u):
                    break
                calls, tokens, usd, fits = calls + c, tokens + t, usd + u, fits + 1
            self._hold(calls - spent["calls"], tokens - spent["tokens"], usd - spent["usd"])
        if not fits and requests:
            raise BudgetExceeded(self._message(spent))
        return fits

    def settle(self, requests: list[Request], completions: list[Completion]) -> None:
        """Replace the reservation of `requests` by what their completions cost."""
        reserved = [self.worst_case(r) for r in requests]
        tokens = sum(c.prompt_tokens + c.completion_tokens for c in completions)
        usd = sum(self.price.usd(c.prompt_tokens, c.completion_tokens) for c in completions)
        with self._lock, self._db:
            self._db.execute("BEGIN IMMEDIATE")
            self._hold(
                -len(reserved), -sum(t for _, t, _ in reserved), -sum(u for _, _, u in reserved)
            )
            self._db.execute(
                "UPDATE spend SET calls = calls + ?, tokens = tokens + ?, usd = usd + ? "
                "WHERE run = ?",
                (len(completions), tokens, usd, self.run),
            )

    def _within(self, calls: float, tokens: float, usd: float) -> bool:
        spend = {"max_calls": calls, "max_tokens": tokens, "max_usd": usd}
        return all(lim is None or spend[k] <= lim for k, lim in self.limits.items())

    def _hold(self, calls: float, tokens: float, usd: float) -> None:
        """Add to this process's reservation."""
        self._db.execute(
            "UPDATE reserved SET calls = calls + ?, tokens = tokens + ?, usd = usd + ? "
            "WHERE run = ? AND host = ? AND pid = ?",
            (calls, tokens, usd, self.run, self.host, self.pid),
        )

    def _message(self, spent: dict[str, float]) -> str:
        limits = ", ".join(f"{k} {v}" for k, v in self.limits.items() if v is not None)
        return (
            f"teacher budget of run {self.run!r} reached: spent or reserved "
            f"{spent['calls']} calls, {spent['tokens']} tokens, {spent['usd']:.2f} USD "
            f"against teacher.budget ({limits}); "
            "the next call could exceed it. Every paid completion is in the call cache: raise "
            "teacher.budget and rerun to pay only for the rest."
        )

    def close(self) -> None:
        """Drop what this process still holds reserved: calls that never returned cost nothing."""
        with self._lock:
            self._db.execute(
                "DELETE FROM reserved WHERE run = ? AND host = ? AND pid = ?",
                (self.run, self.host, self.pid),
            )
            self._db.close()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True
