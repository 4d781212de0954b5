"""Cache- and ledger-aware front of every backend: the only way stages call an LLM."""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import replace

from tqdm import tqdm

from speed.llm.budget import BudgetExceeded, SpendGuard
from speed.llm.cache import CompletionCache, cache_key
from speed.llm.ledger import Ledger
from speed.llm.types import DROPPED, Backend, Completion, GenerationError, Request

log = logging.getLogger(__name__)

# Streaming backends: requests reserved against the budget at a time, ahead of those sent.
RESERVE_BLOCK = 16


def expand_samples(request: Request) -> list[Request]:
    """One n=1 request per sample. Sample i of a seeded request gets seed + i, so every sample
    is reproducible on its own and a partly cached request pays only for its missing samples."""
    seed = request.sampling.seed
    return [
        replace(
            request,
            n=1,
            sampling=replace(request.sampling, seed=None if seed is None else seed + i),
        )
        for i in range(request.n)
    ]


class LLMClient:
    def __init__(
        self,
        backend: Backend,
        cache: CompletionCache,
        ledger: Ledger | None = None,
        flush_every: int | None = None,
        budget: SpendGuard | None = None,
    ):
        # How many samples are generated between cache commits: an operational knob (it never
        # changes an output), so it comes from the environment, not the config. A backend that
        # works in large units (the OpenAI Batch API) sets its own.
        flush_every = (
            getattr(backend, "chunk_size", None)
            or flush_every
            or int(os.environ.get("SPEED_CACHE_FLUSH_EVERY", "64"))
        )
        self.backend, self.cache, self.ledger, self.flush_every = (
            backend,
            cache,
            ledger,
            flush_every,
        )
        self.budget = budget
        self.backend_calls = 0
        self.cache_hits = 0

    def generate(self, requests: list[Request]) -> list[list[Completion]]:
        samples = [(ri, s) for ri, r in enumerate(requests) for s in expand_samples(r)]
        keys = [
            cache_key(self.backend.identity, requests[ri], i)
            for ri, r in enumerate(requests)
            for i in range(r.n)
        ]
        found = self.cache.get_many(keys)
        results: list[list[Completion]] = [[] for _ in requests]
        # A sample whose key an earlier sample of this batch has is the same call: generate it
        # once and answer both alike (paying twice would leave the cache holding only one).
        first: dict[str, int] = {}
        todo: list[tuple[int, int, Request]] = []
        for idx, (ri, s) in enumerate(samples):
            if keys[idx] not in found and keys[idx] not in first:
                first[keys[idx]] = idx
                todo.append((idx, ri, s))
        done: dict[int, Completion] = {}
        for idx, (_ri, _s) in enumerate(samples):
            if keys[idx] in found:
                done[idx] = replace(found[keys[idx]], cached=True)
                self.cache_hits += 1
                self._record(requests[samples[idx][0]], done[idx])
        log.info("%d samples: %d cached, %d to generate", len(samples), len(found), len(todo))

        progress = tqdm(total=len(todo), desc="generate", unit="sample", mininterval=10)
        if callable(getattr(self.backend, "stream", None)):
            self._stream(todo, keys, requests, done, progress)
        else:
            self._chunks(todo, keys, requests, done, progress)
        progress.close()

        for idx, (ri, _s) in enumerate(samples):
            if idx not in done:  # a repeat of an earlier sample of this batch: nothing paid
                done[idx] = replace(done[first[keys[idx]]], cached=True)
                self.cache_hits += 1
                self._record(requests[ri], done[idx])
            results[ri].append(done[idx])
        return results

    def _chunks(self, todo, keys, requests, done, progress) -> None:
        """Generate in chunks of `flush_every`, each committed to the cache as it returns, so
        a killed job keeps every chunk it finished. A budget guard may cut a chunk to what the
        budget still allows, or stop the job."""
        start = 0
        while start < len(todo):
            chunk = todo[start : start + self.flush_every]
            sent = [s for _idx, _ri, s in chunk]
            if self.budget is not None:
                fits = self.budget.reserve(sent)
                chunk, sent = chunk[:fits], sent[:fits]
            try:
                outputs = dict(enumerate(self.backend.generate(sent)))
            except GenerationError as err:
                # Keep what the failed call did answer (it is paid for) before giving up.
                self._keep(chunk, sent, err.done, keys, requests, done)
                raise
            self._keep(chunk, sent, outputs, keys, requests, done)
            start += len(chunk)
            progress.update(len(chunk))
            log.info("generated %d/%d (in the cache)", start, len(todo))

    def _stream(self, todo, keys, requests, done, progress) -> None:
        """A streaming backend (OpenAI): each answer is committed to the cache and the ledger
        as it arrives, and the pool stays full. The budget is reserved `RESERVE_BLOCK` requests
        at a time before they are sent, and settled as answers come (`_Settler`); a pass ends
        when a reservation does not fit, and the next pass starts once the answers of this one
        are settled (what they really cost frees what their worst case held)."""
        start = 0
        while start < len(todo):
            start += self._pass(todo[start:], keys, requests, done, progress)
            log.info("generated %d/%d (in the cache)", start, len(todo))

    def _pass(self, rest, keys, requests, done, progress) -> int:
        """One streaming pass over `rest`; how many of its requests were sent (and answered)."""
        sent = [s for _idx, _ri, s in rest]
        settler = _Settler(self.budget, sent)  # reserves the first block or raises

        def on_answer(pos: int, out: list[Completion]) -> None:
            self._keep([rest[pos]], [sent[pos]], {0: out}, keys, requests, done, settle=False)
            settler.answered(pos, out[0])
            progress.update(1)

        try:
            self.backend.stream(sent, on_answer, settler.admit)  # type: ignore[attr-defined]
        finally:
            settler.close()
        return settler.admitted

    def _keep(
        self,
        chunk: list[tuple[int, int, Request]],
        sent: list[Request],
        outputs: dict[int, list[Completion]],
        keys: list[str],
        requests: list[Request],
        done: dict[int, Completion],
        settle: bool = True,
    ) -> None:
        """Cache, ledger and settle the answered samples of a chunk (`outputs` by position).
        A dropped sample (refused as too long: unanswered, unbilled) is handed to the stage,
        which counts it, but never cached: a rerun asks again, for free."""
        if settle and self.budget is not None:
            self.budget.settle(sent, [out[0] for out in outputs.values() if not out[0].dropped])
        self.backend_calls += len(outputs)
        fresh = {}
        for pos, out in outputs.items():
            idx, ri, _s = chunk[pos]
            done[idx] = out[0]
            if not out[0].dropped:
                fresh[keys[idx]] = out[0]
                self._record(requests[ri], out[0])
        if dropped := len(outputs) - len(fresh):
            log.warning("%d samples dropped (%s); not cached", dropped, ", ".join(sorted(DROPPED)))
        self.cache.put_many(fresh)

    def _record(self, request: Request, completion: Completion) -> None:
        if self.ledger is not None and not completion.dropped:
            self.ledger.record(
                request.id,
                1,
                completion.prompt_tokens,
                completion.completion_tokens,
                completion.cached,
                completion.latency_s,
            )


