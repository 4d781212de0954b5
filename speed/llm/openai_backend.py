"""Any OpenAI-compatible chat endpoint: OpenAI, Azure, a vLLM server, `transformers serve`.

Requests stream: up to 2 x `max_concurrency` are started at a time, each answer is handed to
the caller as it arrives (`stream`), and a slow request holds back no other. How many are on the
wire adapts to the server (speed/llm/limiter.py: AIMD on 429s, pacing by the x-ratelimit
headers, `max_concurrency` the ceiling). 408/409/429/5xx, timeouts and dropped connections are
retried here (the openai client's own retries are off, so every 429 reaches the limiter) after
the server's Retry-After or an exponential backoff with jitter, `max_attempts` tries in all.

How the schema of a request is sent depends on `response_format` (config/README.md lists which
OpenAI models support which): `json_schema` sends its strict subset (speed/llm/schema.py),
`json_object` asks for JSON mode and puts the full schema into the prompt, `none` sends no
format. Whatever the schema does not decode is checked by the stages after decoding.

Failures (docs/architecture.md, "The OpenAI contract"): a request the server refuses for its
shape (a 400 naming a parameter, an unknown model) or for its key (401/403) stops the job: the
first request of each shape is sent alone, so a wrong shape costs one refused request, and
nothing more is sent once one is refused. A request longer than the model's context is dropped
(`CONTEXT_LENGTH`) and the others go on.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from speed.llm import schema as strict_schema
from speed.llm.limiter import Limiter, retry_after
from speed.llm.secrets import scrub
from speed.llm.types import (
    CONTEXT_LENGTH,
    Completion,
    GenerationError,
    Request,
    parse_structured,
)

log = logging.getLogger(__name__)

RESPONSE_FORMATS = ("json_schema", "json_object", "none")
# Error codes OpenAI gives a request whose parameters (not its messages) are wrong.
SHAPE_CODES = frozenset(
    {"model_not_found", "unsupported_parameter", "unsupported_value", "invalid_value"}
)
# ... and a request whose messages are refused: that request fails, the others go on.
MESSAGE_CODES = frozenset({"content_filter", "content_policy_violation", "invalid_prompt"})


OnAnswer = Callable[[int, list[Completion]], None]
Admit = Callable[[int], bool] | None
RETRIED_STATUS = frozenset({408, 409, 429})


def _retryable(status: int) -> bool:
    return status in RETRIED_STATUS or status >= 500


def _backoff(attempt: int) -> float:
    """0.5 s doubling to at most 8 s, less up to a quarter of jitter (as the openai client)."""
    return min(0.5 * 2 ** (attempt - 1), 8.0) * (1 - 0.25 * random.random())


def rate_tokens(body: dict[str, Any]) -> int:
    """What a request counts against a tokens-per-minute limit, as OpenAI documents it: the
    prompt estimated from its characters (about 4 a token) plus max_tokens for each of `n`."""
    chars = sum(len(str(m.get("content") or "")) for m in body["messages"])
    return -(-chars // 4) + 4 * len(body["messages"]) + body["max_tokens"] * body.get("n", 1)


class TeacherAPIError(GenerationError):
    pass


class RequestRejected(TeacherAPIError):
    """The server refuses the request's shape or key: every other request would fail alike."""


def api_key_from_env(var: str) -> str:
    key = os.environ.get(var)
    if not key:
        raise TeacherAPIError(
            f"environment variable {var} (teacher.openai.api_key_env) is not set: "
            "export the API key there before running teacher stages"
        )
    return key


def server_message(err: Any) -> str:
    """The server's own words: `error.message` of OpenAI's error body, else the client's text."""
    body = getattr(err, "body", None)
    if isinstance(body, dict) and isinstance(body.get("message"), str):
        return body["message"]
    return str(err)


def failure_kind(status: int | None, code: str | None, param: str | None, message: str) -> str:
    """`auth`, `shape` (stop the job), `context_length` (drop the request) or `request`."""
    if status in (401, 403):
        return "auth"
    if code == "context_length_exceeded" or (
        status == 400 and "maximum context length" in message.lower()  # vLLM's wording
    ):
        return "context_length"
    if status == 404 or code in SHAPE_CODES:
        return "shape"
    if status in (400, 422):
        if code in MESSAGE_CODES or (param or "").startswith("messages"):
            return "request"
        return "shape"  # a parameter, or an unnamed refusal every request would get
    return "request"


