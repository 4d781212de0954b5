"""Server texts are scrubbed of keys before they reach logs or exceptions: the scrub itself, the
real openai client against a local server that echoes the key in its 401, and the Batch API's
refusals and error files."""

from __future__ import annotations

import json
import logging
import threading
import traceback
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace

import pytest

from speed.llm.cache import CompletionCache
from speed.llm.client import LLMClient
from speed.llm.openai_backend import OpenAIBackend, TeacherAPIError
from speed.llm.openai_batch import OpenAIBatchBackend
from speed.llm.secrets import MASK, scrub
from speed.llm.types import Request, Sampling

KEY_ENV = "SPEED_TEST_SCRUB_KEY"
KEY = "sk-proj-Zq8XbN2vLrT5yHc1MwK7pJd4sFg9eUa3oIiE6tRzYxW0-_QnVbCmLkJhGfDsAwxyz"
MASKED = f"sk-proj-{'*' * 40}{KEY[-4:]}"


def leaks(text: str) -> list[str]:
    """The parts of the key found in `text`: the whole, its tail (masked echoes), its body."""
    parts = {"key": KEY, "tail": KEY[-4:], "body": KEY[8:24], "masked": MASKED}
    return [name for name, part in parts.items() if part in text]


@pytest.mark.parametrize(
    "text",
    [
        f"Incorrect API key provided: {MASKED}. You can find your API key at "
        "https://platform.openai.com/account/api-keys.",
        f"Received API Key = sk-proj-Zq8X...{KEY[-4:]}, Key Hash (Token) = abc",
        f"upstream said: Authorization: Bearer {KEY}",
        f'{{"api_key": "{KEY}", "model": "m"}}',
        f"line 3: {KEY}",
        f"masked elsewhere: Zq8X{'*' * 12}{KEY[-4:]}",
    ],
)
def test_scrub_removes_keys_and_masked_keys(text):
    out = scrub(text)
    assert leaks(out) == [] and MASK in out


def test_scrub_removes_the_configured_key_whatever_its_shape():
    key = "local-secret-7"  # a vLLM --api-key: no sk- prefix, short, low entropy
    assert scrub(f"bad key {key} / ****et-7", [key]) == f"bad key {MASK} / {MASK}"


def test_scrub_keeps_what_helps_debugging():
    text = (
        "Error code: 400 - request req_0123456789abcdef0123456789abcdef in batch "
        "batch_6f1c2a9b8d7e4f3a2b1c0d9e8f7a6b5c: max_tokens is too large; risk-free task-name "
        "(api_key_env OPENAI_API_KEY) at http://127.0.0.1:8000/v1"
    )
    assert scrub(text, [None, ""]) == text


def test_named_secrets_keep_their_name_and_lose_their_value():
    assert scrub("Authorization: Bearer local.token-42") == f"Authorization: Bearer {MASK}"
    assert scrub('{"api_key": "hunter2", "n": 1}') == f'{{"api_key": "{MASK}", "n": 1}}'
    assert scrub("?api-key=hunter2&x=1") == f"?api-key={MASK}&x=1"


def test_high_entropy_tokens_are_removed():
    token = "hf_AbCdEfGhIjKlMnOpQrStUvWxYz0123456789"
    assert scrub(f"token {token} expired") == f"token {MASK} expired"


# --- the real openai client against a server that echoes the key -------------------------------


class EchoingServer:
    """Answers every request 401 with OpenAI's body for a wrong key, echoing it (masked and in
    full, as proxies do)."""

    def __init__(self) -> None:
        class Handler(BaseHTTPRequestHandler):
            def _refuse(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                sent = self.headers.get("Authorization", "")
                message = f"Incorrect API key provided: {MASKED}. (you sent: {sent})"
                body = {"error": {"message": message, "type": "invalid_request_error"}}
                data = json.dumps(body).encode()
                self.send_response(401)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = _refuse  # noqa: N815

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def echoing() -> Iterator[EchoingServer]:
    server = EchoingServer()
    yield server
    server.close()


@pytest.fixture
def api_key(monkeypatch) -> str:
    monkeypatch.setenv(KEY_ENV, KEY)
    return KEY_ENV


def one_request() -> list[Request]:
    return [Request.chat([{"role": "user", "content": "hi"}], Sampling(max_tokens=8), id="p0")]


def everything_shown(err: BaseException, caplog) -> str:
    """What a job's log would show: the log records and the exception's full traceback."""
    shown = "".join(traceback.format_exception(err))
    return shown + "\n".join(r.getMessage() for r in caplog.records)


def test_a_401_echoing_the_key_reaches_neither_error_nor_log(echoing, api_key, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    backend = OpenAIBackend("teacher", echoing.url, api_key, max_attempts=2)
    client = LLMClient(backend, CompletionCache(tmp_path / "cache.sqlite"))
    with pytest.raises(
        TeacherAPIError, match=f"API key in the environment variable {KEY_ENV}"
    ) as info:
        client.generate(one_request())
    assert "401" in str(info.value) and MASK in str(info.value)
    assert leaks(everything_shown(info.value, caplog)) == []


def test_a_batch_upload_refused_with_the_key_is_scrubbed(echoing, api_key, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    backend = OpenAIBatchBackend("teacher", echoing.url, api_key, tmp_path / "state")
    with pytest.raises(TeacherAPIError, match="batch API at .*AuthenticationError") as info:
        backend.generate(one_request())
    assert leaks(everything_shown(info.value, caplog)) == []


# --- the Batch API's own error texts ------------------------------------------------------------


def test_batch_refusal_and_error_file_are_scrubbed(api_key, tmp_path):
    backend = OpenAIBatchBackend("teacher", None, api_key, tmp_path, poll_s=0)
    error = SimpleNamespace(code="invalid_key", message=f"key {MASKED} refused", line=1)
    failed = SimpleNamespace(id="batch_1", status="failed", errors=SimpleNamespace(data=[error]))
    with pytest.raises(TeacherAPIError, match="was refused") as info:
        backend._wait(None, failed)
    assert leaks(str(info.value)) == []

    line = {"custom_id": "0", "response": None, "error": {"message": f"echo {KEY}"}}
    files = SimpleNamespace(content=lambda file_id: SimpleNamespace(text=json.dumps(line)))
    done = SimpleNamespace(id="batch_2", status="completed", output_file_id=None, error_file_id="f")
    wanted = dict(enumerate(one_request()))
    answers, failures, refused = backend._collect(SimpleNamespace(files=files), done, wanted)
    assert answers == {} and refused == [] and len(failures) == 1 and "echo" in failures[0]
    assert leaks(failures[0]) == []
