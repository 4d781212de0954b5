"""How fast the call cache writes and looks up, at --n entries: the log store (one append-only
log per process, safe on NFS) against the SQLite cache it replaced (WAL, one host only) and
SQLite in rollback-journal mode (the NFS-allowed way to keep SQLite).

    python benchmarks/cache.py [--n 100000] [--size 1500] [--jobs 40] [--dir /tmp] [--only-log]

For each store: writes/s in commits of 64 (the client's chunk) and in single-entry commits (one
answer at a time, as API answers will be committed), the time a job needs to open the store,
and lookups/s for hits (random order) and misses, in calls of 64 keys and of 10,000. The log
store is also measured as --jobs closed logs (jobs that ended without merging) and after merging
them into one. The stores are measured in turn (writes in interleaved slices, lookups the best
of 3 rounds), so a change in a shared machine's load falls on all of them alike.

Durability differs: the log store and SQLite DELETE (synchronous=FULL) fsync every commit; the
old WAL cache (synchronous=NORMAL) did not, so a node crash could lose its last commits. That
fsync is most of the cost of a single-entry commit.
"""

from __future__ import annotations

import argparse
import json
import random
import sqlite3
import tempfile
import time
from pathlib import Path

from speed.llm.cache import CompletionCache
from speed.llm.types import Completion


class SqliteCache:
    """The cache as it was (journal="WAL", synchronous NORMAL), or in rollback-journal mode."""

    def __init__(self, path: Path, journal: str):
        self._db = sqlite3.connect(path, timeout=600.0, isolation_level=None)
        self._db.execute(f"PRAGMA journal_mode={journal}")
        self._db.execute(f"PRAGMA synchronous={'NORMAL' if journal == 'WAL' else 'FULL'}")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS completions "
            "(key TEXT PRIMARY KEY, value TEXT NOT NULL, created REAL NOT NULL)"
        )

    def get_many(self, keys: list[str]) -> dict[str, Completion]:
        found = {}
        for start in range(0, len(keys), 500):
            chunk = keys[start : start + 500]
            marks = ",".join("?" * len(chunk))
            q = f"SELECT key, value FROM completions WHERE key IN ({marks})"
            for key, value in self._db.execute(q, chunk):
                found[key] = Completion(**json.loads(value))
        return found

    def put_many(self, items: dict[str, Completion]) -> None:
        now = time.time()
        rows = [(k, json.dumps(c.to_json()), now) for k, c in items.items()]
        with self._db:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.executemany("INSERT OR REPLACE INTO completions VALUES (?, ?, ?)", rows)

    def close(self, compact: bool = False) -> None:
        self._db.close()


def entries(n: int, size: int, tag: str = "") -> dict[str, Completion]:
    rng = random.Random(0)
    return {
        f"{tag}{rng.getrandbits(256):064x}": Completion(
            "x" * size, "stop", prompt_tokens=200, completion_tokens=size // 4
        )
        for _ in range(n)
    }


