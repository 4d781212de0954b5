"""The teacher ledger: one JSONL row per teacher call, with tokens, cache status and cost."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import IO


@dataclass(frozen=True)
class Price:
    """USD per million tokens."""

    prompt_per_m: float = 0.0
    completion_per_m: float = 0.0

    def usd(self, prompt_tokens: int, completion_tokens: int) -> float:
        return (prompt_tokens * self.prompt_per_m + completion_tokens * self.completion_per_m) / 1e6


@dataclass(frozen=True)
class LedgerRow:
    stage: str
    model: str
    request_id: str | None
    samples: int
    prompt_tokens: int
    completion_tokens: int
    cached: bool
    latency_s: float
    usd: float  # what this call cost now: 0 when every sample came from the cache


class Ledger:
    """Appends rows to an open file; the caller owns atomic placement of the file."""

    def __init__(self, stream: IO[str], stage: str, model: str, price: Price):
        self.stream, self.stage, self.model, self.price = stream, stage, model, price

    def record(
        self,
        request_id: str | None,
        samples: int,
        prompt_tokens: int,
        completion_tokens: int,
        cached: bool,
        latency_s: float,
    ) -> None:
        usd = 0.0 if cached else self.price.usd(prompt_tokens, completion_tokens)
        row = LedgerRow(
            self.stage,
            self.model,
            request_id,
            samples,
            prompt_tokens,
            completion_tokens,
            cached,
            round(latency_s, 4),
            usd,
        )
        self.stream.write(json.dumps(asdict(row)) + "\n")
        self.stream.flush()
