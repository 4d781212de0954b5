"""The teacher through an OpenAI-compatible API (a real local vLLM server): the teacher stages,
synchronous and through the Batch API, leave no secret behind; the Batch API backend resumes a
killed job's batch instead of paying again (also when the rerun asks for other requests),
resubmits expired requests alone, drops and resubmits batches that ended with no answer or that
the server forgot, takes the answers of one that ended while no job waited, and keeps every
batch within OpenAI's per-batch limits. Each checked on the server's side: batches created,
lines sent, none answered and sent again."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

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
    # A vLLM server decodes the full schema: bounded fields end before max_tokens.
    config["teacher"]["openai"].update(
        base_url=url, api_key_env=KEY_ENV, max_concurrency=4, strict_subset=False
    )
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

# An enum, which strict mode keeps: the tiny random teacher ends its answer within max_tokens
# (a free string, once strict mode drops maxLength, runs on until it is cut).
SCHEMA = {
    "type": "object",
    "properties": {"topic": {"type": "string", "enum": ["art", "law", "math", "music"]}},
    "required": ["topic"],
    "additionalProperties": False,
}


@pytest.fixture
def api_key(monkeypatch) -> None:
    monkeypatch.setenv(KEY_ENV, KEY)


PROMPTS = [f"Name topic number {i} as JSON." for i in range(10)]


def requests(n: int) -> list[Request]:
    return [
        Request.chat(
            [{"role": "user", "content": PROMPTS[i]}],
            Sampling(temperature=0.0, max_tokens=40, seed=7),
            schema=SCHEMA,
            id=f"r{i}",
        )
        for i in range(n)
    ]


def batch_client(model: str, url: str, state_dir: Path, cache: Path, **knobs: Any) -> LLMClient:
    backend = OpenAIBatchBackend(model, url, KEY_ENV, state_dir, poll_s=0.2, **knobs)
    return LLMClient(backend, CompletionCache(cache))


def submit_and_wait(model: str, url: str, state_dir: str, cache: str, n: str) -> None:
    """The job the tests kill while its batch is in progress."""
    batch_client(model, url, Path(state_dir), Path(cache)).generate(requests(int(n)))


def killed_while_waiting(
    api: LocalBatchAPI, state: Path, cache: Path, n: int, answered: int
) -> str:
    """Runs a job of `n` requests in a process and SIGKILLs it once its batch is recorded and
    `answered` lines of it are answered (api.hold keeps the others waiting); the batch's id."""
    api.hold.set()
    api.hold_after = answered
    job = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys; from tests.integration.test_teacher_api import submit_and_wait; "
            "submit_and_wait(*sys.argv[1:])",
            "tiny-teacher", api.url, str(state), str(cache), str(n),
        ],
        cwd=ROOT,
    )  # fmt: skip
    deadline = time.monotonic() + 120
    while not (list(state.glob("*.json")) and answered_lines(api) == answered):
        assert job.poll() is None and time.monotonic() < deadline, "no batch recorded"
        time.sleep(0.2)
    job.kill()
    job.wait()
    (batch_id,) = api.batches
    assert api.batches[batch_id]["status"] == "in_progress"
    return batch_id


def answered_lines(api: LocalBatchAPI) -> int:
    return sum(b["request_counts"]["completed"] for b in api.batches.values())


def prompts_sent(api: LocalBatchAPI, batch_id: str) -> list[str]:
    return [line["body"]["messages"][-1]["content"] for line in api.input_lines(batch_id)]


def paid_twice(api: LocalBatchAPI) -> list[str]:
    """Prompts answered by two batches, or sent again in a batch created after one answered them
    (seen from the server; batches in the order they were created)."""
    order = {batch_id: i for i, batch_id in enumerate(api.batches)}
    sent: dict[str, list[int]] = {}
    answered: dict[str, list[int]] = {}
    for batch_id in api.batches:
        prompts = prompts_sent(api, batch_id)
        for prompt in prompts:
            sent.setdefault(prompt, []).append(order[batch_id])
        for line in api.output_lines(batch_id):
            answered.setdefault(prompts[int(line["custom_id"])], []).append(order[batch_id])
    return sorted(p for p, by in answered.items() if len(by) > 1 or max(sent[p]) > by[0])


