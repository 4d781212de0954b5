import os
import signal
import subprocess
import sys
import textwrap
import time

from speed.llm.cache import CompletionCache, cache_key
from speed.llm.types import Completion, Request, Sampling

WRITER = textwrap.dedent(
    """
    import sys
    from speed.llm.cache import CompletionCache
    from speed.llm.types import Completion
    path, prefix, n, batch = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    cache = CompletionCache(path)
    for start in range(0, n, batch):
        cache.put_many({
            f"{prefix}{i}": Completion(text="x" * 2000 + str(i), finish_reason="stop",
                                       prompt_tokens=i, completion_tokens=1)
            for i in range(start, min(start + batch, n))
        })
        print(min(start + batch, n), flush=True)
    """
)


def _writer(path, prefix, n, batch):
    return subprocess.Popen(
        [sys.executable, "-c", WRITER, str(path), prefix, str(n), str(batch)],
        stdout=subprocess.PIPE,
        text=True,
    )


def test_key_covers_what_decides_the_output_and_nothing_else():
    r = Request.chat([{"role": "user", "content": "hi"}], Sampling(seed=1), id="a")
    ident = {"model": "m", "adapter_hash": None}
    base = cache_key(ident, r, 0)
    assert cache_key(ident, Request.chat(r.messages, r.sampling, id="other"), 0) == base
    assert cache_key(ident, r, 1) != base
    assert cache_key({"model": "m", "adapter_hash": "abc"}, r, 0) != base
    assert cache_key(ident, Request.chat(r.messages, Sampling(seed=2)), 0) != base
    assert (
        cache_key(ident, Request.chat(r.messages, r.sampling, schema={"type": "object"}), 0) != base
    )
    assert (
        cache_key(ident, Request.chat([{"role": "user", "content": "ho"}], r.sampling), 0) != base
    )


def test_round_trip(tmp_path):
    cache = CompletionCache(tmp_path / "c.sqlite")
    c = Completion(
        text='{"a": 1}', finish_reason="stop", prompt_tokens=3, completion_tokens=4, parsed={"a": 1}
    )
    cache.put_many({"k": c})
    assert cache.get_many(["k", "missing"]) == {"k": c}


def test_two_processes_writing_concurrently_lose_nothing(tmp_path):
    path = tmp_path / "c.sqlite"
    CompletionCache(path).close()
    procs = [_writer(path, p, 600, 7) for p in ("a", "b")]
    for p in procs:
        p.communicate(timeout=120)
        assert p.returncode == 0
    cache = CompletionCache(path)
    assert len(cache) == 1200
    keys = [f"{p}{i}" for p in "ab" for i in range(600)]
    assert len(cache.get_many(keys)) == 1200


def test_sigkill_mid_write_leaves_a_readable_cache(tmp_path):
    path = tmp_path / "c.sqlite"
    proc = _writer(path, "k", 1_000_000, 50)
    committed = 0
    deadline = time.time() + 60
    while committed < 2000 and time.time() < deadline:
        committed = int(proc.stdout.readline())
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert committed >= 2000
    cache = CompletionCache(path)
    assert cache.check() == []
    found = cache.get_many([f"k{i}" for i in range(committed)])
    assert len(found) == committed
    assert found[f"k{committed - 1}"].text.endswith(str(committed - 1))
