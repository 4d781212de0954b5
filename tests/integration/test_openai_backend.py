"""OpenAIBackend against real servers: vLLM's OpenAI server, `transformers serve`, and a local
stdlib HTTP server that misbehaves on purpose (rate limits, 5xx, dropped connections, stalls)."""

from __future__ import annotations

import json
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from speed.llm.cache import CompletionCache
from speed.llm.client import LLMClient
from speed.llm.openai_backend import OpenAIBackend, RequestRejected, TeacherAPIError
from speed.llm.schema import string_fields
from speed.llm.types import Request, Sampling
from tests.servers import free_port, serve, vllm_server_cmd

KEY_ENV = "SPEED_TEST_TEACHER_KEY"
KEY = "sk-test-planted-0123456789"

SCHEMA = string_fields({"topic": 40, "sentence": 40})


@pytest.fixture
def api_key(monkeypatch) -> str:
    """Plants the key in an env var; returns the variable's name (what the backend takes)."""
    monkeypatch.setenv(KEY_ENV, KEY)
    return KEY_ENV


def prompts(
    count: int, schema: dict | None = None, max_tokens: int = 64, n: int = 1
) -> list[Request]:
    return [
        Request.chat(
            [{"role": "user", "content": f"Write a topic and a sentence, number {i}."}],
            Sampling(temperature=1.0, max_tokens=max_tokens, seed=i),
            schema=schema,
            n=n,
            id=f"p{i}",
        )
        for i in range(count)
    ]


# --- real model servers -------------------------------------------------------------------------


# Function-scoped on purpose: each server lives for one test only, so the two never share 2 cores.
@pytest.fixture
def vllm_url(tiny_models, tmp_path, monkeypatch) -> Iterator[str]:
    monkeypatch.setenv("VLLM_CPU_KVCACHE_SPACE", "1")
    port = free_port()
    cmd = vllm_server_cmd(tiny_models["base"], port)
    base = f"http://127.0.0.1:{port}/v1"
    with serve(cmd, f"{base}/models", tmp_path / "vllm.log", timeout_s=240):
        yield base


@pytest.fixture
def transformers_url(tiny_models, tmp_path) -> Iterator[str]:
    port = free_port()
    cmd = [
        str(Path(sys.executable).with_name("transformers")), "serve", tiny_models["base"],
        "--host", "127.0.0.1",
        "--port", str(port),
        "--device", "cpu",
        "--dtype", "float32",
    ]  # fmt: skip
    # Its /v1/models scans the hub cache and answers 500 when there is none: wait on /health.
    with serve(cmd, f"http://127.0.0.1:{port}/health", tmp_path / "tserve.log", timeout_s=180):
        yield f"http://127.0.0.1:{port}/v1"


@pytest.mark.slow
def test_vllm_server_json_schema(vllm_url, tiny_models, api_key):
    # vLLM decodes the full schema, its maxLength bounds included (teacher.openai.strict_subset)
    backend = OpenAIBackend(
        tiny_models["base"], vllm_url, api_key, max_concurrency=4, strict_subset=False
    )
    results = backend.generate(prompts(8, SCHEMA, max_tokens=200))

    assert len(results) == 8
    for samples in results:
        assert len(samples) == 1
        c = samples[0]
        obj = json.loads(c.text)  # strict: no trailing text, no raw control characters
        assert isinstance(obj, dict) and set(obj) == {"topic", "sentence"}
        assert all(isinstance(v, str) and len(v) <= 40 for v in obj.values())
        assert c.parsed == obj
        assert c.finish_reason == "stop"
        assert c.prompt_tokens > 0 and c.completion_tokens > 0


@pytest.mark.slow
def test_transformers_serve(transformers_url, tiny_models, api_key):
    # `transformers serve` ignores `response_format` (and `n`): no structured outputs there.
    backend = OpenAIBackend(
        tiny_models["base"], transformers_url, api_key, max_concurrency=2, response_format="none"
    )
    results = backend.generate(prompts(3, max_tokens=16))
    assert [len(r) for r in results] == [1, 1, 1]
    for [c] in results:
        assert c.text
        assert c.prompt_tokens > 0 and 0 < c.completion_tokens <= 16
        assert c.finish_reason in {"stop", "length"}

    # It silently answers one choice for n=2: that must be an error, not one sample short.
    with pytest.raises(TeacherAPIError, match="2 samples"):
        backend.generate(prompts(1, max_tokens=8, n=2))


# --- a local server that misbehaves on purpose --------------------------------------------------

DROP = "drop"  # close the connection without answering


def chat_completion(model: str, texts: list[str], prompt_tokens=5, completion_tokens=7) -> dict:
    return {
        "id": "chatcmpl-test",
        "object": "chat.completion",
        "created": 0,
        "model": model,
        "choices": [
            {
                "index": i,
                "message": {"role": "assistant", "content": t},
                "finish_reason": "stop",
                "logprobs": None,
            }
            for i, t in enumerate(texts)
        ],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }


# A script gets (attempt number from 1, request body) and returns DROP or
# (status, extra headers, JSON body).
Script = Callable[[int, dict], Any]


