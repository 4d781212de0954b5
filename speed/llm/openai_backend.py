"""Any OpenAI-compatible chat endpoint: OpenAI, Azure, a vLLM server, `transformers serve`.

Requests run concurrently (bounded); the openai client retries 408/409/429/5xx, timeouts and
dropped connections with exponential backoff and jitter, `max_attempts` tries in all.
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

from speed.llm.secrets import scrub
from speed.llm.types import Completion, GenerationError, Request, parse_structured


class TeacherAPIError(GenerationError):
    pass


def api_key_from_env(var: str) -> str:
    key = os.environ.get(var)
    if not key:
        raise TeacherAPIError(
            f"environment variable {var} (teacher.openai.api_key_env) is not set: "
            "export the API key there before running teacher stages"
        )
    return key


def _attempts_made(err: Exception) -> int | None:
    """How many tries the openai client made: it numbers each one in `x-stainless-retry-count`."""
    request = getattr(err, "request", None)
    try:
        return int(request.headers["x-stainless-retry-count"]) + 1  # type: ignore[union-attr]
    except (AttributeError, KeyError, TypeError, ValueError):
        return None


class OpenAIBackend:
    def __init__(
        self,
        model: str,
        base_url: str | None,
        api_key_env: str,
        max_concurrency: int = 8,
        max_attempts: int = 5,
        timeout_s: float = 120.0,
        response_format: bool = True,
    ):
        # The key is read here and lives only inside the client: it never reaches the identity,
        # the cache, the ledger or a log line.
        self._api_key = api_key_from_env(api_key_env)
        self.model = model
        self.base_url = base_url
        self.max_concurrency = max_concurrency
        self.max_attempts = max_attempts
        self.timeout_s = timeout_s
        self.response_format = response_format
        self.identity = {"backend": "openai", "model": model, "base_url": base_url}

    @property
    def where(self) -> str:
        return self.base_url or "the OpenAI API"

    def scrub(self, text: object) -> str:
        """A server's text made safe for a log line or an exception: servers echo keys."""
        return scrub(str(text), (self._api_key,))

    def _client(self, asynchronous: bool = True) -> Any:
        from openai import AsyncOpenAI, OpenAI

        return (AsyncOpenAI if asynchronous else OpenAI)(
            api_key=self._api_key,
            base_url=self.base_url,
            max_retries=self.max_attempts - 1,
            timeout=self.timeout_s,
        )

    def _body(self, request: Request) -> dict[str, Any]:
        s = request.sampling
        body: dict[str, Any] = {
            "model": self.model,
            "messages": list(request.messages),
            "temperature": s.temperature,
            "top_p": s.top_p,
            "max_tokens": s.max_tokens,
            "n": request.n,
        }
        if s.seed is not None:
            body["seed"] = s.seed
        if request.schema is not None and self.response_format:
            body["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "output", "schema": request.schema, "strict": True},
            }
        return body

    async def _one(self, client: Any, sem: asyncio.Semaphore, request: Request) -> list[Completion]:
        from openai import APIError

        async with sem:
            start = time.perf_counter()
            try:
                resp = await client.chat.completions.create(**self._body(request))
            except APIError as err:
                # 4xx other than 408/409/429 are not retried: count the attempts really made.
                attempts = _attempts_made(err) or self.max_attempts
                # Not chained: a traceback would print the server's unscrubbed text again.
                raise TeacherAPIError(
                    f"teacher request {request.id or ''} failed after {attempts} "
                    f"attempt{'s' if attempts != 1 else ''} at {self.where}: "
                    f"{type(err).__name__}: {self.scrub(err)}"
                ) from None
            latency = time.perf_counter() - start
        return self._completions(resp, request, latency)

    def _completions(self, resp: Any, request: Request, latency: float) -> list[Completion]:
        """The samples of one chat completion (an openai ChatCompletion)."""
        usage = resp.usage
        prompt_tokens = usage.prompt_tokens if usage else 0
        completion_tokens = usage.completion_tokens if usage else 0
        choices = sorted(resp.choices, key=lambda c: c.index)
        if len(choices) != request.n:
            # e.g. `transformers serve` ignores `n` and answers one choice.
            raise TeacherAPIError(
                f"teacher request {request.id or ''}: {self.where} returned {len(choices)} "
                f"choice(s) for {request.n} samples; the server may not support `n`"
            )
        out = []
        for i, choice in enumerate(choices):
            text = choice.message.content or ""
            out.append(
                Completion(
                    text=text,
                    finish_reason=choice.finish_reason,
                    # The prompt is billed once per call; put it on the first sample.
                    prompt_tokens=prompt_tokens if i == 0 else 0,
                    # Usage is per call: split it evenly, the remainder on the first sample,
                    # so the samples add up to what was billed.
                    completion_tokens=completion_tokens // len(choices)
                    + (completion_tokens % len(choices) if i == 0 else 0),
                    parsed=parse_structured(text, request.schema),
                    latency_s=latency,
                )
            )
        return out

    async def _all(self, requests: list[Request]) -> list[list[Completion]]:
        sem = asyncio.Semaphore(self.max_concurrency)
        async with self._client() as client:
            results = await asyncio.gather(
                *(self._one(client, sem, r) for r in requests), return_exceptions=True
            )
        failed = [r for r in results if isinstance(r, BaseException)]
        if failed:
            # The other requests were answered and billed: hand them up with the error.
            done = {i: r for i, r in enumerate(results) if not isinstance(r, BaseException)}
            more = f" ({len(failed)} of {len(requests)} requests failed)" if len(failed) > 1 else ""
            raise TeacherAPIError(f"{self.scrub(failed[0])}{more}", done) from failed[0]
        return results  # type: ignore[return-value]

    def generate(self, requests: list[Request]) -> list[list[Completion]]:
        return asyncio.run(self._all(requests))

    def close(self) -> None:
        pass
