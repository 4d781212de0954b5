"""How many requests the OpenAI backend has in flight, and when the next may start.

Two mechanisms, both fed by the server's answers:
- a window of requests in flight (AIMD): +1/window per answer, halved by a 429 (once per
  window: the 429s of requests sent before the last cut do not cut again), never above the
  ceiling (`max_concurrency`) nor below 1;
- pacing from the rate-limit headers OpenAI sends on every answer
  (`x-ratelimit-{limit,remaining,reset}-{requests,tokens}`): the freshest answer says how much
  of each bucket was left when its request arrived; less what was sent since, plus what refilled
  since (the bucket refills at (limit - remaining) / reset), is what is left now. A request
  starts when its bucket holds it. A 429's `Retry-After` pauses every start until then.

A server that sends no headers (vLLM, `transformers serve`) is paced by the window alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

KINDS = ("requests", "tokens")
# A paced start waits this much past the moment the bucket should hold it: the server took
# the header's request a little after this client sent it, so the refill is counted early.
PACE_MARGIN_S = 0.05
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")
_UNIT_S = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}


def parse_duration(text: str | None) -> float | None:
    """OpenAI's reset times are Go durations (`20ms`, `1.5s`, `6m0s`, `1h2m3s`); seconds."""
    if not text:
        return None
    text = text.strip()
    parts = _DURATION.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        try:
            return float(text)  # a bare number of seconds
        except ValueError:
            return None
    return sum(float(n) * _UNIT_S[u] for n, u in parts)


def retry_after(headers: Mapping[str, str] | None) -> float | None:
    """Seconds a refusal asks to wait: `retry-after-ms` (OpenAI's), else `retry-after`."""
    if not headers:
        return None
    for name, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        try:
            value = float(headers[name]) * scale
        except (KeyError, TypeError, ValueError):
            continue
        if 0 <= value <= 600:
            return value
    return None


@dataclass
class _Bucket:
    """What one rate-limit header set said: `remaining` after the request sent at `seq`
    (the `seq`-th start) and `at` (its start), refilling at `rate` a second."""

    remaining: float
    rate: float | None
    seq: int
    at: float


def read_bucket(headers: Mapping[str, str], kind: str, seq: int, at: float) -> _Bucket | None:
    try:
        remaining = float(headers[f"x-ratelimit-remaining-{kind}"])
    except (KeyError, TypeError, ValueError):
        return None
    rate = None
    reset = parse_duration(headers.get(f"x-ratelimit-reset-{kind}"))
    try:
        limit = float(headers[f"x-ratelimit-limit-{kind}"])
    except (KeyError, TypeError, ValueError):
        limit = None
    if limit is not None and reset and limit > remaining:
        rate = (limit - remaining) / reset
    return _Bucket(remaining, rate, seq, at)


class Limiter:
    """`async with limiter.slot(tokens) as slot:` around one attempt; `slot.answered(status,
    headers)` when its answer (or refusal) came. `adaptive=False`: a fixed pool of `ceiling`
    that only waits out Retry-After (the baseline the benchmark compares with)."""

    def __init__(
        self,
        ceiling: int,
        adaptive: bool = True,
        clock: Callable[[], float] = time.monotonic,
        margin_s: float = PACE_MARGIN_S,
    ):
        self.ceiling, self.adaptive, self.clock = max(1, ceiling), adaptive, clock
        self.margin_s = margin_s
        self.window = float(self.ceiling)
        self.in_flight = 0
        self.started = 0  # starts so far; a start's number is its seq
        self.starts: dict[int, tuple[int, float]] = {}  # seq -> (tokens, start time) in flight
        self.tokens_started = 0  # tokens of every start so far
        self._tokens_at: dict[int, int] = {}  # seq -> tokens_started before it
        self.not_before = 0.0
        self.cut_at = 0  # seq of the last start when the window was last cut
        self.buckets: dict[str, _Bucket] = {}
        self.limited = 0  # 429s seen
        self._cond = asyncio.Condition()

    # --- decisions (pure given the clock; unit-tested) ---

    def wait_s(self, tokens: int, now: float) -> float:
        """How long a start of `tokens` must wait (0: it may start now)."""
        wait = max(0.0, self.not_before - now)
        if not self.adaptive:
            return wait
        for kind, bucket in self.buckets.items():
            need = 1 if kind == "requests" else tokens
            left = self.left(kind, now)
            if left < need and bucket.rate:
                wait = max(wait, (need - left) / bucket.rate + self.margin_s)
        return wait

    def left(self, kind: str, now: float) -> float:
        """What the server's bucket of `kind` holds now, as far as this client can tell."""
        b = self.buckets[kind]
        if kind == "requests":
            since = self.started - b.seq
        else:
            since = self.tokens_started - self._tokens_at.get(b.seq + 1, self.tokens_started)
        refill = (b.rate or 0.0) * max(0.0, now - b.at)
        return b.remaining - since + refill

    def rate_of(self, kind: str) -> float | None:
        """How fast the server's bucket of `kind` refills (a second), as its headers tell."""
        bucket = self.buckets.get(kind)
        return bucket.rate if bucket else None

    def full(self) -> bool:
        return self.in_flight >= (int(self.window) if self.adaptive else self.ceiling)

    def observe(self, seq: int, status: int | None, headers: Mapping[str, str] | None) -> None:
        """Learn from the answer to start `seq` (status None: no answer, e.g. a timeout)."""
        _tokens, at = self.starts.get(seq, (0, self.clock()))
        if headers:
            for kind in KINDS:
                bucket = read_bucket(headers, kind, seq, at)
                if bucket is not None and seq >= self.buckets.get(kind, bucket).seq:
                    self.buckets[kind] = bucket
        if status == 429:
            self.limited += 1
            if (wait := retry_after(headers)) is not None:
                self.not_before = max(self.not_before, self.clock() + wait)
            if self.adaptive and seq > self.cut_at:
                self.window = max(1.0, self.window / 2)
                self.cut_at = self.started
        elif status == 200 and self.adaptive:
            self.window = min(float(self.ceiling), self.window + 1.0 / self.window)

    # --- the slot ---

    def slot(self, tokens: int) -> _Slot:
        return _Slot(self, tokens)

    async def _acquire(self, tokens: int) -> int:
        async with self._cond:
            while True:
                if self.full():
                    await self._cond.wait()
                    continue
                wait = self.wait_s(tokens, self.clock())
                if wait <= 0:
                    break
                with contextlib.suppress(TimeoutError):  # woken early by an answer's news
                    await asyncio.wait_for(self._cond.wait(), timeout=wait)
            self.started += 1
            self._tokens_at[self.started] = self.tokens_started
            self.tokens_started += tokens
            self.starts[self.started] = (tokens, self.clock())
            self.in_flight += 1
            return self.started

    async def _release(self, seq: int) -> None:
        async with self._cond:
            self.in_flight -= 1
            self.starts.pop(seq, None)
            # Keep the token counts of starts the freshest bucket may still refer to.
            oldest = min([b.seq for b in self.buckets.values()] + list(self.starts) + [seq])
            for old in [s for s in self._tokens_at if s < oldest]:
                del self._tokens_at[old]
            self._cond.notify_all()


class _Slot:
    def __init__(self, limiter: Limiter, tokens: int):
        self.limiter, self.tokens, self.seq = limiter, tokens, 0

    async def __aenter__(self) -> _Slot:
        self.seq = await self.limiter._acquire(self.tokens)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.limiter._release(self.seq)

    def answered(self, status: int | None, headers: Mapping[str, str] | None) -> None:
        self.limiter.observe(self.seq, status, headers)
