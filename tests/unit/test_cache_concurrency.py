"""The call cache and the spend table under real concurrent processes, kills and torn writes.

No NFS mount can be made here. What an NFS mount changes is tested where it can be: the cache
never creates SQLite WAL/shm files (nothing relies on memory shared between hosts), readers
trust only whole, checksummed records and reopen logs to see other writers' appends, and the
two locks there are (the spend table's SQLite rollback-journal locks and the cache's merge lock)
are POSIX fcntl locks, the kind NFSv4 carries to the server; they are checked across processes.
"""

from __future__ import annotations

import fcntl
import multiprocessing as mp
import os
import signal
import sqlite3
import time
from pathlib import Path

import pytest

from speed.llm import compaction, logstore
from speed.llm.budget import SpendGuard
from speed.llm.cache import CompletionCache
from speed.llm.ledger import Price
from speed.llm.types import Completion, Request, Sampling

SPAWN = mp.get_context("spawn")


def answer(key: str, size: int = 100) -> Completion:
    """An answer whose text can be checked whole from its key alone."""
    body = (key + "|") * (size // (len(key) + 1) + 1)
    return Completion(
        text=body[:size] + key, finish_reason="stop", prompt_tokens=len(key), completion_tokens=size
    )


def whole(key: str, c: Completion, size: int = 100) -> bool:
    return c == answer(key, size)


def small_logs() -> None:
    """Rotate, checkpoint and merge at a test's scale (a paper-scale log holds 65,536)."""
    logstore.CHECKPOINT_RECORDS, logstore.ROTATE_RECORDS = 40, 250


def _write(root: str, prefix: str, n: int, shared: int) -> None:
    small_logs()
    cache = CompletionCache(root)
    for i in range(n):  # commits of 1 and of 7 entries, as per-answer and per-chunk callers do
        batch = {f"{prefix}{j}": answer(f"{prefix}{j}") for j in range(i, i + 1 + 6 * (i % 2))}
        cache.put_many(batch)
    for j in range(shared):  # every writer answers these too: a race on the same call
        cache.put_many({f"shared{j}": answer(f"shared{j}", 50 + len(prefix) * 10)})
    cache.close()


def test_processes_writing_at_once_lose_nothing(tmp_path):
    root = tmp_path / "completions"
    prefixes = ["a", "bb", "ccc", "dddd"]
    procs = [SPAWN.Process(target=_write, args=(str(root), p, 600, 30)) for p in prefixes]
    for p in procs:
        p.start()
    for p in procs:
        p.join(180)
        assert p.exitcode == 0
    keys = [f"{p}{i}" for p in prefixes for i in range(606)]
    cache = CompletionCache(root)
    found = cache.get_many(keys)
    assert len(found) == len(keys) and all(whole(k, found[k]) for k in keys)
    assert len(cache) == len(keys) + 30
    assert cache.check() == []
    # The racing writers' answers to the shared keys: one each, the same for every reader,
    # before and after every log is merged into one.
    shared = [f"shared{j}" for j in range(30)]
    before = cache.get_many(shared)
    assert len(before) == 30 and before == CompletionCache(root).get_many(shared)
    assert all(c in [answer(k, 50 + 10 * len(p)) for p in prefixes] for k, c in before.items())
    assert cache.compact() > 1
    assert len(list(root.glob("*.log"))) == 1
    assert CompletionCache(root).get_many(shared) == before
    assert len(CompletionCache(root).get_many(keys)) == len(keys)


def _write_big(root: str, batch: int, size: int, conn) -> None:
    cache = CompletionCache(root)
    done = 0
    while True:
        cache.put_many({f"k{i}": answer(f"k{i}", size) for i in range(done, done + batch)})
        done += batch
        conn.send(done)


def test_a_writer_killed_mid_commit_loses_only_that_commit(tmp_path):
    root, batch, size = tmp_path / "completions", 8, 200_000  # 1.6 MB commits: kills land in one
    here, there = SPAWN.Pipe()
    proc = SPAWN.Process(target=_write_big, args=(str(root), batch, size, there))
    proc.start()
    committed = 0
    while committed < 40 * batch:
        committed = here.recv()
    os.kill(proc.pid, signal.SIGKILL)
    proc.join()
    while here.poll():
        committed = here.recv()
    cache = CompletionCache(root)
    assert cache.check() == []
    found = cache.get_many([f"k{i}" for i in range(committed + batch)])
    # Every commit acknowledged is there, whole; of the one in flight, all or none.
    assert len(found) in (committed, committed + batch)
    assert all(whole(k, c, size) for k, c in found.items())


def _write_three(root: str) -> None:
    cache = CompletionCache(root)
    for key in ("first", "second", "third"):
        cache.put_many({key: answer(key, 300)})
    os._exit(0)  # no close: the log is left as a killed writer leaves it


def test_no_prefix_of_a_log_shows_a_partial_entry(tmp_path):
    """Every length a torn log can have (a killed writer, a node lost before its data reached
    the server): exactly the entries whose records are whole are visible."""
    proc = SPAWN.Process(target=_write_three, args=(str(tmp_path / "src"),))
    proc.start()
    proc.join(60)
    (log,) = (tmp_path / "src").glob("*.log")
    data = log.read_bytes()
    ends = [r.offset + r.length for r in _records(log)]
    assert len(ends) == 3
    for cut in range(ends[0] - 40, len(data) + 1):
        root = tmp_path / f"cut{cut}"
        root.mkdir()
        (root / log.name).write_bytes(data[:cut] + b"\0" * 17)  # zeros: an unwritten NFS page
        found = CompletionCache(root).get_many(["first", "second", "third", "none"])
        expected = ["first", "second", "third"][: sum(e <= cut for e in ends)]
        assert sorted(found) == sorted(expected), cut
        assert all(whole(k, c, 300) for k, c in found.items())
        if cut % 97 == 0:
            assert compaction.check(root) == []  # a torn tail of an open log is no fault


def _records(log: Path):
    from speed.llm import segment

    fd = os.open(log, os.O_RDONLY)
    try:
        _, start = segment.read_log_header(fd)
        return list(segment.scan(fd, start, os.fstat(fd).st_size))
    finally:
        os.close(fd)


def _read_while_written(root: str, keys: list[str], size: int, stop, conn) -> None:
    cache = CompletionCache(root)
    cache.store.refresh_s = 0.0  # look for new entries at every call
    bad, seen = 0, []
    while not stop.is_set():
        found = cache.get_many(keys)
        starting = CompletionCache(root)  # a job starting now
        fresh = starting.get_many(keys)
        starting.close(compact=False)
        bad += sum(not whole(k, c, size) for k, c in {**found, **fresh}.items())
        seen.append(len(found))
    conn.send((bad, seen))


def test_readers_never_see_a_partial_entry(tmp_path):
    root, size = tmp_path / "completions", 300_000
    CompletionCache(root).close()
    keys = [f"k{i}" for i in range(120)]
    stop, (here, there) = SPAWN.Event(), SPAWN.Pipe()
    reader = SPAWN.Process(target=_read_while_written, args=(str(root), keys, size, stop, there))
    reader.start()
    cache = CompletionCache(root)
    for start in range(0, len(keys), 3):
        cache.put_many({k: answer(k, size) for k in keys[start : start + 3]})
        time.sleep(0.01)
    stop.set()
    bad, seen = here.recv()
    reader.join(60)
    assert bad == 0
    assert any(0 < n < len(keys) for n in seen), "the reader never ran beside the writer"
    assert seen == sorted(seen)  # what was visible stays visible


def test_the_store_holds_no_sqlite_shared_memory_files(tmp_path):
    cache = CompletionCache(tmp_path / "completions")
    cache.put_many({"k": answer("k")})
    cache.close()
    guard = SpendGuard(tmp_path / "spend.sqlite", "run", {"max_calls": 5}, Price())
    guard.reserve([Request.chat([{"role": "user", "content": "x"}], Sampling())])
    assert guard._db.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
    guard.close()
    names = [p.name for p in tmp_path.rglob("*")]
    assert not [n for n in names if n.endswith(("-wal", "-shm", "-journal"))], names


def _hold_spend_lock(path: str, conn) -> None:
    guard = SpendGuard(path, "run", {"max_calls": 100}, Price())
    guard._db.execute("BEGIN IMMEDIATE")
    guard._db.execute("UPDATE spend SET calls = 77 WHERE run = 'run'")  # never committed
    conn.send("holding")
    time.sleep(600)


def test_the_spend_table_lock_is_fcntl_and_survives_a_killed_holder(tmp_path):
    path = tmp_path / "spend.sqlite"
    SpendGuard(path, "run", {"max_calls": 100}, Price()).close()
    here, there = SPAWN.Pipe()
    holder = SPAWN.Process(target=_hold_spend_lock, args=(str(path), there))
    holder.start()
    assert here.recv() == "holding"
    # SQLite's RESERVED lock is an fcntl byte-range lock at 2**30 + 1: what NFSv4 carries.
    fd = os.open(path, os.O_RDWR)
    with pytest.raises(OSError):
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, 2**30 + 1)
    os.close(fd)
    other = sqlite3.connect(path, timeout=0.2)
    with pytest.raises(sqlite3.OperationalError, match="locked"):
        other.execute("BEGIN IMMEDIATE")
    other.close()
    os.kill(holder.pid, signal.SIGKILL)  # mid-transaction: a hot rollback journal is left
    holder.join()
    guard = SpendGuard(path, "run", {"max_calls": 100}, Price())
    assert guard.spent()["calls"] == 0  # the uncommitted update was rolled back
    assert guard._db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert guard.reserve([Request.chat([{"role": "user", "content": "x"}], Sampling())]) == 1
    guard.close()
    assert not list(tmp_path.glob("*-journal"))


