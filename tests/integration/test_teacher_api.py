"""The teacher through an OpenAI-compatible API (a real local vLLM server): the teacher stages,
synchronous and through the Batch API, leave no secret behind; the Batch API backend resumes a
killed job's batch instead of paying again and resubmits expired requests alone."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from speed.io import read_jsonl
from speed.llm.cache import CompletionCache
from speed.llm.client import LLMClient
from speed.llm.openai_backend import OpenAIBackend, TeacherAPIError
from speed.llm.openai_batch import OpenAIBatchBackend
from speed.llm.types import Request, Sampling
from tests.batch_api import LocalBatchAPI
from tests.conftest import snakemake
from tests.servers import free_port, serve, vllm_server_cmd

KEY_ENV = "SPEED_TEST_SECRET_KEY"
KEY = "sk-planted-secret-7f3a9c2e5d1b"
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def teacher_url(tiny_models, tmp_path_factory) -> Iterator[str]:
    port = free_port()
    log = tmp_path_factory.mktemp("server") / "vllm.log"
    cmd = vllm_server_cmd(tiny_models["teacher"], port, served_name="tiny-teacher")
    with serve(cmd, f"http://127.0.0.1:{port}/v1/models", log, timeout_s=240):
        yield f"http://127.0.0.1:{port}/v1"


def _api_config(workflow: Path, url: str) -> None:
    cfg_file = workflow / "config" / "config.yaml"
    config = yaml.safe_load(cfg_file.read_text())
    config["teacher"]["backend"] = "openai"
    config["teacher"]["model"] = "tiny-teacher"
    config["teacher"]["price"] = {"prompt_per_m": 2.5, "completion_per_m": 10.0}
    config["teacher"]["openai"].update(base_url=url, api_key_env=KEY_ENV, max_concurrency=4)
    config["topics"]["n"] = 8
    config["prompts"]["n"]["seed"] = 23
    cfg_file.write_text(yaml.safe_dump(config, sort_keys=False))


def _files_containing(root: Path, needle: bytes) -> list[str]:
    return [str(p) for p in root.rglob("*") if p.is_file() and needle in p.read_bytes()]


@pytest.mark.slow
def test_teacher_stages_through_the_api_leave_no_secret(workflow, teacher_url):
    _api_config(workflow, teacher_url)
    proc = snakemake(
        workflow, "--cores", "2", "results/tiny/teacher/seed.jsonl", env={KEY_ENV: KEY}
    )
    run = workflow / "results" / "tiny"
    assert {r["family"] for r in read_jsonl(run / "teacher" / "seed.jsonl")} == {
        "classification",
        "retrieval",
        "sts",
        "s2s",
        "p2p",
    }
    ledger = [r for p in sorted((run / "ledger").glob("*.jsonl")) for r in read_jsonl(p)]
    assert {r["stage"] for r in ledger} == {"brainstorm", "seed"}
    assert sum(r["stage"] == "brainstorm" for r in ledger) == 4 * 8  # one per (topic, family)
    assert sum(r["stage"] == "seed" for r in ledger) == 23
    assert all(r["model"] == "tiny-teacher" and r["usd"] > 0 for r in ledger)

    assert not (workflow / "results" / "tiny" / "models").exists()  # no local teacher built
    leaked = []
    for where in ("results", ".cache", ".snakemake"):
        leaked += _files_containing(workflow / where, KEY.encode())
    assert leaked == []
    assert KEY not in proc.stdout + proc.stderr


@pytest.mark.slow
def test_teacher_stages_through_the_batch_api(workflow, teacher_url):
    """The same stages with teacher.openai.batch on: every call goes out in batch files, recorded
    for resumption, and the ledger books them at the batch price."""
    _api_config(workflow, "")
    cfg_file = workflow / "config" / "config.yaml"
    config = yaml.safe_load(cfg_file.read_text())
    with LocalBatchAPI(teacher_url) as api:
        config["teacher"]["openai"]["base_url"] = api.url
        config["teacher"]["openai"]["batch"] = {"enabled": True, "poll_s": 0.5}
        cfg_file.write_text(yaml.safe_dump(config, sort_keys=False))
        snakemake(workflow, "--cores", "2", "results/tiny/teacher/seed.jsonl", env={KEY_ENV: KEY})
    # one batch per teacher job: 4 brainstorm families + the seed stage
    assert sorted(len(api.input_lines(b)) for b in api.batches) == [8, 8, 8, 8, 23]
    assert len(list((workflow / ".cache/speed/openai-batches").glob("*.json"))) == 5
    ledger = [
        r for p in sorted((workflow / "results/tiny/ledger").glob("*.jsonl")) for r in read_jsonl(p)
    ]
    assert len(ledger) == 4 * 8 + 23 and not any(r["cached"] for r in ledger)
    for r in ledger:  # half of 2.5 / 10 USD per million tokens
        expected = (r["prompt_tokens"] * 1.25 + r["completion_tokens"] * 5.0) / 1e6
        assert r["usd"] == pytest.approx(expected)
    assert _files_containing(workflow / ".cache", KEY.encode()) == []


def test_missing_key_fails_before_any_job(workflow):
    _api_config(workflow, "http://127.0.0.1:9/v1")
    assert KEY_ENV not in os.environ
    proc = snakemake(workflow, "--cores", "1", check=False)
    assert proc.returncode != 0
    assert KEY_ENV in proc.stdout + proc.stderr
    assert not (workflow / "results").exists()


# --- the Batch API backend on its own ------------------------------------------------------------
# tests/batch_api.py speaks the Batch API's protocol; every line is answered by the vLLM server.

SCHEMA = {
    "type": "object",
    "properties": {"topic": {"type": "string", "maxLength": 30}},
    "required": ["topic"],
    "additionalProperties": False,
}


@pytest.fixture
def api_key(monkeypatch) -> None:
    monkeypatch.setenv(KEY_ENV, KEY)


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


@pytest.mark.slow
def test_killed_job_resumes_its_batch_and_answers_like_sync_calls(teacher_url, api_key, tmp_path):
    model, state, cache = "tiny-teacher", tmp_path / "batches", tmp_path / "cache.sqlite"
    with LocalBatchAPI(teacher_url) as api:
        api.hold.set()
        job = subprocess.Popen(
            [
                sys.executable,
                "-c",
                "import sys; from tests.integration.test_teacher_api import submit_and_wait; "
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

    sync = OpenAIBackend(model, teacher_url, KEY_ENV).generate(requests(4))
    assert [a[0].text for a in answers] == [s[0].text for s in sync]
    assert all(a[0].parsed is not None for a in answers)
    assert [a[0].prompt_tokens for a in answers] == [s[0].prompt_tokens for s in sync]
    assert all(a[0].completion_tokens > 0 for a in answers)


@pytest.mark.slow
def test_expired_requests_are_kept_apart_and_resubmitted_alone(teacher_url, api_key, tmp_path):
    model, state, cache = "tiny-teacher", tmp_path / "batches", tmp_path / "cache.sqlite"
    with LocalBatchAPI(teacher_url) as api:
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
