"""The teacher budget guard: never more paid calls/tokens than allowed, paid work kept."""

from __future__ import annotations

import multiprocessing as mp
import os

import pytest

from speed.llm.budget import ENV_VAR, BudgetExceeded, SpendGuard, budget_env
from speed.llm.cache import CompletionCache
from speed.llm.client import LLMClient
from speed.llm.ledger import Price
from speed.llm.types import Request, Sampling


def requests(n: int, max_tokens: int = 8) -> list[Request]:
    return [
        Request.chat(
            [{"role": "user", "content": f"say something about item {i}"}],
            Sampling(temperature=1.0, top_p=1.0, max_tokens=max_tokens, seed=i),
            id=f"r{i}",
        )
        for i in range(n)
    ]


def test_no_limits_means_no_guard(tmp_path, monkeypatch):
    monkeypatch.setenv(ENV_VAR, budget_env("results/x", None))
    assert SpendGuard.from_env(tmp_path, Price()) is None
    monkeypatch.delenv(ENV_VAR)
    assert SpendGuard.from_env(tmp_path, Price()) is None


def reserved(guard: SpendGuard) -> tuple[float, float, float]:
    """What the run's live jobs hold reserved (calls, tokens, usd), from the guard's own file."""
    return guard._db.execute(
        "SELECT COALESCE(SUM(calls), 0), COALESCE(SUM(tokens), 0), COALESCE(SUM(usd), 0) "
        "FROM reserved WHERE run = ?",
        (guard.run,),
    ).fetchone()


def test_reserve_cuts_to_what_fits_and_settle_counts_real_usage(tmp_path):
    from speed.llm.types import Completion

    price = Price(prompt_per_m=1.0, completion_per_m=2.0)
    guard = SpendGuard(tmp_path / "spend.sqlite", "run", {"max_calls": 3}, price)
    batch = requests(5)
    assert guard.reserve(batch) == 3
    with pytest.raises(BudgetExceeded, match="max_calls 3"):
        guard.reserve(requests(1))
    # Before settle: the worst case of the 3 calls is held, nothing is paid yet.
    worst = [guard.worst_case(r) for r in batch[:3]]
    held = (3, sum(t for _, t, _ in worst), sum(u for _, _, u in worst))
    assert reserved(guard) == pytest.approx(held)
    assert guard.spent() == {"calls": 3, "tokens": held[1], "usd": pytest.approx(held[2])}

    done = [Completion("x", "stop", prompt_tokens=7 + i, completion_tokens=2 * i) for i in range(3)]
    guard.settle(batch[:3], done)
    # After: the reservation is gone and the spend is the completions' real usage.
    assert reserved(guard) == (0, 0, 0)
    real_tokens = (7 + 2 * 0) + (8 + 2 * 1) + (9 + 2 * 2)  # 7 + 10 + 13 = 30
    real_usd = ((7 + 8 + 9) * 1.0 + (0 + 2 + 4) * 2.0) / 1e6
    assert real_tokens < held[1]  # so a settle that kept the worst case would show
    assert guard.spent() == {"calls": 3, "tokens": real_tokens, "usd": pytest.approx(real_usd)}
    with pytest.raises(BudgetExceeded, match="spent or reserved 3 calls"):
        guard.reserve(requests(1))  # real calls count against max_calls as reserved ones did


def test_token_limit_uses_the_worst_case_then_the_real_cost(tmp_path):
    from speed.llm.types import Completion

    price = Price(prompt_per_m=1.0, completion_per_m=2.0)
    guard = SpendGuard(tmp_path / "spend.sqlite", "run", {"max_tokens": 200}, price)
    batch = requests(10, max_tokens=40)
    worst = guard.worst_case(batch[0])[1]
    fits = guard.reserve(batch)
    assert fits == 200 // worst
    done = [Completion("x", "stop", prompt_tokens=10, completion_tokens=5) for _ in range(fits)]
    guard.settle(batch[:fits], done)
    assert guard.spent() == {"calls": fits, "tokens": 15 * fits, "usd": pytest.approx(20e-6 * fits)}


def _spend(path: str, n: int) -> None:
    from speed.llm.types import Completion

    guard = SpendGuard(path, "run", {"max_calls": 50}, Price())
    for _ in range(n):
        try:
            guard.reserve(requests(1))
        except BudgetExceeded:
            return
        guard.settle(requests(1), [Completion("x", "stop", 3, 4)])


def test_concurrent_jobs_share_one_budget(tmp_path):
    path = str(tmp_path / "spend.sqlite")
    procs = [mp.get_context("spawn").Process(target=_spend, args=(path, 40)) for _ in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert SpendGuard(path, "run", {}, Price()).spent()["calls"] == 50


def _reserve_and_die(path: str, n: int) -> None:
    SpendGuard(path, "run", {"max_calls": 5}, Price()).reserve(requests(n))
    os._exit(0)  # no settle, no close: as after kill -9


def test_a_dead_jobs_reservation_is_released_and_a_closed_one_is_dropped(tmp_path):
    path = str(tmp_path / "spend.sqlite")
    job = mp.get_context("spawn").Process(target=_reserve_and_die, args=(path, 4))
    job.start()
    job.join(60)
    assert job.exitcode == 0
    guard = SpendGuard(path, "run", {"max_calls": 5}, Price())  # finds pid gone, releases 4
    assert guard.spent()["calls"] == 0
    assert guard.reserve(requests(5)) == 5
    with pytest.raises(BudgetExceeded, match="spent or reserved 5 calls"):
        guard.reserve(requests(1))
    # a job that failed between reserve and settle paid nothing for those calls
    guard.close()
    assert SpendGuard(path, "run", {"max_calls": 5}, Price()).reserve(requests(5)) == 5


def test_a_run_over_budget_stops_and_keeps_what_it_paid(tmp_path, tiny_models):
    """The real tiny teacher on transformers: 12 requests, a budget of 5 calls."""
    from speed.llm.transformers_backend import TransformersBackend

    backend = TransformersBackend(tiny_models["teacher"], batch_size=4)
    cache = CompletionCache(tmp_path / "completions.sqlite")
    try:
        guard = SpendGuard(tmp_path / "spend.sqlite", "run", {"max_calls": 5}, Price())
        client = LLMClient(backend, cache, budget=guard, flush_every=4)
        with pytest.raises(BudgetExceeded, match="raise teacher.budget"):
            client.generate(requests(12))
        assert client.backend_calls == 5 and len(cache) == 5

        # a larger budget: the 5 paid completions come from the cache, 7 are new
        guard = SpendGuard(tmp_path / "spend.sqlite", "run", {"max_calls": 12}, Price())
        client = LLMClient(backend, cache, budget=guard, flush_every=4)
        results = client.generate(requests(12))
        assert len(results) == 12 and client.cache_hits == 5 and client.backend_calls == 7
        assert guard.spent()["calls"] == 12
    finally:
        backend.close()
        cache.close()