def _hold_merge_lock(root: str, conn) -> None:
    fd = logstore.try_lock(Path(root) / "merge.lock")
    conn.send(fd is not None)
    time.sleep(600)


def test_one_merge_at_a_time_and_a_dead_merger_frees_the_lock(tmp_path):
    root = tmp_path / "completions"
    for i in range(3):
        cache = CompletionCache(root)
        cache.put_many({f"k{i}": answer(f"k{i}")})
        cache.close(compact=False)
    here, there = SPAWN.Pipe()
    holder = SPAWN.Process(target=_hold_merge_lock, args=(str(root), there))
    holder.start()
    assert here.recv() is True
    assert CompletionCache(root).compact() == 0  # another process is merging
    os.kill(holder.pid, signal.SIGKILL)
    holder.join()
    cache = CompletionCache(root)
    assert cache.compact() == 3
    assert len(cache.get_many(["k0", "k1", "k2"])) == 3 and len(list(root.glob("*.log"))) == 1


def _write_and_die(root: str, n: int) -> None:
    cache = CompletionCache(root)
    for i in range(n):
        cache.put_many({f"d{i}": answer(f"d{i}")})
    os._exit(0)


def test_a_dead_writers_log_is_closed_and_merged_by_a_job_on_its_host(tmp_path):
    root = tmp_path / "completions"
    proc = SPAWN.Process(target=_write_and_die, args=(str(root), 50))
    proc.start()
    proc.join(60)
    (dead,) = root.glob("*.log")
    assert not dead.with_suffix(".idx").exists()
    cache = CompletionCache(root)
    cache.put_many({"live": answer("live")})
    cache.close()  # closes its own log, finds the dead one's writer gone
    assert CompletionCache(root).compact() == 2
    assert not dead.exists()
    found = CompletionCache(root).get_many([f"d{i}" for i in range(50)] + ["live"])
    assert len(found) == 51 and all(whole(k, c) for k, c in found.items())


