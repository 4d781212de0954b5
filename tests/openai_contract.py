"""OpenAI's chat completions contract on 127.0.0.1 for tests: what the real API refuses, how it
rate-limits and how it fails, with every answer a real completion of a real upstream model.

The real API cannot be reached from here, and local servers (vLLM, `transformers serve`) accept
any JSON schema and any parameter. This server checks each request the way OpenAI documents it
(the rules below are written from OpenAI's documentation, not from this project's code), answers
a violation with OpenAI's status and error body `{"error": {"message", "type", "param",
"code"}}`, and forwards an accepted request to an upstream OpenAI-compatible server (vLLM with
the tiny teacher in the tests), renamed to the upstream's model, so downstream stages get real
data.

Rules enforced (Structured Outputs guide, "Supported schemas"; JSON mode; error codes; rate
limits), in the most restrictive documented version:
- keys: a missing or unknown key is 401 `invalid_api_key`, its masked form echoed as OpenAI does;
- model: unknown names are 404 `model_not_found`; `MODELS` says which support `json_schema`
  (gpt-4o-2024-08-06 and later snapshots, gpt-4o-mini, gpt-4.1, o-series) and `json_object`
  (also gpt-4o-2024-05-13, gpt-4-turbo, gpt-3.5-turbo-1106 and later); reasoning models refuse
  `max_tokens` (`max_completion_tokens` instead) and any temperature/top_p but 1;
- parameters: unknown ones, out-of-range values, `max_tokens` above the model's output limit;
- `json_object` needs the word "json" in the messages;
- `json_schema` with `strict: true`: the root is an object (not anyOf); every object sets
  `additionalProperties: false` and lists every property in `required`; no keyword of the
  unsupported list (minLength, maxLength, pattern, format, minimum, maximum, multipleOf,
  minItems, maxItems, ...); types from the supported set; at most 5 levels of nesting, 100
  properties, 500 enum values, 15,000 characters of names and enum values;
- context: prompt (estimated at 4 characters a token) plus max_tokens above the model's window
  is 400 `context_length_exceeded`; so is the upstream's own refusal of a too long prompt;
- rate limits per key, requests and tokens per minute (token buckets; a request counts its
  estimated prompt plus max_tokens x n): 429 `rate_limit_exceeded` with `retry-after` and
  `x-ratelimit-{limit,remaining,reset}-{requests,tokens}` on every answer; a refused request
  counts toward the requests limit ("unsuccessful requests contribute to your per-minute
  limit"), so a client that resends at once only digs deeper.

The upstream stands in for OpenAI's model. A tiny random model cannot read instructions, so with
`follow_prompt_schema` on, a JSON-mode request whose system message holds a JSON Schema (as the
backend's json_object mode writes it) is decoded upstream under that schema: the stand-in for a
model that follows its prompt, so a DAG in JSON mode gets usable data. The checks are unchanged.

Faults for tests (`fault()`): `context_length` (400), `server_error` (500), `drop` (the
connection closes mid-answer) and `slow` (a delay before answering, fixed or drawn per request
for a long tail). `log` records every request with its status, so a test can count repeats.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import math
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from tests.servers import free_port


@dataclass(frozen=True)
class Model:
    json_schema: bool
    json_object: bool
    context_window: int = 128_000
    max_output: int = 16_384
    reasoning: bool = False  # o-series: max_completion_tokens only, default sampling only


_GPT4O_MAY = Model(json_schema=False, json_object=True, max_output=4_096)
_STRUCTURED = Model(json_schema=True, json_object=True)
_GPT41 = Model(json_schema=True, json_object=True, context_window=1_047_576, max_output=32_768)
_O_SERIES = Model(
    json_schema=True, json_object=True, context_window=200_000, max_output=100_000, reasoning=True
)
_TURBO = Model(json_schema=False, json_object=True, max_output=4_096)
_GPT35 = Model(json_schema=False, json_object=True, context_window=16_385, max_output=4_096)
_GPT4 = Model(json_schema=False, json_object=False, context_window=8_192, max_output=8_192)

MODELS: dict[str, Model] = {
    "gpt-4o-2024-05-13": _GPT4O_MAY,
    "gpt-4o": _STRUCTURED,  # the alias points at a structured-output snapshot
    "gpt-4o-2024-08-06": _STRUCTURED,
    "gpt-4o-2024-11-20": _STRUCTURED,
    "gpt-4o-mini": _STRUCTURED,
    "gpt-4o-mini-2024-07-18": _STRUCTURED,
    "gpt-4.1": _GPT41,
    "gpt-4.1-2025-04-14": _GPT41,
    "gpt-4.1-mini": _GPT41,
    "gpt-4.1-nano": _GPT41,
    "o1": _O_SERIES,
    "o3-mini": _O_SERIES,
    "o3": _O_SERIES,
    "o4-mini": _O_SERIES,
    "gpt-4-turbo": _TURBO,
    "gpt-4-turbo-2024-04-09": _TURBO,
    "gpt-4-0125-preview": _TURBO,
    "gpt-4-1106-preview": _TURBO,
    "gpt-3.5-turbo": _GPT35,
    "gpt-3.5-turbo-0125": _GPT35,
    "gpt-3.5-turbo-1106": _GPT35,
    "gpt-4": _GPT4,
    "gpt-4-0613": _GPT4,
}

KNOWN_PARAMS = frozenset(
    {
        "model", "messages", "temperature", "top_p", "n", "stream", "stream_options", "stop",
        "max_tokens", "max_completion_tokens", "presence_penalty", "frequency_penalty",
        "logit_bias", "logprobs", "top_logprobs", "user", "seed", "response_format", "tools",
        "tool_choice", "parallel_tool_calls", "service_tier", "store", "metadata",
        "reasoning_effort", "modalities", "audio", "prediction", "prompt_cache_key",
        "safety_identifier", "verbosity", "web_search_options",
    }
)  # fmt: skip
# Forwarded to the upstream (the rest is OpenAI's own business).
UPSTREAM_PARAMS = (
    "messages",
    "temperature",
    "top_p",
    "n",
    "stop",
    "seed",
    "response_format",
    "presence_penalty",
    "frequency_penalty",
    "logprobs",
    "top_logprobs",
)

UNSUPPORTED_KEYWORDS = (
    "minLength", "maxLength", "pattern", "format",
    "minimum", "maximum", "multipleOf", "exclusiveMinimum", "exclusiveMaximum",
    "patternProperties", "unevaluatedProperties", "propertyNames", "minProperties",
    "maxProperties",
    "unevaluatedItems", "contains", "minContains", "maxContains", "minItems", "maxItems",
    "uniqueItems",
    "allOf", "oneOf", "not", "if", "then", "else", "dependentRequired", "dependentSchemas",
)  # fmt: skip
SCHEMA_TYPES = frozenset({"string", "number", "integer", "boolean", "object", "array", "null"})
MAX_DEPTH, MAX_PROPERTIES, MAX_ENUM_VALUES, MAX_SCHEMA_CHARS = 5, 100, 500, 15_000
NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
ROLES = frozenset({"system", "developer", "user", "assistant", "tool"})


class Refusal(Exception):
    """An OpenAI error answer: HTTP status, the fields of its error body, extra headers."""

    def __init__(
        self,
        status: int,
        message: str,
        type_: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ):
        super().__init__(message)
        self.status, self.message, self.type = status, message, type_
        self.param, self.code, self.headers = param, code, headers or {}

    def body(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }


def _bad(message: str, param: str | None = None, code: str | None = None) -> Refusal:
    return Refusal(400, message, param=param, code=code)


# --- the strict schema subset ------------------------------------------------------------------


def schema_problem(schema: Any, name: str) -> str | None:
    """Why strict mode refuses `schema` (OpenAI's wording), or None when it accepts it."""
    prefix = f"Invalid schema for response_format '{name}': "
    if not isinstance(schema, dict):
        return prefix + "schema must be a JSON Schema object."
    if schema.get("type") != "object" or "anyOf" in schema:
        got = schema.get("type", "anyOf" if "anyOf" in schema else None)
        return (
            prefix + f"schema must be a JSON Schema of 'type: \"object\"', got 'type: \"{got}\"'."
        )
    counts = {"properties": 0, "enum": 0, "chars": 0}
    defs = {**schema.get("$defs", {}), **schema.get("definitions", {})}
    problem = _node_problem(schema, (), 1, counts, defs)
    if problem is None and counts["properties"] > MAX_PROPERTIES:
        problem = f"too many object properties ({counts['properties']} > {MAX_PROPERTIES})."
    if problem is None and counts["enum"] > MAX_ENUM_VALUES:
        problem = f"too many enum values ({counts['enum']} > {MAX_ENUM_VALUES})."
    if problem is None and counts["chars"] > MAX_SCHEMA_CHARS:
        problem = f"total string length of names and values exceeds {MAX_SCHEMA_CHARS}."
    return None if problem is None else prefix + problem


def _node_problem(node: Any, ctx: tuple, depth: int, counts: dict, defs: dict) -> str | None:
    where = f"In context={ctx!r}, "
    if not isinstance(node, dict):
        return where + "schema must be an object."
    for keyword in UNSUPPORTED_KEYWORDS:
        if keyword in node:
            return where + f"'{keyword}' is not permitted."
    if "$ref" in node:
        ref = node["$ref"]
        known = ref == "#" or ref.split("/")[-1] in defs
        return None if known else where + f"reference '{ref}' can't be resolved."
    if "anyOf" in node:
        for i, sub in enumerate(node["anyOf"]):
            if problem := _node_problem(sub, (*ctx, "anyOf", str(i)), depth, counts, defs):
                return problem
        return None
    types = node.get("type")
    types = types if isinstance(types, list) else [types]
    if "enum" not in node and "const" not in node and not all(t in SCHEMA_TYPES for t in types):
        return where + f"'type' {node.get('type')!r} is not supported."
    if "enum" in node:
        counts["enum"] += len(node["enum"])
        counts["chars"] += sum(len(str(v)) for v in node["enum"])
    if "object" in types:
        return _object_problem(node, ctx, depth, counts, defs)
    if "array" in types and "items" in node:
        return _node_problem(node["items"], (*ctx, "items"), depth, counts, defs)
    return None


def _object_problem(node: dict, ctx: tuple, depth: int, counts: dict, defs: dict) -> str | None:
    where = f"In context={ctx!r}, "
    if depth > MAX_DEPTH:
        return where + f"schema nesting exceeds {MAX_DEPTH} levels."
    if node.get("additionalProperties") is not False:
        return where + "'additionalProperties' is required to be supplied and to be false."
    props = node.get("properties", {})
    required = node.get("required")
    if not isinstance(required, list) or any(k not in required for k in props):
        missing = next(
            (k for k in props if not isinstance(required, list) or k not in required), ""
        )
        return where + (
            "'required' is required to be supplied and to be an array including every key in "
            f"properties. Missing '{missing}'."
        )
    if extra := [k for k in required if k not in props]:
        return where + f"Extra required key '{extra[0]}' supplied."
    counts["properties"] += len(props)
    counts["chars"] += sum(len(k) for k in props)
    for key, sub in props.items():
        if problem := _node_problem(sub, (*ctx, "properties", key), depth + 1, counts, defs):
            return problem
    return None


# --- one request ---------------------------------------------------------------------------------


def estimate_prompt_tokens(messages: list[dict[str, Any]]) -> int:
    """OpenAI counts with its tokenizer; a conservative estimate: 4 characters a token."""
    chars = sum(len(str(m.get("content") or "")) for m in messages)
    return math.ceil(chars / 4) + 4 * len(messages)


def completion_budget(body: dict[str, Any]) -> int:
    return int(body.get("max_completion_tokens") or body.get("max_tokens") or 4_096)


def check_request(body: Any) -> Model:
    """The model a valid request names; raises Refusal as OpenAI would for an invalid one."""
    if not isinstance(body, dict):
        raise _bad("We could not parse the JSON body of your request.")
    if unknown := sorted(set(body) - KNOWN_PARAMS):
        raise _bad(f"Unrecognized request argument supplied: {unknown[0]}")
    name = body.get("model")
    if not name:
        raise _bad("you must provide a model parameter", param="model")
    if name not in MODELS:
        raise Refusal(
            404,
            f"The model `{name}` does not exist or you do not have access to it.",
            code="model_not_found",
        )
    model = MODELS[name]
    _check_messages(body.get("messages"))
    _check_sampling(body, model)
    _check_response_format(body, model)
    return model


def _check_messages(messages: Any) -> None:
    if not isinstance(messages, list) or not messages:
        raise _bad(
            "Invalid 'messages': empty array. Expected an array with minimum length 1.",
            param="messages",
            code="empty_array",
        )
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or m.get("role") not in ROLES:
            raise _bad(
                f"Invalid value for 'messages[{i}].role'.",
                param=f"messages[{i}].role",
                code="invalid_value",
            )
        if "content" not in m:
            raise _bad(
                f"Missing required parameter: 'messages[{i}].content'.",
                param=f"messages[{i}].content",
                code="missing_required_parameter",
            )


def _check_sampling(body: dict[str, Any], model: Model) -> None:
    for key, low, high in (("temperature", 0, 2), ("top_p", 0, 1), ("n", 1, 128)):
        value = body.get(key)
        if value is not None and not (isinstance(value, int | float) and low <= value <= high):
            raise _bad(
                f"Invalid '{key}': {value!r} is outside [{low}, {high}].",
                param=key,
                code="invalid_value",
            )
    if model.reasoning:
        if "max_tokens" in body:
            raise _bad(
                "Unsupported parameter: 'max_tokens' is not supported with this model. "
                "Use 'max_completion_tokens' instead.",
                param="max_tokens",
                code="unsupported_parameter",
            )
        for key in ("temperature", "top_p"):
            if body.get(key, 1) != 1:
                raise _bad(
                    f"Unsupported value: '{key}' does not support {body[key]} with this "
                    "model. Only the default (1) value is supported.",
                    param=key,
                    code="unsupported_value",
                )
    for key in ("max_tokens", "max_completion_tokens"):
        value = body.get(key)
        if value is None:
            continue
        if not isinstance(value, int) or value < 1:
            raise _bad(f"Invalid '{key}': {value!r}.", param=key, code="invalid_value")
        if value > model.max_output:
            raise _bad(
                f"{key} is too large: {value}. This model supports at most "
                f"{model.max_output} completion tokens, whereas you provided {value}.",
                param=key,
                code="invalid_value",
            )


def _check_response_format(body: dict[str, Any], model: Model) -> None:
    fmt = body.get("response_format")
    if fmt is None:
        return
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    if kind not in ("text", "json_object", "json_schema"):
        raise _bad(
            f"Invalid value: '{kind}'. Supported values are: 'text', 'json_object' and "
            "'json_schema'.",
            param="response_format.type",
            code="invalid_value",
        )
    if kind == "json_object":
        if not model.json_object:
            raise _bad(
                "Invalid parameter: 'response_format' of type 'json_object' is not "
                "supported with this model.",
                param="response_format",
            )
        said = " ".join(str(m.get("content") or "") for m in body["messages"])
        if "json" not in said.lower():
            raise _bad(
                "'messages' must contain the word 'json' in some form, to use "
                "'response_format' of type 'json_object'.",
                param="messages",
            )
    if kind == "json_schema":
        _check_json_schema(fmt, model)


def _check_json_schema(fmt: dict[str, Any], model: Model) -> None:
    if not model.json_schema:
        raise _bad(
            "Invalid parameter: 'response_format' of type 'json_schema' is not supported "
            "with this model. Learn more about supported models at the Structured Outputs "
            "guide: https://platform.openai.com/docs/guides/structured-outputs",
            param="response_format",
        )
    spec = fmt.get("json_schema")
    if not isinstance(spec, dict):
        raise _bad(
            "Missing required parameter: 'response_format.json_schema'.",
            param="response_format.json_schema",
            code="missing_required_parameter",
        )
    name = spec.get("name")
    if not isinstance(name, str) or not NAME.match(name):
        raise _bad(
            f"Invalid 'response_format.json_schema.name': string does not match pattern. "
            f"Expected a string that matches the pattern '{NAME.pattern}'.",
            param="response_format.json_schema.name",
            code="invalid_value",
        )
    if spec.get("strict") is True and (problem := schema_problem(spec.get("schema"), name)):
        raise _bad(problem, param="response_format")


# --- rate limits ---------------------------------------------------------------------------------


def go_duration(seconds: float) -> str:
    """OpenAI writes reset times as Go durations: 20ms, 1.5s, 6m0s."""
    if seconds < 1:
        return f"{max(1, round(seconds * 1000))}ms"
    minutes, rest = divmod(seconds, 60)
    rest_s = f"{rest:.3f}".rstrip("0").rstrip(".")
    return f"{int(minutes)}m{rest_s}s" if minutes else f"{rest_s}s"


@dataclass
class Bucket:
    """`limit` per `minute_s`, refilled continuously (OpenAI's limits replenish the same way)."""

    limit: int
    minute_s: float
    level: float = -1.0
    at: float = field(default_factory=time.monotonic)

    def __post_init__(self) -> None:
        self.level = float(self.limit)

    def refill(self) -> None:
        now = time.monotonic()
        self.level = min(self.limit, self.level + (now - self.at) * self.limit / self.minute_s)
        self.at = now

    def wait_for(self, amount: float) -> float:
        return max(0.0, (amount - self.level) * self.minute_s / self.limit)

    def reset_in(self) -> float:
        return (self.limit - self.level) * self.minute_s / self.limit


@dataclass
class Key:
    rpm: int | None = None
    tpm: int | None = None
    buckets: dict[str, Bucket] = field(default_factory=dict)


@dataclass
class Fault:
    kind: str  # context_length | server_error | drop | slow
    when: Callable[[dict[str, Any]], bool] | None = None
    times: int | None = None  # None: every matching request
    delay_s: float | Callable[[], float] = 0.0


@dataclass
class Entry:
    """One request the server received: its body, the key's last 4 characters, the answer."""

    body: dict[str, Any]
    key_tail: str
    status: int | None = None  # None: the connection was dropped
    code: str | None = None
    fault: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    answer: dict[str, Any] | None = None  # the completion sent back
    at: float = field(default_factory=time.monotonic)


class ContractServer:
    """Run with `with ContractServer(upstream_url, upstream_model) as api:`; `api.url` is the
    base URL an openai client takes. `minute_s` shortens the rate-limit minute for tests."""

    def __init__(self, upstream: str, upstream_model: str, minute_s: float = 60.0):
        self.upstream = upstream.rstrip("/")
        self.upstream_model = upstream_model
        self.minute_s = minute_s
        self.follow_prompt_schema = False
        self.count_refused = True  # a 429 counts toward the requests limit, as OpenAI's do
        self.keys: dict[str, Key] = {}
        self.faults: list[Fault] = []
        self.log: list[Entry] = []
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self._server = uvicorn.Server(
            uvicorn.Config(self._app(), host="127.0.0.1", port=self.port, log_level="warning")
        )
        self._thread = threading.Thread(target=self._server.run, daemon=True)

    def __enter__(self) -> ContractServer:
        self._thread.start()
        while not self._server.started:
            time.sleep(0.05)
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)

    def add_key(self, key: str, rpm: int | None = None, tpm: int | None = None) -> None:
        self.keys[key] = Key(rpm, tpm)

    def reset(self) -> None:
        """No keys, faults or log: a module's server shared by its tests starts each afresh."""
        with self._lock:
            self.keys.clear()
            self.faults.clear()
            self.log.clear()

    def fault(self, kind: str, when=None, times: int | None = None, delay_s=0.0) -> Fault:
        assert kind in ("context_length", "server_error", "drop", "slow"), kind
        self.faults.append(Fault(kind, when, times, delay_s))
        return self.faults[-1]

    def entries(self, status: int | None = 200) -> list[Entry]:
        with self._lock:
            return [e for e in self.log if e.status == status]

    def repeats(self) -> int:
        """Requests answered 200 more than once (same body)."""
        bodies = [json.dumps(e.body, sort_keys=True) for e in self.entries(200)]
        return len(bodies) - len(set(bodies))

    # --- serving ---

    def _app(self) -> FastAPI:
        app = FastAPI()

        @app.post("/v1/chat/completions")
        async def chat(request: Request) -> Response:
            return await self._chat(request)

        @app.get("/v1/models")
        def models() -> dict[str, Any]:
            return {"object": "list", "data": [{"id": m, "object": "model"} for m in MODELS]}

        return app

    async def _chat(self, request: Request) -> Response:
        key = _bearer(request.headers.get("authorization"))
        try:
            body = await request.json()
        except ValueError:
            body = None
        entry = Entry(body if isinstance(body, dict) else {}, key[-4:])
        with self._lock:
            self.log.append(entry)
        try:
            account = self._account(key)
            model = check_request(body)
            if _too_long(body, model):
                raise _context_refusal(model.context_window, body)
            headers = self._take(account, body)
            fault = self._fault(body)
            entry.fault = fault.kind if fault else None
            if fault is not None and fault.kind != "slow":
                return self._faulty(fault, model, body, entry, headers)
            if fault is not None:
                delay = fault.delay_s() if callable(fault.delay_s) else fault.delay_s
                await asyncio.sleep(delay)
            answer = await self._forward(body)
        except Refusal as refusal:
            entry.status, entry.code, entry.headers = refusal.status, refusal.code, refusal.headers
            return JSONResponse(refusal.body(), refusal.status, headers=refusal.headers)
        entry.status, entry.headers, entry.answer = 200, headers, answer
        return JSONResponse(answer, 200, headers=headers)

    def _account(self, key: str) -> Key:
        if key not in self.keys:
            shown = f"{key[:3]}*{'*' * 10}{key[-4:]}" if len(key) > 8 else "***"
            raise Refusal(
                401,
                f"Incorrect API key provided: {shown}. You can find your API key "
                "at https://platform.openai.com/account/api-keys.",
                code="invalid_api_key",
            )
        return self.keys[key]

    def _take(self, account: Key, body: dict[str, Any]) -> dict[str, str]:
        """Consume a request and its tokens, or raise 429; the x-ratelimit headers either way."""
        need = {
            "requests": 1,
            "tokens": estimate_prompt_tokens(body["messages"])
            + completion_budget(body) * int(body.get("n") or 1),
        }
        limits = {"requests": account.rpm, "tokens": account.tpm}
        with self._lock:
            for kind, limit in limits.items():
                if limit is not None and kind not in account.buckets:
                    account.buckets[kind] = Bucket(limit, self.minute_s)
            for bucket in account.buckets.values():
                bucket.refill()
            short = [k for k, b in account.buckets.items() if b.level < need[k]]
            if not short:
                for kind, bucket in account.buckets.items():
                    bucket.level -= need[kind]
            elif self.count_refused and "requests" in account.buckets:
                # "Unsuccessful requests contribute to your per-minute limit, so continuously
                # resending a request won't work" (OpenAI, rate limits guide): a refused
                # request uses up a request, down to a minute's worth of debt.
                bucket = account.buckets["requests"]
                bucket.level = max(-bucket.limit, bucket.level - 1)
            headers = _rate_headers(account.buckets)
        if short:
            kind = short[0]
            bucket = account.buckets[kind]
            wait = bucket.wait_for(need[kind])
            unit = "RPM" if kind == "requests" else "TPM"
            used = bucket.limit - int(bucket.level)
            raise Refusal(
                429,
                f"Rate limit reached for {body['model']} on {kind} per min ({unit}): Limit "
                f"{bucket.limit}, Used {used}, Requested {need[kind]}. Please try again in "
                f"{go_duration(wait)}.",
                type_=kind,
                code="rate_limit_exceeded",
                headers={**headers, "retry-after": str(max(1, math.ceil(wait)))},
            )
        return headers

    def _fault(self, body: dict[str, Any]) -> Fault | None:
        with self._lock:
            for fault in self.faults:
                if fault.times == 0 or (fault.when is not None and not fault.when(body)):
                    continue
                if fault.times is not None:
                    fault.times -= 1
                return fault
        return None

    def _faulty(self, fault: Fault, model: Model, body: dict, entry: Entry, headers) -> Response:
        if fault.kind == "context_length":
            raise _context_refusal(model.context_window, body)
        if fault.kind == "server_error":
            raise Refusal(
                500,
                "The server had an error while processing your request. Sorry about that!",
                type_="server_error",
            )
        entry.status = None
        return _Dropped()

    async def _forward(self, body: dict[str, Any]) -> dict[str, Any]:
        """The upstream's real answer, renamed to the model the client asked for."""
        sent = {k: body[k] for k in UPSTREAM_PARAMS if k in body}
        sent["model"] = self.upstream_model
        sent["max_tokens"] = completion_budget(body)
        if self.follow_prompt_schema and (schema := prompt_schema(body)) is not None:
            sent["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "from_prompt", "schema": schema},
            }
        async with httpx.AsyncClient(timeout=600) as client:
            r = await client.post(f"{self.upstream}/chat/completions", json=sent)
        if r.status_code != 200:
            text = r.text
            if "maximum context length" in text.lower() or "context length" in text.lower():
                raise _context_refusal(MODELS[body["model"]].context_window, body)
            status = 400 if 400 <= r.status_code < 500 else 500
            kind = "invalid_request_error" if status == 400 else "server_error"
            raise Refusal(status, f"upstream refused: {text[:500]}", type_=kind)
        answer = r.json()
        answer.update(
            id=f"chatcmpl-contract{next(self._ids)}",
            model=body["model"],
            system_fingerprint="fp_contract",
        )
        return answer


