"""Any OpenAI-compatible chat endpoint: OpenAI, Azure, a vLLM server, `transformers serve`.

Requests run concurrently (bounded); the openai client retries 408/409/429/5xx, timeouts and
dropped connections with exponential backoff and jitter, `max_attempts` tries in all.

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
import time
from dataclasses import dataclass, field
from typing import Any

from speed.llm import schema as strict_schema
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


def _attempts_made(err: Exception) -> int | None:
    """How many tries the openai client made: it numbers each one in `x-stainless-retry-count`."""
    request = getattr(err, "request", None)
    try:
        return int(request.headers["x-stainless-retry-count"]) + 1  # type: ignore[union-attr]
    except (AttributeError, KeyError, TypeError, ValueError):
        return None


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
        from openai import AsyncOpenAI, OpenAI

        return (AsyncOpenAI if asynchronous else OpenAI)(
            api_key=self._api_key,
            base_url=self.base_url,
            max_retries=self.max_attempts - 1,
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

    async def _one(self, client: Any, sem: asyncio.Semaphore, run: _Run, request: Request):
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
                return await self._send(client, sem, run, request, body)
            finally:
                if run.stop is None:
                    self._cleared.update(keys)
                for k in keys:
                    run.gates[k].set()
        return await self._send(client, sem, run, request, body)

    async def _send(
        self, client: Any, sem: asyncio.Semaphore, run: _Run, request: Request, body: dict
    ) -> list[Completion]:
        from openai import APIError

        async with sem:
            if run.stop is not None:
                raise _NotSent
            start = time.perf_counter()
            try:
                resp = await client.chat.completions.create(**body)
            except APIError as err:
                outcome = self._failed(err, run, request)
                if isinstance(outcome, Exception):
                    raise outcome from None
                return outcome
            latency = time.perf_counter() - start
        return self._completions(resp, request, latency)

    def _failed(self, err: Any, run: _Run, request: Request) -> Exception | list[Completion]:
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
        # 4xx other than 408/409/429 are not retried: count the attempts really made.
        attempts = _attempts_made(err) or self.max_attempts
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

    async def _all(self, requests: list[Request]) -> list[list[Completion]]:
        sem, run = asyncio.Semaphore(self.max_concurrency), _Run()
        async with self._client() as client:
            results = await asyncio.gather(
                *(self._one(client, sem, run, r) for r in requests), return_exceptions=True
            )
        # The answered requests were billed: hand them up with the error.
        done = {i: r for i, r in enumerate(results) if not isinstance(r, BaseException)}
        if run.stop is not None:
            unsent = sum(isinstance(r, _NotSent) for r in results)
            more = f" ({unsent} of {len(requests)} requests not sent)" if unsent else ""
            raise type(run.stop)(f"{run.stop}{more}", done)
        failed = [r for r in results if isinstance(r, BaseException)]
        if failed:
            more = f" ({len(failed)} of {len(requests)} requests failed)" if len(failed) > 1 else ""
            raise TeacherAPIError(f"{self.scrub(failed[0])}{more}", done) from failed[0]
        return results  # type: ignore[return-value]

    def generate(self, requests: list[Request]) -> list[list[Completion]]:
        return asyncio.run(self._all(requests))

    def close(self) -> None:
        pass