def test_a_forked_child_writes_its_own_log(tmp_path):
    root = tmp_path / "completions"
    cache = CompletionCache(root)
    cache.put_many({"parent0": answer("parent0")})
    child = mp.get_context("fork").Process(
        target=lambda: (cache.put_many({"child": answer("child")}), os._exit(0))
    )
    child.start()
    child.join(60)
    cache.put_many({"parent1": answer("parent1")})
    cache.close()
    assert len(list(root.glob("*.log"))) == 2  # the child's (closed by the parent: its pid is gone)
    fresh = CompletionCache(root)
    assert sorted(fresh.get_many(["parent0", "parent1", "child"])) == [
        "child",
        "parent0",
        "parent1",
    ]
    assert fresh.check() == []


def test_an_earlier_sqlite_cache_is_imported_once(tmp_path):
    old = sqlite3.connect(tmp_path / "completions.sqlite")
    old.execute("PRAGMA journal_mode=WAL")
    old.execute(
        "CREATE TABLE completions (key TEXT PRIMARY KEY, value TEXT NOT NULL, "
        "created REAL NOT NULL)"
    )
    import json

    rows = [(f"old{i}", json.dumps(answer(f"old{i}").to_json()), 1000.0 + i) for i in range(20)]
    old.executemany("INSERT INTO completions VALUES (?, ?, ?)", rows)
    old.commit()
    old.close()
    cache = CompletionCache(tmp_path / "completions")
    found = cache.get_many([f"old{i}" for i in range(20)])
    assert len(found) == 20 and all(whole(k, c) for k, c in found.items())
    logs = sorted(p.name for p in (tmp_path / "completions").glob("*.log"))
    CompletionCache(tmp_path / "completions").close()
    assert sorted(p.name for p in (tmp_path / "completions").glob("*.log")) == logs
    with pytest.raises(ValueError, match="earlier version"):
        CompletionCache(tmp_path / "completions.sqlite")