def schema_instruction(schema: dict[str, Any]) -> str:
    """What JSON mode adds to the prompt: it decodes JSON, not the schema."""
    return (
        "Your reply must be one JSON object, with nothing before or after it, that is valid "
        "under this JSON Schema:\n" + json.dumps(schema, ensure_ascii=False)
    )


@dataclass
class _Run:
    """One generate() call: requests waiting on the first of their shape, and the refusal that
    stops the rest."""

    gates: dict[str, asyncio.Event] = field(default_factory=dict)
    stop: RequestRejected | None = None


class _NotSent(Exception):
    pass


def _with_system(messages: list[dict[str, str]], text: str) -> list[dict[str, str]]:
    """`text` as the system message: appended to the first one, or a new one before the rest."""
    if messages and messages[0]["role"] == "system":
        first = {**messages[0], "content": f"{messages[0]['content']}\n\n{text}"}
        return [first, *messages[1:]]
    return [{"role": "system", "content": text}, *messages]


class OpenAIBackend:
    def __init__(
        self,
        model: str,
        base_url: str | None,
        api_key_env: str,
        max_concurrency: int = 8,
        max_attempts: int = 5,
        timeout_s: float = 120.0,
        response_format: str = "json_schema",
        strict_subset: bool = True,
        adaptive: bool = True,
    ):
        if response_format not in RESPONSE_FORMATS:
            raise ValueError(
                f"teacher.openai.response_format is {response_format!r}; expected one of "
                f"{', '.join(RESPONSE_FORMATS)} (the old `true` is json_schema, `false` is none)"
            )
        # The key is read here and lives only inside the client: it never reaches the identity,
        # the cache, the ledger or a log line.
        self._api_key = api_key_from_env(api_key_env)
        self.api_key_env = api_key_env
        self.model = model
        self.base_url = base_url
        self.max_concurrency = max_concurrency
        self.max_attempts = max_attempts
        self.timeout_s = timeout_s
        # Adaptive concurrency (speed/llm/limiter.py); False: a fixed pool of max_concurrency.
        self.adaptive = adaptive
        self._window = float(max_concurrency)  # the limiter's window, kept from run to run
        self.limited = 0  # 429s received
        self.response_format = response_format
        # OpenAI refuses what its strict mode cannot decode; a local server (vLLM) decodes the
        # full schema, bounds included, so it can be sent whole.
        self.strict_subset = strict_subset
        # The mode decides what is decoded (and json_object changes the prompt): it is part of
        # what answered, so answers of one mode are never served for another.
        self.identity = {
            "backend": "openai",
            "model": model,
            "base_url": base_url,
            "response_format": response_format,
            **({} if strict_subset else {"strict_subset": False}),
        }
        self._cleared: set[str] = set()  # request shapes the server has accepted

    @property
    def where(self) -> str:
        return self.base_url or "the OpenAI API"

    def scrub(self, text: object) -> str:
        """A server's text made safe for a log line or an exception: servers echo keys."""
        return scrub(str(text), (self._api_key,))

    def _client(self, asynchronous: bool = True) -> Any:
        """The async client of `stream` retries nothing itself (`_send` does, so the limiter
        sees every refusal); the sync one (the Batch API's files and batches) retries."""
        from openai import AsyncOpenAI, OpenAI

        return (AsyncOpenAI if asynchronous else OpenAI)(
            api_key=self._api_key,
            base_url=self.base_url,
            max_retries=0 if asynchronous else self.max_attempts - 1,
            timeout=self.timeout_s,
        )

    def _body(self, request: Request) -> dict[str, Any]:
        s = request.sampling
        messages = list(request.messages)
        body: dict[str, Any] = {
            "model": self.model,
            "messages": messages,
            "temperature": s.temperature,
            "top_p": s.top_p,
            "max_tokens": s.max_tokens,
            "n": request.n,
        }
        if s.seed is not None:
            body["seed"] = s.seed
        if request.schema is None or self.response_format == "none":
            return body
        if self.response_format == "json_schema":
            body["response_format"] = {
                "type": "json_schema",
                "json_schema": {
                    "name": "output",
                    "schema": (
                        strict_schema.strict_subset(request.schema)
                        if self.strict_subset
                        else request.schema
                    ),
                    "strict": True,
                },
            }
            return body
        # json_object: JSON mode needs the word JSON in the messages, which the instruction has.
        body["response_format"] = {"type": "json_object"}
        body["messages"] = _with_system(messages, schema_instruction(request.schema))
        return body

    def refusal(
        self, request: Request, status: int | None, body: Any, kind: str
    ) -> RequestRejected:
        """The error that stops the job: OpenAI's message and the parameter it names; for a key,
        the variable that holds it (never the key: the server's text is scrubbed)."""
        body = body if isinstance(body, dict) else {}
        message = self.scrub(body.get("message") or body or "no message")
        param, code = body.get("param"), body.get("code")
        named = ", ".join(
            f"{k} {v}" for k, v in (("parameter", param), ("code", code)) if v is not None
        )
        what = f"HTTP {status}" + (f", {named}" if named else "")
        if kind == "auth":
            return RequestRejected(
                f"the teacher API at {self.where} refused the API key in the environment "
                f"variable {self.api_key_env} (teacher.openai.api_key_env) ({what}): {message}"
            )
        return RequestRejected(
            f"the teacher API at {self.where} refused request {request.id or ''} for model "
            f"{self.model} ({what}): {message}. Nothing more was sent: check teacher.model and "
            f"teacher.openai.response_format ({self.response_format}); config/README.md lists "
            "which OpenAI models support which format"
        )

    async def _one(self, client: Any, lim: Limiter, run: _Run, request: Request):
        """Send `request` once the server has accepted a request (any: the model, key and
        parameters are shared) and one of its shape (its schema, sampling): until then the
        first such request goes alone, so a refusal costs one request."""
        body = self._body(request)
        shape = json.dumps(
            {k: v for k, v in body.items() if k not in ("messages", "seed")}, sort_keys=True
        )
        for key in ("*", shape):
            if key in self._cleared:
                continue
            if key in run.gates:
                await run.gates[key].wait()
                continue
            # The first of its kind: probe alone for every gate not yet cleared.
            keys = [k for k in ("*", shape) if k not in self._cleared and k not in run.gates]
            for k in keys:
                run.gates[k] = asyncio.Event()
            try:
                return await self._send(client, lim, run, request, body)
            finally:
                if run.stop is None:
                    self._cleared.update(keys)
                for k in keys:
                    run.gates[k].set()
        return await self._send(client, lim, run, request, body)

    async def _send(
        self, client: Any, lim: Limiter, run: _Run, request: Request, body: dict
    ) -> list[Completion]:
        """Up to `max_attempts` tries: 408/409/429/5xx, timeouts and dropped connections are
        retried after the server's Retry-After or an exponential backoff with jitter. The
        client's own retries are off, so the limiter sees every 429 and its headers."""
        from openai import APIConnectionError, APIStatusError

        tokens = rate_tokens(body)
        for attempt in range(1, self.max_attempts + 1):
            if run.stop is not None:
                raise _NotSent
            async with lim.slot(tokens) as slot:
                if run.stop is not None:
                    raise _NotSent
                start = time.perf_counter()
                try:
                    raw = await client.chat.completions.with_raw_response.create(
                        **body, extra_headers={"x-stainless-retry-count": str(attempt - 1)}
                    )
                except APIStatusError as err:
                    slot.answered(err.status_code, err.response.headers)
                    wait = retry_after(err.response.headers)
                    if not _retryable(err.status_code) or attempt == self.max_attempts:
                        return self._outcome(err, run, request, attempt)
                except APIConnectionError as err:  # a timeout, a dropped connection
                    slot.answered(None, None)
                    wait = None
                    if attempt == self.max_attempts:
                        return self._outcome(err, run, request, attempt)
                else:
                    slot.answered(raw.status_code, raw.headers)
                    latency = time.perf_counter() - start
                    return self._completions(raw.parse(), request, latency)
            await asyncio.sleep(wait if wait is not None else _backoff(attempt))
        raise AssertionError("unreachable")

    def _outcome(self, err: Any, run: _Run, request: Request, attempts: int) -> list[Completion]:
        outcome = self._failed(err, run, request, attempts)
        if isinstance(outcome, Exception):
            raise outcome from None
        return outcome

    def _failed(
        self, err: Any, run: _Run, request: Request, attempts: int
    ) -> Exception | list[Completion]:
        """The error a refused or failed request raises, or, refused as too long, its answer:
        `n` dropped completions."""
        status = getattr(err, "status_code", None)
        body = getattr(err, "body", None)
        kind = failure_kind(
            status, getattr(err, "code", None), getattr(err, "param", None), server_message(err)
        )
        if kind == "context_length":
            log.warning(
                "request %s dropped (%s): %s",
                request.id,
                CONTEXT_LENGTH,
                self.scrub(server_message(err)),
            )
            return [Completion.refused(CONTEXT_LENGTH) for _ in range(request.n)]
        if kind in ("auth", "shape"):
            rejected = self.refusal(request, status, body, kind)
            run.stop = run.stop or rejected
            return rejected
        # Not chained: a traceback would print the server's unscrubbed text again.
        return TeacherAPIError(
            f"teacher request {request.id or ''} failed after {attempts} "
            f"attempt{'s' if attempts != 1 else ''} at {self.where}: "
            f"{type(err).__name__}: {self.scrub(err)}"
        )

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

    async def _stream(self, requests: list[Request], on_answer: OnAnswer, admit: Admit) -> None:
        """Keep up to `2 x max_concurrency` requests started (the limiter decides how many of
        them are on the wire): a slow request never holds back the ones after it."""
        run, lim = _Run(), Limiter(self.max_concurrency, adaptive=self.adaptive)
        lim.window = min(lim.window, self._window)
        room = asyncio.Semaphore(2 * self.max_concurrency)
        tasks: list[asyncio.Task] = []
        failed = False

        async def one(pos: int, request: Request) -> None:
            nonlocal failed
            try:
                on_answer(pos, await self._one(client, lim, run, request))
            except BaseException:
                failed = True
                raise
            finally:
                room.release()

        async with self._client() as client:
            for pos, request in enumerate(requests):
                await room.acquire()
                if failed or run.stop is not None or (admit is not None and not admit(pos)):
                    room.release()
                    break
                tasks.append(asyncio.create_task(one(pos, request)))
            results = await asyncio.gather(*tasks, return_exceptions=True)
        self._window, self.limited = lim.window, self.limited + lim.limited
        self._raise(results, len(requests) - len(tasks), run)

    def _raise(self, results: list[Any], unstarted: int, run: _Run) -> None:
        """The error of a run whose requests did not all succeed (their answers went up)."""
        total = len(results) + unstarted
        if run.stop is not None:
            unsent = unstarted + sum(isinstance(r, _NotSent) for r in results)
            more = f" ({unsent} of {total} requests not sent)" if unsent else ""
            raise type(run.stop)(f"{run.stop}{more}")
        failed = [r for r in results if isinstance(r, BaseException)]
        if not failed:
            return
        if not isinstance(failed[0], GenerationError):
            raise failed[0]  # not the server's: e.g. the cache could not be written
        more = f" ({len(failed)} of {total} requests failed)" if len(failed) > 1 else ""
        if unstarted:
            more += f" ({unstarted} of {total} requests not sent)"
        raise TeacherAPIError(f"{self.scrub(failed[0])}{more}") from failed[0]

    def stream(self, requests: list[Request], on_answer: OnAnswer, admit: Admit = None) -> None:
        """Send `requests` in order, calling `on_answer(position, completions)` as each answer
        arrives (so the caller commits it at once), and `admit(position)` before sending one:
        False stops sending (the rest are left for the caller). Raises after the requests in
        flight have ended when one fails for good."""
        asyncio.run(self._stream(requests, on_answer, admit))

    def generate(self, requests: list[Request]) -> list[list[Completion]]:
        answers: dict[int, list[Completion]] = {}
        try:
            self.stream(requests, answers.__setitem__)
        except GenerationError as err:
            err.done = answers  # the answered requests were billed: hand them up
            raise
        return [answers[i] for i in range(len(requests))]

    def close(self) -> None:
        pass