@contextmanager
def once_submitted(api: LocalBatchAPI, action: Callable[[str], object]) -> Iterator[None]:
    """Does `action(batch_id)` to the first batch created while the block runs."""

    def watch() -> None:
        while not api.batches:
            time.sleep(0.05)
        action(next(iter(api.batches)))

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    yield
    watcher.join(timeout=30)


def cancel(api: LocalBatchAPI, batch_id: str) -> None:
    """POST /v1/batches/{id}/cancel through the openai client, as a user would."""
    from openai import OpenAI

    assert OpenAI(api_key=KEY, base_url=api.url).batches.cancel(batch_id).status == "cancelling"


@pytest.mark.slow
def test_killed_job_resumes_its_batch_and_answers_like_sync_calls(teacher_url, api_key, tmp_path):
    model, state, cache = "tiny-teacher", tmp_path / "batches", tmp_path / "cache.sqlite"
    with LocalBatchAPI(teacher_url) as api:
        killed_while_waiting(api, state, cache, n=4, answered=0)
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


# --- batches that ended without their answers, or that the server forgot ---------------------


@pytest.mark.slow
@pytest.mark.parametrize("fate", ["expired", "cancelled", "forgotten"])
def test_a_dead_batch_without_answers_is_dropped_and_resubmitted(
    teacher_url, api_key, tmp_path, fate
):
    """The first run sees its batch expire or be cancelled before any line, or vanish from the
    server; the rerun drops its record and sends every request again, in one new batch."""
    model, state, cache = "tiny-teacher", tmp_path / "batches", tmp_path / "cache.sqlite"
    with LocalBatchAPI(teacher_url) as api:
        if fate == "expired":
            api.expire_after = 0
            action = None
        else:
            api.hold.set()
            action = (lambda b: cancel(api, b)) if fate == "cancelled" else api.forget
        with (
            once_submitted(api, action or (lambda b: None)),
            pytest.raises(TeacherAPIError, match="NotFound" if fate == "forgotten" else "5 of 5"),
        ):
            batch_client(model, api.url, state, cache).generate(requests(5))
        (dead,) = api.batches
        if fate != "forgotten":
            api.wait_until(dead, fate)
        assert api.output_lines(dead) == [] and api.batches[dead]["output_file_id"] is None
        api.expire_after = None
        api.hold.clear()
        asked = len(api.unknown)

        client = batch_client(model, api.url, state, cache)
        answers = client.generate(requests(5))
        assert api.created == 2
        first, second = api.batches
        assert prompts_sent(api, second) == prompts_sent(api, first)
        assert api.batches[second]["status"] == "completed"
        assert paid_twice(api) == []
        assert (client.backend_calls, client.cache_hits) == (5, 0)
        assert api.unknown[asked:] == ([dead] if fate == "forgotten" else [])
    assert [json.loads(p.read_text())["batch_id"] for p in state.glob("*.json")] == [second]
    assert all(a[0].parsed is not None for a in answers)


@pytest.mark.slow
@pytest.mark.parametrize("fate", ["cancelled", "expired"])
def test_a_killed_jobs_dead_batch_gives_its_answers_and_only_the_rest_is_resubmitted(
    teacher_url, api_key, tmp_path, fate
):
    """The job is killed with 2 of its 5 lines answered; the batch is then cancelled (or its
    window passes). Nothing reached the cache, so the rerun takes the 2 answers from the dead
    batch's output file and sends only the 3 others."""
    model, state, cache = "tiny-teacher", tmp_path / "batches", tmp_path / "cache.sqlite"
    with LocalBatchAPI(teacher_url) as api:
        dead = killed_while_waiting(api, state, cache, n=5, answered=2)
        if fate == "cancelled":
            cancel(api, dead)
        else:
            api.expire_after = 2
            api.hold.clear()
        api.wait_until(dead, fate)
        assert len(api.output_lines(dead)) == 2 and not CompletionCache(cache)
        api.expire_after = None
        api.hold.clear()

        client = batch_client(model, api.url, state, cache)
        answers = client.generate(requests(5))
        assert api.created == 2
        _, second = api.batches
        assert prompts_sent(api, second) == PROMPTS[2:5]
        assert paid_twice(api) == []
        assert client.backend_calls == 5 and len(CompletionCache(cache)) == 5
    assert len(list(state.glob("*.json"))) == 2  # the dead batch holds answers: kept
    assert all(a[0].parsed is not None for a in answers)