MOUNTS = """\
/dev/vda / ext4 rw,relatime 0 0
srv:/export /shared nfs4 rw,vers=4.2,hard,proto=tcp,local_lock=none 0 0
srv:/scratch /scratch nfs rw,vers=3,nolock,proto=tcp 0 0
srv:/home /home/u nfs4 rw,vers=4.1,local_lock=posix 0 0
mgs@tcp:/lfs /lustre lustre rw,flock 0 0
mgs@tcp:/lfs2 /lustre2 lustre rw,localflock 0 0
"""


def test_a_mount_whose_locks_stay_on_one_host_is_refused(tmp_path):
    from speed.llm.mounts import lock_problem

    assert lock_problem("/shared/cache", MOUNTS) is None
    assert lock_problem("/lustre/x/cache", MOUNTS) is None
    assert "nolock" in lock_problem("/scratch/run/.cache", MOUNTS)
    assert "local_lock=posix" in lock_problem("/home/u/.cache", MOUNTS)
    assert "localflock" in lock_problem("/lustre2/c", MOUNTS)
    assert lock_problem("/scratchy", MOUNTS) is None  # a prefix of the name is not the mount
    assert lock_problem(tmp_path) is None  # this machine's own disk


def _write_past_a_size_limit(root: str, conn) -> None:
    import resource

    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG
    cache = CompletionCache(root)
    resource.setrlimit(resource.RLIMIT_FSIZE, (150_000, 150_000))  # per file
    for i in range(12):
        cache.put_many({f"k{i}": answer(f"k{i}", 40_000)})  # about 3.5 commits fit in a file
        conn.send(i)
    os._exit(0)


def test_a_failed_write_is_written_again_to_a_new_log(tmp_path):
    """A commit whose write fails halfway (here the file size limit; a full disk alike) leaves
    a torn tail in its log and goes whole into a new one: every commit is there, once."""
    root = tmp_path / "completions"
    here, there = SPAWN.Pipe()
    proc = SPAWN.Process(target=_write_past_a_size_limit, args=(str(root), there))
    proc.start()
    proc.join(60)
    acked = []
    while here.poll():
        acked.append(here.recv())
    assert acked == list(range(12))
    logs = sorted(root.glob("*.log"))
    assert len(logs) >= 3
    assert any(os.path.getsize(p) == 150_000 for p in logs)  # the torn ones, cut at the limit
    cache = CompletionCache(root)
    found = cache.get_many([f"k{i}" for i in range(12)])
    assert len(found) == 12 and all(whole(k, c, 40_000) for k, c in found.items())
    assert cache.check() == []