def prompt_schema(body: dict[str, Any]) -> dict[str, Any] | None:
    """The JSON Schema a JSON-mode request's system message holds, if any."""
    if (body.get("response_format") or {}).get("type") != "json_object":
        return None
    decoder = json.JSONDecoder()
    for message in body["messages"]:
        text = str(message.get("content") or "") if message.get("role") == "system" else ""
        for start in (i for i, ch in enumerate(text) if ch == "{"):
            try:
                value, _end = decoder.raw_decode(text, start)
            except ValueError:
                continue
            if isinstance(value, dict) and value.get("type") == "object":
                return value
    return None


def _bearer(header: str | None) -> str:
    if not header or not header.lower().startswith("bearer "):
        return ""
    return header[7:].strip()


def _too_long(body: dict[str, Any], model: Model) -> bool:
    return estimate_prompt_tokens(body["messages"]) + completion_budget(body) > model.context_window


def _context_refusal(window: int, body: dict[str, Any]) -> Refusal:
    prompt = estimate_prompt_tokens(body["messages"])
    return _bad(
        f"This model's maximum context length is {window} tokens. However, you requested "
        f"{prompt + completion_budget(body)} tokens ({prompt} in the messages, "
        f"{completion_budget(body)} in the completion). Please reduce the length of the "
        "messages or completion.",
        param="messages",
        code="context_length_exceeded",
    )


def _rate_headers(buckets: dict[str, Bucket]) -> dict[str, str]:
    headers = {}
    for kind, bucket in buckets.items():
        headers[f"x-ratelimit-limit-{kind}"] = str(bucket.limit)
        headers[f"x-ratelimit-remaining-{kind}"] = str(max(0, int(bucket.level)))
        headers[f"x-ratelimit-reset-{kind}"] = go_duration(bucket.reset_in())
    return headers


class _Dropped(Response):
    """Starts a 200 answer, sends part of it and returns: the server closes the connection, the
    client sees the answer cut off (as when a proxy or the network drops it)."""

    async def __call__(self, scope, receive, send) -> None:  # type: ignore[override]
        headers = [(b"content-type", b"application/json"), (b"content-length", b"4096")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b'{"id": "chatcmpl-', "more_body": True})
