"""OpenAIBatchBackend through the Batch API's wire protocol (tests/batch_api.py), every answer
from a real vLLM server: same answers as synchronous calls, a killed job resumes its batch
instead of paying again, and expired requests are resubmitted alone."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from speed.llm.cache import CompletionCache
from speed.llm.client import LLMClient
from speed.llm.openai_backend import OpenAIBackend, TeacherAPIError
from speed.llm.openai_batch import OpenAIBatchBackend
from speed.llm.types import Request, Sampling
from tests.batch_api import LocalBatchAPI
from tests.servers import free_port, serve, vllm_server_cmd

KEY_ENV = "SPEED_TEST_TEACHER_KEY"
ROOT = Path(__file__).resolve().parents[2]
SCHEMA = {
    "type": "object",
    "properties": {"topic": {"type": "string", "maxLength": 30}},
    "required": ["topic"],
    "additionalProperties": False,
}

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def upstream(tiny_models, tmp_path_factory) -> Iterator[str]:
    port = free_port()
    log = tmp_path_factory.mktemp("vllm") / "vllm.log"
    cmd = vllm_server_cmd(tiny_models["base"], port)
    with serve(cmd, f"http://127.0.0.1:{port}/v1/models", log, timeout_s=240):
        yield f"http://127.0.0.1:{port}/v1"


@pytest.fixture(autouse=True)
def api_key(monkeypatch) -> None:
    monkeypatch.setenv(KEY_ENV, "sk-test-batch")


def requests(n: int) -> list[Request]:
    return [
        Request.chat(
            [{"role": "user", "content": f"Name topic number {i} as JSON."}],
            Sampling(temperature=0.0, max_tokens=40, seed=7),
            schema=SCHEMA,
            id=f"r{i}",
        )
        for i in range(n)
    ]


def batch_client(model: str, url: str, state_dir: Path, cache: Path) -> LLMClient:
    backend = OpenAIBatchBackend(model, url, KEY_ENV, state_dir, poll_s=0.2)
    return LLMClient(backend, CompletionCache(cache))


def submit_and_wait(model: str, url: str, state_dir: str, cache: str) -> None:
    """The job the first test kills while its batch is in progress."""
    batch_client(model, url, Path(state_dir), Path(cache)).generate(requests(4))


def test_killed_job_resumes_its_batch_and_answers_like_sync_calls(upstream, tiny_models, tmp_path):
    model, state, cache = tiny_models["base"], tmp_path / "batches", tmp_path / "cache.sqlite"
    with LocalBatchAPI(upstream) as api:
        api.hold.set()
        job = subprocess.Popen(
            [
                sys.executable,
                "-c",
                "import sys; from tests.integration.test_openai_batch import submit_and_wait; "
                "submit_and_wait(*sys.argv[1:])",
                model, api.url, str(state), str(cache),
            ],
            cwd=ROOT,
        )  # fmt: skip
        deadline = time.monotonic() + 120
        while not list(state.glob("*.json")):
            assert job.poll() is None and time.monotonic() < deadline, "no batch recorded"
            time.sleep(0.2)
        job.kill()
        job.wait()
        assert [b["status"] for b in api.batches.values()] == ["in_progress"]
        api.hold.clear()

        client = batch_client(model, api.url, state, cache)
        answers = client.generate(requests(4))
        assert len(api.batches) == 1, "the rerun submitted a second batch"
        assert client.backend_calls == 4

    sync = OpenAIBackend(model, upstream, KEY_ENV).generate(requests(4))
    assert [a[0].text for a in answers] == [s[0].text for s in sync]
    assert all(a[0].parsed is not None for a in answers)
    assert [a[0].prompt_tokens for a in answers] == [s[0].prompt_tokens for s in sync]
    assert all(a[0].completion_tokens > 0 for a in answers)


def test_expired_requests_are_kept_apart_and_resubmitted_alone(upstream, tiny_models, tmp_path):
    model, state, cache = tiny_models["base"], tmp_path / "batches", tmp_path / "cache.sqlite"
    with LocalBatchAPI(upstream) as api:
        api.expire_after = 2
        with pytest.raises(TeacherAPIError, match="3 of 5 batch requests"):
            batch_client(model, api.url, state, cache).generate(requests(5))
        assert len(CompletionCache(cache)) == 2  # the answered ones are kept

        api.expire_after = None
        client = batch_client(model, api.url, state, cache)
        answers = client.generate(requests(5))
        assert (client.cache_hits, client.backend_calls) == (2, 3)
        first, second = api.batches
        assert len(api.input_lines(first)) == 5
        assert [line["body"]["messages"][0]["content"] for line in api.input_lines(second)] == [
            f"Name topic number {i} as JSON." for i in (2, 3, 4)
        ]
    assert all(a[0].parsed is not None for a in answers)