class _Settler:
    """The budget of one streaming pass: reserves the worst case `RESERVE_BLOCK` requests at a
    time before they are sent, and replaces it by what the answers cost from a thread of its
    own, so the event loop never waits on the spend table (a shared SQLite file, ~15 ms a
    commit): each commit settles every answer that came since the last, so a killed job leaves
    at most one commit's answers unsettled. `close` settles the rest and releases what was
    reserved for requests never answered. Without a budget it admits everything."""

    def __init__(self, budget: SpendGuard | None, sent: list[Request]):
        self.budget, self.sent = budget, sent
        self.reserved = len(sent) if budget is None else 0
        self.admitted = 0
        self.pending: list[tuple[int, Completion]] = []
        self.settled: set[int] = set()
        self.error: BaseException | None = None
        self._cv = threading.Condition()
        self._closing = False
        if budget is None:
            return
        self.reserved = budget.reserve(sent[:RESERVE_BLOCK])  # nothing fits: BudgetExceeded
        self._thread = threading.Thread(target=self._run, name="settle", daemon=True)
        self._thread.start()

    def admit(self, pos: int) -> bool:
        if pos >= self.reserved and self.budget is not None:
            try:
                self.reserved += self.budget.reserve(self.sent[pos : pos + RESERVE_BLOCK])
            except BudgetExceeded:
                return False  # the next pass tries again once this one is settled
        if pos >= self.reserved:
            return False
        self.admitted = pos + 1
        return True

    def answered(self, pos: int, completion: Completion) -> None:
        if self.budget is None:
            return
        with self._cv:
            self.pending.append((pos, completion))
            self._cv.notify()

    def _run(self) -> None:
        assert self.budget is not None
        while True:
            with self._cv:
                self._cv.wait_for(lambda: self.pending or self._closing)
                batch, self.pending = self.pending, []
            if not batch:
                return
            try:
                self.budget.settle(
                    [self.sent[pos] for pos, _c in batch], [c for _p, c in batch if not c.dropped]
                )
            except BaseException as err:  # raised by close, in the job's thread
                self.error = err
                return
            self.settled.update(pos for pos, _c in batch)

    def close(self) -> None:
        if self.budget is None:
            return
        with self._cv:
            self._closing = True
            self._cv.notify()
        self._thread.join()
        if self.error is not None:
            raise self.error
        unanswered = [self.sent[i] for i in range(self.reserved) if i not in self.settled]
        if unanswered:
            self.budget.settle(unanswered, [])
