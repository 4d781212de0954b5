"""The OpenAI backend's limiter: AIMD window, pacing by rate-limit headers, Retry-After."""

from __future__ import annotations

import asyncio
import time

import pytest

from speed.llm.limiter import Limiter, parse_duration, retry_after


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def headers(kind: str, limit: int, remaining: int, reset: str) -> dict[str, str]:
    return {
        f"x-ratelimit-limit-{kind}": str(limit),
        f"x-ratelimit-remaining-{kind}": str(remaining),
        f"x-ratelimit-reset-{kind}": reset,
    }


def start(limiter: Limiter, tokens: int = 10) -> int:
    """A start as _acquire books it, without the event loop."""
    limiter.started += 1
    limiter._tokens_at[limiter.started] = limiter.tokens_started
    limiter.tokens_started += tokens
    limiter.starts[limiter.started] = (tokens, limiter.clock())
    limiter.in_flight += 1
    return limiter.started


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("20ms", 0.02), ("1.5s", 1.5), ("6m0s", 360.0), ("1h2m3s", 3723.0), ("2", 2.0)],
)
def test_go_durations(text, seconds):
    assert parse_duration(text) == pytest.approx(seconds)


def test_unreadable_durations_and_retry_after():
    assert parse_duration("soon") is None and parse_duration(None) is None
    assert retry_after({"retry-after": "3"}) == 3.0
    assert retry_after({"retry-after-ms": "250", "retry-after": "1"}) == 0.25
    assert retry_after({"retry-after": "Wed, 21 Oct 2015"}) is None
    assert retry_after(None) is None


def test_additive_increase_multiplicative_decrease_once_per_window():
    clock = Clock()
    lim = Limiter(8, clock=clock)
    assert lim.window == 8
    seqs = [start(lim) for _ in range(4)]
    lim.observe(seqs[0], 429, {"retry-after": "1"})
    assert lim.window == 4
    # 429s of requests sent before the cut do not cut again: they are the same overshoot.
    lim.observe(seqs[1], 429, {"retry-after": "1"})
    assert lim.window == 4 and lim.limited == 2
    later = start(lim)
    lim.observe(later, 429, None)
    assert lim.window == 2
    for _ in range(10):
        lim.observe(start(lim), 200, None)
    assert 2 < lim.window <= 8  # +1/window per answer
    for _ in range(200):
        lim.observe(start(lim), 200, None)
    assert lim.window == 8  # never above the ceiling


def test_the_window_never_drops_below_one():
    lim = Limiter(2, clock=Clock())
    for _ in range(5):
        lim.observe(start(lim), 429, None)
    assert lim.window == 1.0


def test_retry_after_pauses_every_start():
    clock = Clock()
    lim = Limiter(4, clock=clock)
    lim.observe(start(lim), 429, {"retry-after": "2"})
    assert lim.wait_s(1, clock.now) == pytest.approx(2.0)
    clock.now += 1.5
    assert lim.wait_s(1, clock.now) == pytest.approx(0.5)
    fixed = Limiter(4, adaptive=False, clock=clock)
    fixed.observe(start(fixed), 429, {"retry-after": "2"})
    assert fixed.wait_s(1, clock.now) == pytest.approx(2.0) and fixed.window == 4


def test_pacing_by_remaining_requests_counts_what_was_sent_since():
    clock = Clock()
    lim = Limiter(16, clock=clock, margin_s=0.0)
    first = start(lim)
    start(lim)  # sent after `first`: the server counts it after `first`'s headers
    # 60 per 60 s: one a second; 1 left after `first`, the second start took it.
    lim.observe(first, 200, headers("requests", 60, 1, "59s"))
    assert lim.rate_of("requests") == pytest.approx(1.0)
    assert lim.left("requests", clock.now) == pytest.approx(0.0)
    assert lim.wait_s(1, clock.now) == pytest.approx(1.0)
    clock.now += 0.25
    assert lim.wait_s(1, clock.now) == pytest.approx(0.75)
    clock.now += 1.0
    assert lim.wait_s(1, clock.now) == 0


def test_pacing_by_remaining_tokens():
    clock = Clock()
    lim = Limiter(16, clock=clock, margin_s=0.01)
    first = start(lim, tokens=100)
    start(lim, tokens=300)
    # 6000 tokens per 60 s = 100/s; 500 left after `first`, 300 taken since: 200 left.
    lim.observe(first, 200, headers("tokens", 6000, 500, "55s"))
    assert lim.left("tokens", clock.now) == pytest.approx(200)
    assert lim.wait_s(200, clock.now) == 0
    assert lim.wait_s(400, clock.now) == pytest.approx(2.0 + 0.01)  # and the margin


def test_the_freshest_headers_win():
    clock = Clock()
    lim = Limiter(4, clock=clock)
    old, new = start(lim), start(lim)
    lim.observe(new, 200, headers("requests", 60, 30, "30s"))
    lim.observe(old, 200, headers("requests", 60, 0, "1m0s"))  # answered late, says less
    assert lim.buckets["requests"].seq == new


def test_a_fixed_pool_ignores_the_headers():
    clock = Clock()
    lim = Limiter(4, adaptive=False, clock=clock)
    lim.observe(start(lim), 200, headers("requests", 60, 0, "1m0s"))
    assert lim.wait_s(1, clock.now) == 0


def test_slots_bound_in_flight_and_follow_the_window():
    lim = Limiter(3)
    peak = 0
    after_cut: list[int] = []  # requests in flight at each start after the 429

    async def one(i: int) -> None:
        nonlocal peak
        async with lim.slot(1) as slot:
            peak = max(peak, lim.in_flight)
            if lim.limited:
                after_cut.append(lim.in_flight)
            await asyncio.sleep(0.02)
            slot.answered(429 if i == 0 else 200, None)

    async def main() -> None:
        await asyncio.gather(*(one(i) for i in range(12)))

    asyncio.run(main())
    assert peak == 3 and lim.in_flight == 0 and lim.limited == 1
    # Halved to 1.5 by the 429: one at a time, then two, as +1/window steps grow it back.
    assert after_cut[0] == 1 and max(after_cut) <= 3 and lim.window <= 3


def test_slots_wait_for_the_bucket_to_refill():
    """One request left after the first, refilling at 20/s: the third start waits ~50 ms."""
    lim = Limiter(8)
    times: list[float] = []

    async def one(i: int) -> None:
        async with lim.slot(1) as slot:
            times.append(time.monotonic())
            if i == 0:
                slot.answered(200, headers("requests", 20, 1, "950ms"))

    async def main() -> None:
        await one(0)
        await asyncio.gather(*(one(i) for i in (1, 2)))

    asyncio.run(main())
    assert times[2] - times[1] >= 0.04