def interleaved_writes(caches: dict, items: dict, batch: int, slices: int = 20) -> dict:
    """writes/s of each store, its slices of `items` written in turn with the others', so a
    change in the machine's load falls on every store alike."""
    keys, spent = list(items), dict.fromkeys(caches, 0.0)
    step = -(-len(keys) // slices)
    for s in range(0, len(keys), step):
        part = keys[s : s + step]
        for name, cache in caches.items():
            t = time.perf_counter()
            for start in range(0, len(part), batch):
                cache.put_many({k: items[k] for k in part[start : start + batch]})
            spent[name] += time.perf_counter() - t
    return {name: len(keys) / dt for name, dt in spent.items()}


def lookup_rates(cache, keys: list[str], misses: list[str]) -> dict[str, float]:
    out = {}
    shuffled = random.Random(1).sample(keys, len(keys))
    for label, ks in (("hit", shuffled), ("miss", misses)):
        for call in (64, 10_000):
            t = time.perf_counter()
            for s in range(0, len(ks), call):
                got = cache.get_many(ks[s : s + call])
                assert len(got) == (len(ks[s : s + call]) if label == "hit" else 0)
            out[f"{label}/{call}"] = len(ks) / (time.perf_counter() - t)
    return out


def lookups(openers: dict, keys: list[str], misses: list[str], rounds: int = 3) -> dict:
    """Per store: the time to open it, and lookups/s, best of `rounds` rounds taken in turn."""
    res: dict[str, dict[str, float]] = {name: {} for name in openers}
    for _ in range(rounds):
        for name, opener in openers.items():
            t = time.perf_counter()
            cache = opener()
            rates = {"open_s": -(time.perf_counter() - t), **lookup_rates(cache, keys, misses)}
            cache.close(compact=False)
            for k, v in rates.items():
                res[name][k] = max(res[name].get(k, v), v)
    for r in res.values():
        r["open_s"] = -r["open_s"]
    return res


def job_logs(root: Path, items: dict, jobs: int) -> None:
    """The log store as `jobs` closed logs, as jobs that ended without merging leave it."""
    keys = list(items)
    per = -(-len(keys) // jobs)
    for j in range(jobs):
        cache = CompletionCache(root)
        for s in range(j * per, min((j + 1) * per, len(keys)), 64):
            cache.put_many({k: items[k] for k in keys[s : min(s + 64, (j + 1) * per)]})
        cache.close(compact=False)


def row(name: str, r: dict[str, float]) -> str:
    cells = "".join(f"{r[c]:>13,.0f}" if c in r else " " * 13 for c in COLS)
    return f"{name:<22}{cells}{r['open_s']:>9.3f}"


COLS = ["write/64", "write/1", "hit/64", "hit/10000", "miss/64", "miss/10000"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--size", type=int, default=1500, help="characters per answer")
    ap.add_argument("--single", type=int, default=2000, help="single-entry commits to time")
    ap.add_argument("--jobs", type=int, default=40)
    ap.add_argument("--dir", default=None)
    ap.add_argument("--only-log", action="store_true", help="skip the SQLite stores")
    args = ap.parse_args()
    items, single = entries(args.n, args.size), entries(args.single, args.size, tag="s")
    misses = list(entries(args.n // 10, 8, tag="m"))
    print(f"{args.n:,} entries of {args.size} characters; rates per second, open in seconds")
    print(f"{'store':<22}" + "".join(f"{c:>13}" for c in COLS) + f"{'open_s':>9}")
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        root = Path(tmp)
        openers = {"log (new)": lambda: CompletionCache(root / "log")}
        if not args.only_log:
            openers["sqlite WAL (old)"] = lambda: SqliteCache(root / "w.sqlite", "WAL")
            openers["sqlite DELETE"] = lambda: SqliteCache(root / "d.sqlite", "DELETE")
        caches = {name: opener() for name, opener in openers.items()}
        w64 = interleaved_writes(caches, items, 64)
        w1 = interleaved_writes(caches, single, 1)
        for cache in caches.values():
            cache.close(compact=False)
        res = lookups(openers, list(items), misses)
        for name in openers:
            res[name].update({"write/64": w64[name], "write/1": w1[name]})
            print(row(name, res[name]))
        job_logs(root / "jobs", items, args.jobs)
        jobs = lookups({"j": lambda: CompletionCache(root / "jobs")}, list(items), misses)["j"]
        print(row(f"log, {args.jobs} job logs", jobs))
        cache = CompletionCache(root / "jobs")
        t = time.perf_counter()
        cache.compact()
        print(
            f"  (merging {args.jobs} logs of {args.n:,} entries: {time.perf_counter() - t:.2f} s)"
        )
        cache.close(compact=False)
        merged = lookups({"m": lambda: CompletionCache(root / "jobs")}, list(items), misses)["m"]
        print(row("log, merged", merged))
    if not args.only_log:
        new, old = res["log (new)"], res["sqlite WAL (old)"]
        print("new / old: " + ", ".join(f"{c} {new[c] / old[c]:.2f}x" for c in COLS))


if __name__ == "__main__":
    main()