class FakeOpenAI:
    def __init__(self, script: Script):
        self.script = script
        self.seen: list[tuple[dict, dict[str, str]]] = []  # (body, lower-cased headers)
        self.lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with fake.lock:
                    fake.seen.append((body, {k.lower(): v for k, v in self.headers.items()}))
                    attempt = len(fake.seen)
                action = fake.script(attempt, body)
                if action == DROP:
                    self.connection.shutdown(socket.SHUT_RDWR)
                    self.close_connection = True
                    return
                status, headers, payload = action
                data = json.dumps(payload).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    for k, v in headers.items():
                        self.send_header(k, v)
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up on this attempt (timeout test)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    @property
    def attempts(self) -> int:
        return len(self.seen)

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def fake_server() -> Iterator[Callable[[Script], FakeOpenAI]]:
    servers: list[FakeOpenAI] = []

    def start(script: Script) -> FakeOpenAI:
        servers.append(FakeOpenAI(script))
        return servers[-1]

    yield start
    for s in servers:
        s.close()


def error(status: int, message: str, headers: dict[str, str] | None = None):
    return status, headers or {}, {"error": {"message": message, "type": "test", "code": None}}


VALID = '{"topic":"t","sentence":"s"}'


def ok(body: dict, texts: list[str] | None = None, **usage):
    return 200, {}, chat_completion(body["model"], texts or [VALID], **usage)


def test_retries_rate_limit_server_error_and_dropped_connection(fake_server, api_key):
    def script(attempt: int, body: dict):
        if attempt == 1:  # a rate limit that says how long to wait
            return error(429, "slow down", {"retry-after-ms": "50"})
        if attempt == 2:
            return error(500, "boom", {"retry-after-ms": "50"})
        if attempt == 3:
            return DROP
        return ok(body)

    server = fake_server(script)
    backend = OpenAIBackend("teacher", server.url, api_key, max_attempts=5)
    start = time.monotonic()
    [[c]] = backend.generate(prompts(1, SCHEMA))
    elapsed = time.monotonic() - start

    assert server.attempts == 4
    assert c.parsed == {"topic": "t", "sentence": "s"}
    assert (c.prompt_tokens, c.completion_tokens) == (5, 7)
    headers = [h for _, h in server.seen]
    assert [h["x-stainless-retry-count"] for h in headers] == ["0", "1", "2", "3"]
    assert all(h["authorization"] == f"Bearer {KEY}" for h in headers)
    # The retries are one logical call: the same body and idempotency key every time.
    assert len({json.dumps(b, sort_keys=True) for b, _ in server.seen}) == 1
    assert len({h.get("idempotency-key") for h in headers}) == 1
    # Backoff honours Retry-After; after the dropped connection it is exponential (~2 s).
    assert elapsed < 10


def test_always_500_gives_up_after_max_attempts(fake_server, api_key):
    server = fake_server(lambda attempt, body: error(500, "down for maintenance"))
    backend = OpenAIBackend("teacher", server.url, api_key, max_attempts=3)
    with pytest.raises(TeacherAPIError, match=r"after 3 attempts") as info:
        backend.generate(prompts(1))
    assert server.attempts == 3
    message = str(info.value)
    assert "p0" in message and server.url in message and "500" in message
    assert KEY not in message


def test_client_error_is_not_retried(fake_server, api_key):
    server = fake_server(lambda attempt, body: error(400, "bad schema"))
    backend = OpenAIBackend("teacher", server.url, api_key, max_attempts=5)
    with pytest.raises(RequestRejected, match=r"refused request p0 .*HTTP 400") as info:
        backend.generate(prompts(1, SCHEMA))
    assert server.attempts == 1
    assert "bad schema" in str(info.value)


def test_answers_beside_a_failed_request_are_kept(fake_server, api_key, tmp_path):
    """One request of a chunk fails for good: the others were billed, so they reach the cache
    before the error goes up, and the rerun asks only for the failed one."""

    refuse = {"number 2."}

    def script(attempt: int, body: dict):
        failing = any(r in body["messages"][0]["content"] for r in refuse)
        return error(400, "content policy") if failing else ok(body)

    server = fake_server(script)
    backend = OpenAIBackend("teacher", server.url, api_key, max_attempts=1)
    client = LLMClient(backend, CompletionCache(tmp_path / "cache.sqlite"))
    with pytest.raises(TeacherAPIError, match="content policy"):
        client.generate(prompts(4))
    assert server.attempts == 4 and len(client.cache) == 3

    refuse.clear()
    answers = LLMClient(backend, client.cache).generate(prompts(4))
    assert server.attempts == 5  # one more call, for request 2 only
    assert [len(a) for a in answers] == [1, 1, 1, 1]


def test_batch_files_respect_the_line_and_byte_limits(api_key, tmp_path):
    from speed.llm.openai_batch import OpenAIBatchBackend

    backend = OpenAIBatchBackend("teacher", None, api_key, tmp_path, max_requests=3)
    assert backend.parts(prompts(7)) == [[0, 1, 2], [3, 4, 5], [6]]
    one = len(json.dumps(backend._body(prompts(1)[0]))) + 100
    backend.max_file_bytes = 2 * one + 10  # two lines fit, a third does not
    assert backend.parts(prompts(5)) == [[0, 1], [2, 3], [4]]


