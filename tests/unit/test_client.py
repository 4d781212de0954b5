"""LLMClient alone, on a scripted backend: what is paid for, what is cached, what is settled."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from speed.llm.budget import BudgetExceeded, SpendGuard
from speed.llm.cache import CompletionCache, cache_key
from speed.llm.client import LLMClient
from speed.llm.ledger import Ledger, Price
from speed.llm.types import GenerationError, Request, Sampling
from tests.scripted import ScriptedBackend, StreamingBackend, last_user, words

PRICE = Price(prompt_per_m=1.0, completion_per_m=2.0)


def by_seed(request: Request, sample: int) -> str:
    """A different answer per prompt and per sample (sample i of a seeded request: seed + i)."""
    return f"{last_user(request)} answered with seed {request.sampling.seed} sample {sample}"


def ask(text: str, n: int = 1, seed: int | None = 100, id: str | None = None) -> Request:
    return Request.chat(
        [{"role": "user", "content": text}],
        Sampling(temperature=1.0, max_tokens=16, seed=seed),
        n=n,
        id=id,
    )


def ledger_rows(stream: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


@pytest.fixture
def cache(tmp_path: Path):
    cache = CompletionCache(tmp_path / "completions.sqlite")
    yield cache
    cache.close()


def test_a_partly_cached_n_request_pays_only_for_the_missing_samples(cache):
    backend = ScriptedBackend(by_seed)
    first = LLMClient(backend, cache).generate([ask("tell a story", n=2, id="a")])
    assert [c.text for c in first[0]] == [
        "tell a story answered with seed 100 sample 0",
        "tell a story answered with seed 101 sample 0",
    ]

    backend.calls.clear()
    stream = io.StringIO()
    client = LLMClient(backend, cache, Ledger(stream, "test", "scripted", PRICE))
    (again,) = client.generate([ask("tell a story", n=3, id="a")])

    # the backend was asked for sample 2 alone (seed 102), once
    assert [(r.n, r.sampling.seed) for r in backend.requests] == [(1, 102)]
    assert [c.text for c in again] == [c.text for c in first[0]] + [
        "tell a story answered with seed 102 sample 0"
    ]
    assert [c.cached for c in again] == [True, True, False]
    assert (client.cache_hits, client.backend_calls) == (2, 1)
    rows = ledger_rows(stream)
    assert [(r["request_id"], r["samples"], r["cached"]) for r in rows] == [
        ("a", 1, True),
        ("a", 1, True),
        ("a", 1, False),
    ]
    fresh = again[2]
    assert [r["usd"] for r in rows] == [
        0.0,
        0.0,
        pytest.approx(PRICE.usd(fresh.prompt_tokens, fresh.completion_tokens)),
    ]
    assert len(cache) == 3


def test_unseeded_samples_of_one_request_are_each_generated(cache):
    """Without a seed the n samples are identical requests but distinct cache entries."""
    counter = iter(range(100))
    backend = ScriptedBackend(lambda r, i: f"sample {next(counter)}")
    (out,) = LLMClient(backend, cache).generate([ask("x", n=3, seed=None)])
    assert len(backend.requests) == 3 and len(cache) == 3
    assert len({c.text for c in out}) == 3


def test_identical_requests_in_one_batch_are_generated_once(cache):
    """The cache is content-addressed: two requests with the same key are one call, answered
    alike, now and on a rerun (paying twice would also leave the cache holding only one)."""
    counter = iter(range(100))
    backend = ScriptedBackend(lambda r, i: f"answer {next(counter)}")
    stream = io.StringIO()
    client = LLMClient(backend, cache, Ledger(stream, "test", "scripted", PRICE))
    batch = [ask("same", id="p1"), ask("other", id="p2"), ask("same", id="p3")]
    out = client.generate(batch)

    assert [last_user(r) for r in backend.requests] == ["same", "other"]
    assert [o[0].text for o in out] == ["answer 0", "answer 1", "answer 0"]
    assert [o[0].cached for o in out] == [False, False, True]
    assert (client.backend_calls, client.cache_hits) == (2, 1)
    rows = ledger_rows(stream)
    paid = {r["request_id"]: r["usd"] > 0 for r in rows}
    assert paid == {"p1": True, "p2": True, "p3": False}

    rerun = LLMClient(backend, cache).generate(batch)
    assert [o[0].text for o in rerun] == [o[0].text for o in out]
    assert len(backend.requests) == 2


def test_a_failing_chunk_under_a_budget_keeps_its_answers_and_settles(cache, tmp_path):
    """Chunks of 2; in the second chunk request 3 fails after request 2 was answered."""
    backend = ScriptedBackend(by_seed, fail=lambda r: last_user(r) == "q3")
    guard = SpendGuard(tmp_path / "spend.sqlite", "run", {"max_calls": 10}, PRICE)
    stream = io.StringIO()
    client = LLMClient(
        backend, cache, Ledger(stream, "test", "scripted", PRICE), flush_every=2, budget=guard
    )
    batch = [ask(f"q{i}", id=f"r{i}") for i in range(5)]
    with pytest.raises(GenerationError, match="scripted failure"):
        client.generate(batch)

    # two generate calls; the fifth request was never sent
    assert [[last_user(r) for r in call] for call in backend.calls] == [["q0", "q1"], ["q2", "q3"]]
    assert len(cache) == 3 and client.backend_calls == 3
    assert [r["request_id"] for r in ledger_rows(stream)] == ["r0", "r1", "r2"]

    # what was paid is spent; nothing stays reserved (not q3's worst case, not q4's)
    answered = [batch[0], batch[1], batch[2]]
    prompt = sum(words(last_user(r)) for r in answered)
    completion = sum(words(by_seed(r, 0)) for r in answered)
    assert guard.spent() == {
        "calls": 3,
        "tokens": prompt + completion,
        "usd": pytest.approx(PRICE.usd(prompt, completion)),
    }
    held = guard._db.execute("SELECT calls, tokens, usd FROM reserved").fetchall()
    assert held == [(0, 0, 0.0)]

    # a rerun pays only for the two requests that were not answered
    backend.fail, backend.calls = None, []
    out = LLMClient(backend, cache, flush_every=2, budget=guard).generate(batch)
    assert [last_user(r) for r in backend.requests] == ["q3", "q4"]
    assert [o[0].cached for o in out] == [True, True, True, False, False]
    assert guard.spent()["calls"] == 5
    guard.close()


def test_a_chunk_is_cut_to_the_budget_and_the_paid_part_kept(cache, tmp_path):
    backend = ScriptedBackend(by_seed)
    guard = SpendGuard(tmp_path / "spend.sqlite", "run", {"max_calls": 3}, PRICE)
    client = LLMClient(backend, cache, flush_every=10, budget=guard)
    with pytest.raises(BudgetExceeded, match="max_calls 3"):
        client.generate([ask(f"q{i}") for i in range(5)])
    assert [[last_user(r) for r in call] for call in backend.calls] == [["q0", "q1", "q2"]]
    assert len(cache) == 3 and guard.spent()["calls"] == 3
    guard.close()


# --- a streaming backend (the OpenAI backend's path) --------------------------------------------


def test_a_streamed_answer_is_in_the_cache_before_the_slowest_request_answers(cache, tmp_path):
    """Request 0 answers last: each other answer is committed (another reader of the cache's
    folder sees it) while request 0 is still pending, whatever SPEED_CACHE_FLUSH_EVERY says."""
    batch = [ask(f"q{i}", id=f"r{i}") for i in range(4)]
    keys = [cache_key({"backend": "scripted", "model": "scripted"}, r, 0) for r in batch]
    seen: list[set[str]] = []

    def each(_pos: int) -> None:
        reader = CompletionCache(tmp_path / "completions.sqlite")
        seen.append(set(reader.get_many(keys)))
        reader.close(compact=False)

    backend = StreamingBackend(by_seed, order=lambda n: [*range(1, n), 0], each=each)
    stream = io.StringIO()
    client = LLMClient(backend, cache, Ledger(stream, "test", "scripted", PRICE), flush_every=64)
    out = client.generate(batch)
    assert seen == [set(keys[1:2]), set(keys[1:3]), set(keys[1:4]), set(keys)]
    assert [r["request_id"] for r in ledger_rows(stream)] == ["r1", "r2", "r3", "r0"]
    assert [o[0].text for o in out] == [by_seed(r, 0) for r in batch]


def test_streaming_under_a_budget_reserves_before_sending_and_settles(cache, tmp_path):
    guard = SpendGuard(tmp_path / "spend.sqlite", "run", {"max_calls": 3}, PRICE)
    held: list[float] = []
    backend = StreamingBackend(by_seed, each=lambda _pos: held.append(guard.spent()["calls"]))
    client = LLMClient(backend, cache, budget=guard)
    with pytest.raises(BudgetExceeded, match="max_calls 3"):
        client.generate([ask(f"q{i}") for i in range(5)])
    # The three that fit were reserved before any was sent: spent + reserved stays 3.
    assert held == [3, 3, 3]
    assert [[last_user(r) for r in call] for call in backend.calls] == [["q0", "q1", "q2"]]
    assert len(cache) == 3 and guard.spent()["calls"] == 3
    assert guard._db.execute("SELECT calls FROM reserved").fetchall() == [(0,)]
    guard.close()


def test_a_failed_stream_keeps_its_answers_and_releases_the_rest(cache, tmp_path):
    backend = StreamingBackend(by_seed, fail=lambda r: last_user(r) == "q1")
    guard = SpendGuard(tmp_path / "spend.sqlite", "run", {"max_calls": 10}, PRICE)
    client = LLMClient(backend, cache, budget=guard)
    batch = [ask(f"q{i}") for i in range(3)]
    with pytest.raises(GenerationError, match="scripted failure"):
        client.generate(batch)
    assert len(cache) == 2 and guard.spent()["calls"] == 2  # q1's worst case released
    backend.fail, backend.calls = None, []
    out = LLMClient(backend, cache, budget=guard).generate(batch)
    assert [last_user(r) for r in backend.requests] == ["q1"]
    assert [o[0].cached for o in out] == [True, False, True]
    guard.close()