@pytest.mark.slow
def test_a_running_batch_is_resumed_when_the_rerun_asks_for_more(teacher_url, api_key, tmp_path):
    """The rerun's requests are not the killed job's (two more, and other file limits, as after
    a config change or a bigger budget): the running batch's lines are waited for, not sent
    again; only the new requests go out."""
    model, state, cache = "tiny-teacher", tmp_path / "batches", tmp_path / "cache.sqlite"
    with LocalBatchAPI(teacher_url) as api:
        running = killed_while_waiting(api, state, cache, n=4, answered=0)
        threading.Timer(1.0, api.hold.clear).start()  # released while the rerun waits

        client = batch_client(model, api.url, state, cache, max_requests=3)
        answers = client.generate(requests(6))
        assert api.created == 2
        first, second = api.batches
        assert first == running and api.batches[first]["status"] == "completed"
        assert prompts_sent(api, second) == PROMPTS[4:6]
        assert paid_twice(api) == []
        assert client.backend_calls == 6
    assert all(a[0].parsed is not None for a in answers)


# --- OpenAI's per-batch limits (no model needed: every line expires) --------------------------


def test_resubmissions_keep_to_the_line_and_byte_limits(api_key, tmp_path):
    """5 requests, at most 3 lines and 2 lines' bytes a file: every batch the server gets, the
    first ones and the rerun's, fits; the server enforces the limits as OpenAI does."""
    state, cache = tmp_path / "batches", tmp_path / "cache.sqlite"
    with LocalBatchAPI("http://127.0.0.1:9/v1") as api:
        api.expire_after = 0
        probe = OpenAIBatchBackend("tiny-teacher", api.url, KEY_ENV, state)
        one = len(json.dumps(probe._body(requests(1)[0]))) + 100
        api.max_requests, api.max_file_bytes = 3, 2 * one + 10
        for _run in range(2):
            client = batch_client(
                "tiny-teacher", api.url, state, cache, max_requests=3, max_file_bytes=2 * one + 10
            )
            with pytest.raises(TeacherAPIError, match="5 of 5 batch requests"):
                client.generate(requests(5))
        batches = list(api.batches.values())
        assert [b["status"] for b in batches] == ["expired"] * 6
        assert [len(api.input_lines(b["id"])) for b in batches] == [2, 2, 1] * 2
        assert all(len(api.files[b["input_file_id"]]) <= api.max_file_bytes for b in batches)
        sent = [prompts_sent(api, b["id"]) for b in batches]
        assert sum(sent[:3], []) == sum(sent[3:], []) == PROMPTS[:5]
        # The first run's records were dropped for the rerun's batches.
        recorded = {json.loads(p.read_text())["batch_id"] for p in state.glob("*.json")}
        assert recorded == {b["id"] for b in batches[3:]}

        # Past the limits the server refuses, as OpenAI does: a too large file, too many lines.
        with pytest.raises(TeacherAPIError, match="File is too large"):
            batch_client("tiny-teacher", api.url, tmp_path / "b2", cache, max_requests=3).generate(
                requests(5)
            )
        big = batch_client("tiny-teacher", api.url, tmp_path / "b3", cache, max_requests=4)
        api.max_file_bytes = 10**6
        with pytest.raises(TeacherAPIError, match="was refused: too_many_requests"):
            big.generate(requests(4))
    with pytest.raises(ValueError, match="50,000"):
        OpenAIBatchBackend("tiny-teacher", None, KEY_ENV, state, max_requests=50_001)