def test_timeout_is_retried(fake_server, api_key):
    def script(attempt: int, body: dict):
        if attempt == 1:
            time.sleep(2)  # past the client's timeout
        return ok(body)

    server = fake_server(script)
    backend = OpenAIBackend("teacher", server.url, api_key, max_attempts=2, timeout_s=0.5)
    [[c]] = backend.generate(prompts(1))
    assert server.attempts == 2
    assert c.completion_tokens == 7


def test_missing_api_key_names_the_variable(monkeypatch):
    monkeypatch.delenv("SPEED_TEST_MISSING_KEY", raising=False)
    with pytest.raises(TeacherAPIError, match="SPEED_TEST_MISSING_KEY"):
        OpenAIBackend("teacher", "http://127.0.0.1:9/v1", "SPEED_TEST_MISSING_KEY")


def test_the_full_schema_goes_to_a_server_that_decodes_it(fake_server, api_key):
    server = fake_server(lambda attempt, body: ok(body))
    backend = OpenAIBackend("teacher", server.url, api_key, strict_subset=False)
    backend.generate(prompts(1, SCHEMA))
    [(body, _)] = server.seen
    assert body["response_format"]["json_schema"] == {
        "name": "output",
        "schema": SCHEMA,
        "strict": True,
    }
    assert backend.identity["strict_subset"] is False  # another answer than the subset's


def test_request_body_and_response_format(fake_server, api_key):
    server = fake_server(lambda attempt, body: ok(body))
    OpenAIBackend("teacher", server.url, api_key).generate(prompts(1, SCHEMA, max_tokens=33))
    OpenAIBackend("teacher", server.url, api_key, response_format="none").generate(
        prompts(1, SCHEMA)
    )
    OpenAIBackend("teacher", server.url, api_key, response_format="json_object").generate(
        prompts(1, SCHEMA)
    )
    with_rf, without_rf, json_mode = (b for b, _ in server.seen)
    assert with_rf["model"] == "teacher"
    assert with_rf["messages"] == [
        {"role": "user", "content": "Write a topic and a sentence, number 0."}
    ]
    assert (with_rf["max_tokens"], with_rf["seed"], with_rf["n"]) == (33, 0, 1)
    # Strict mode takes no maxLength: the subset is sent, the bound is checked after decoding.
    strict = {
        "type": "object",
        "properties": {"topic": {"type": "string"}, "sentence": {"type": "string"}},
        "required": ["topic", "sentence"],
        "additionalProperties": False,
    }
    assert with_rf["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "output", "schema": strict, "strict": True},
    }
    assert "response_format" not in without_rf
    assert without_rf["messages"] == with_rf["messages"]
    # JSON mode: the full schema goes into the prompt, as a system message before the request.
    assert json_mode["response_format"] == {"type": "json_object"}
    system, user = json_mode["messages"]
    assert system["role"] == "system" and json.dumps(SCHEMA) in system["content"]
    assert user == with_rf["messages"][0]


def test_an_old_boolean_response_format_is_refused(api_key):
    with pytest.raises(ValueError, match="json_schema, json_object, none"):
        OpenAIBackend("teacher", None, api_key, response_format=True)


def test_concurrency_is_bounded_and_order_kept(fake_server, api_key):
    in_flight = peak = 0
    lock = threading.Lock()

    def script(attempt: int, body: dict):
        nonlocal in_flight, peak
        with lock:
            in_flight += 1
            peak = max(peak, in_flight)
        time.sleep(0.2)
        with lock:
            in_flight -= 1
        return ok(body, [body["messages"][0]["content"]])

    server = fake_server(script)
    backend = OpenAIBackend("teacher", server.url, api_key, max_concurrency=2)
    requests = prompts(6)
    results = backend.generate(requests)
    assert server.attempts == 6
    assert peak == 2
    assert [r[0].text for r in results] == [q.messages[0]["content"] for q in requests]


def test_n_samples_split_usage_without_losing_tokens(fake_server, api_key):
    server = fake_server(
        lambda attempt, body: ok(body, ["a", "b", "c"], prompt_tokens=11, completion_tokens=10)
    )
    [samples] = OpenAIBackend("teacher", server.url, api_key).generate(prompts(1, n=3))
    assert [c.text for c in samples] == ["a", "b", "c"]
    # The ledger sums these: they must add up to what the server billed.
    assert sum(c.prompt_tokens for c in samples) == 11
    assert sum(c.completion_tokens for c in samples) == 10


def test_fewer_choices_than_n_is_an_error(fake_server, api_key):
    server = fake_server(lambda attempt, body: ok(body, ["only one"]))
    with pytest.raises(TeacherAPIError, match=r"1 choice.* 2 samples"):
        OpenAIBackend("teacher", server.url, api_key).generate(prompts(1, n=2))
