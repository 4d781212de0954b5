"""The teacher against OpenAI's contract (tests/openai_contract.py, forwarding to a real vLLM
server with the tiny teacher): every teacher stage, synchronously and through the Batch API, in
each response-format mode; the teacher stages of the DAG in each mode; and what a refused shape,
a bad key, a too long request, rate limits and server faults do to a job."""

from __future__ import annotations

import itertools
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from speed.io import read_jsonl
from speed.llm.budget import ENV_VAR, SpendGuard, budget_env
from speed.llm.cache import CompletionCache, cache_key
from speed.llm.client import LLMClient
from speed.llm.ledger import Price
from speed.llm.openai_backend import OpenAIBackend, RequestRejected
from speed.llm.types import CONTEXT_LENGTH, Request, Sampling
from tests.batch_api import LocalBatchAPI
from tests.conftest import ROOT, snakemake
from tests.openai_contract import ContractServer
from tests.servers import free_port, serve, vllm_server_cmd
from tests.teacher_stages import STAGES, ledger, run_stage, small_params, write_inputs

KEY_ENV = "SPEED_TEST_CONTRACT_KEY"
KEY = "sk-Zq81Vx04Jm77Yt52Lp39Hb06"
# The model each mode is tested with: one that supports it (gpt-4 has neither JSON mode nor
# structured outputs).
MODES = {"json_schema": "gpt-4o-2024-08-06", "json_object": "gpt-4o-2024-05-13", "none": "gpt-4"}


@pytest.fixture(scope="module")
def server(tiny_models, tmp_path_factory) -> Iterator[ContractServer]:
    """One upstream vLLM server and one contract server in front of it for the module."""
    port = free_port()
    log = tmp_path_factory.mktemp("upstream") / "vllm.log"
    cmd = vllm_server_cmd(tiny_models["teacher"], port, served_name="tiny-teacher")
    ready = f"http://127.0.0.1:{port}/v1/models"
    with (
        serve(cmd, ready, log, timeout_s=240),
        ContractServer(f"http://127.0.0.1:{port}/v1", "tiny-teacher") as contract,
    ):
        yield contract


@pytest.fixture
def api(server, monkeypatch) -> ContractServer:
    server.reset()
    server.minute_s = 60.0
    server.add_key(KEY)
    monkeypatch.setenv(KEY_ENV, KEY)
    return server


def spec(api: ContractServer, mode: str, model: str | None = None, **options: Any) -> dict:
    """A teacher spec (a rule's llm param) for the contract server."""
    model = model or MODES[mode]
    base = {"base_url": api.url, "api_key_env": KEY_ENV, "response_format": mode}
    knobs = {"max_concurrency": 4, "max_attempts": 4, "timeout_s": 120}
    return {
        "backend": "openai",
        "name": model,
        "model": model,
        "options": {**base, **knobs, **options},
    }


def expected_format(mode: str, sent: dict[str, Any]) -> None:
    """The request as the mode sends it, and as the contract server accepted it."""
    fmt = sent.get("response_format")
    if mode == "json_schema":
        assert fmt["type"] == "json_schema" and fmt["json_schema"]["strict"] is True
    elif mode == "json_object":
        assert fmt == {"type": "json_object"}
        assert sent["messages"][0]["role"] == "system"
        assert "JSON Schema" in sent["messages"][0]["content"]
    else:
        assert fmt is None


def answered_json(mode: str, api: ContractServer) -> int:
    """Answers that ended (not cut at max_tokens) are JSON objects in the JSON modes; the
    number of them (the tiny teacher often writes until max_tokens)."""
    ended = 0
    for entry in api.entries(200):
        for choice in entry.answer["choices"]:
            if mode != "none" and choice["finish_reason"] == "stop":
                obj = json.loads(choice["message"]["content"])
                assert isinstance(obj, dict)
                ended += 1
    return ended


# --- every teacher stage in each mode -----------------------------------------------------------

REQUESTS = {"brainstorm": 2, "seed": 3, "judge": 3, "revise": 3, "teacher_only": 3}


@pytest.mark.slow
@pytest.mark.parametrize("stage", STAGES)
@pytest.mark.parametrize("mode", list(MODES))
def test_every_teacher_stage_in_each_mode(api, tmp_path, mode, stage):
    params = small_params()
    inputs = write_inputs(tmp_path / "in", params, n=3)
    result = run_stage(stage, spec(api, mode), tmp_path, params, inputs)

    assert [e.status for e in api.log] == [200] * REQUESTS[stage]
    for entry in api.log:
        expected_format(mode, entry.body)
        assert entry.body["model"] == MODES[mode]
    rows = ledger(tmp_path, stage)
    assert len(rows) == REQUESTS[stage] and not any(r["cached"] for r in rows)
    # Real completions: the upstream's token counts, billed at the teacher's price.
    assert all(r["prompt_tokens"] > 0 and r["completion_tokens"] > 0 for r in rows)
    assert all(r["usd"] > 0 for r in rows)
    answered_json(mode, api)
    counted = {
        "brainstorm": lambda s: s["teacher_calls"],
        "seed": lambda s: s["kept"] + s["rejected"],
        "judge": lambda s: s["lists"],
        "revise": lambda s: s["lists"],
        "teacher_only": lambda s: s["examples"],
    }[stage]
    assert counted(result) == REQUESTS[stage]


# --- the Batch API in each mode -----------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("mode", list(MODES))
def test_the_batch_api_in_each_mode(api, tmp_path, mode):
    """Batch lines are checked by the contract server like synchronous requests."""
    params = small_params()
    inputs = write_inputs(tmp_path / "in", params, n=3)
    with LocalBatchAPI(api.url) as batch_api:
        batch = {"state_dir": str(tmp_path / "batches"), "poll_s": 0.2}
        llm = spec(api, mode, batch=batch)
        llm["options"]["base_url"] = batch_api.url
        result = run_stage("seed", llm, tmp_path, params, inputs)
    (batch_id,) = batch_api.batches
    assert len(batch_api.input_lines(batch_id)) == 3
    assert [e.status for e in api.log] == [200] * 3
    for entry in api.log:
        expected_format(mode, entry.body)
    assert result["kept"] + result["rejected"] == 3
    assert len(ledger(tmp_path, "seed")) == 3


@pytest.mark.slow
def test_a_batch_refused_for_its_shape_stops_with_the_servers_message(api, tmp_path):
    params = small_params()
    inputs = write_inputs(tmp_path / "in", params, n=3)
    with LocalBatchAPI(api.url) as batch_api:
        batch = {"state_dir": str(tmp_path / "batches"), "poll_s": 0.2}
        llm = spec(api, "json_schema", model="gpt-4o-2024-05-13", batch=batch)
        llm["options"]["base_url"] = batch_api.url
        with pytest.raises(RequestRejected, match="parameter response_format") as info:
            run_stage("seed", llm, tmp_path, params, inputs)
    assert "'response_format' of type 'json_schema' is not supported" in str(info.value)
    assert "3 of 3 batch requests refused" in str(info.value)
    assert not (tmp_path / "seed" / "ledger.jsonl").exists()


# --- the DAG's teacher stages in each mode ------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["json_schema", "json_object"])
def test_the_dags_teacher_stages_in_each_mode(workflow, api, mode):
    """topics -> brainstorm -> prompts -> seed through the contract server. In JSON mode the
    stand-in model decodes under the schema its prompt holds (`follow_prompt_schema`), as a
    model reading it would. `none` is not run here: with nothing but the prompt to go on, the
    random tiny teacher brainstorms no usable task for some family and the prompts job stops
    (as it should); its stages are run one by one above."""
    api.follow_prompt_schema = True
    cfg_file = workflow / "config" / "config.yaml"
    config = yaml.safe_load(cfg_file.read_text())
    config["teacher"].update(backend="openai", model=MODES[mode])
    config["teacher"]["price"] = {"prompt_per_m": 2.5, "completion_per_m": 10.0}
    config["teacher"]["openai"].update(
        base_url=api.url, api_key_env=KEY_ENV, max_concurrency=4, response_format=mode
    )
    config["topics"]["n"] = 2
    config["brainstorm"]["max_tokens"] = 96
    config["prompts"]["n"]["seed"] = 6
    config["seed_data"]["max_tokens"] = 96
    cfg_file.write_text(yaml.safe_dump(config, sort_keys=False))
    snakemake(workflow, "--cores", "2", "results/tiny/teacher/seed.jsonl", env={KEY_ENV: KEY})

    assert [e.status for e in api.log] == [200] * (4 * 2 + 6)  # 4 families x 2 topics + 6 seeds
    for entry in api.log:
        expected_format(mode, entry.body)
    run = workflow / "results" / "tiny"
    rows = [r for p in sorted((run / "ledger").glob("*.jsonl")) for r in read_jsonl(p)]
    assert len(rows) == 4 * 2 + 6 and all(r["model"] == MODES[mode] for r in rows)
    seed = json.loads((run / "teacher" / "seed.stats.json").read_text())
    assert seed["kept"] + seed["rejected"] == 6


# --- failure semantics --------------------------------------------------------------------------

REFUSED_SHAPES = [
    # (model, mode, what the message must name)
    ("gpt-4o-2024-05-13", "json_schema", "parameter response_format"),
    ("gpt-4", "json_object", "parameter response_format"),
    ("o3-mini", "json_schema", "parameter max_tokens"),
    ("gpt-4o-2099-01-01", "json_schema", "code model_not_found"),
]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("model", "mode", "named"), REFUSED_SHAPES, ids=[s[0] for s in REFUSED_SHAPES]
)
def test_a_refused_shape_stops_the_job_at_its_first_request(
    api, tmp_path, monkeypatch, model, mode, named
):
    """One request is sent, the job stops with OpenAI's message and the parameter it names,
    and the budget reservation of its chunk is released."""
    monkeypatch.setenv(ENV_VAR, budget_env("contract", {"max_calls": 1000, "max_usd": 5.0}))
    params = small_params()
    inputs = write_inputs(tmp_path / "in", params, n=6)
    with pytest.raises(RequestRejected, match=named) as info:
        run_stage("seed", spec(api, mode, model=model), tmp_path, params, inputs)
    assert len(api.log) == 1, "more than the first request was sent"
    (entry,) = api.log
    assert entry.status in (400, 404) and entry.body["model"] == model
    assert "Nothing more was sent" in str(info.value)
    assert "5 of 6 requests not sent" in str(info.value)
    guard = SpendGuard(tmp_path / "cache" / "spend.sqlite", "contract", {}, Price())
    assert guard.spent() == {"calls": 0, "tokens": 0, "usd": 0.0}
    guard.close()
    assert not (tmp_path / "seed" / "ledger.jsonl").exists()


@pytest.mark.slow
def test_a_bad_key_stops_naming_its_variable_and_no_part_of_the_key(
    api, tmp_path, monkeypatch, caplog
):
    wrong = "sk-Hd35Qw92Ns18Kc64Rf07Ty"
    monkeypatch.setenv(KEY_ENV, wrong)
    caplog.set_level(logging.DEBUG)
    params = small_params()
    inputs = write_inputs(tmp_path / "in", params, n=4)
    with pytest.raises(RequestRejected) as info:
        run_stage("seed", spec(api, "json_schema"), tmp_path, params, inputs)
    assert [e.status for e in api.log] == [401]
    message = str(info.value)
    assert KEY_ENV in message and "HTTP 401" in message and "invalid_api_key" in message
    shown = message + "\n".join(r.getMessage() for r in caplog.records)
    body = wrong.removeprefix("sk-")
    fragments = [body[i : i + 4] for i in range(len(body) - 3)]
    assert [f for f in fragments if f in shown] == []


@pytest.mark.slow
@pytest.mark.parametrize("stage", ["seed", "judge"])
def test_a_too_long_request_is_dropped_and_the_others_go_on(api, tmp_path, stage):
    params = small_params()
    inputs = write_inputs(tmp_path / "in", params, n=4)
    target = read_jsonl(inputs["seed"])[1]["messages"][-1]["content"]
    api.fault("context_length", when=lambda body: target in body["messages"][-1]["content"])
    llm = spec(api, "json_schema")
    first = run_stage(stage, llm, tmp_path, params, inputs)
    reasons = first["reject_reasons"] if stage == "seed" else first["dropped"]
    assert reasons.get(CONTEXT_LENGTH) == 1
    assert sorted(e.status for e in api.log) == [200, 200, 200, 400]
    assert [e.code for e in api.log if e.status == 400] == ["context_length_exceeded"]
    assert len(ledger(tmp_path, stage)) == 3  # the refused request is not billed
    assert len(CompletionCache(tmp_path / "cache" / "completions")) == 3

    api.log.clear()
    again = run_stage(stage, llm, tmp_path, params, inputs)
    assert [e.status for e in api.log] == [400], "only the dropped request is asked again"
    assert again == first


@pytest.mark.slow
def test_the_upstreams_own_context_limit_comes_back_as_openais_error(api):
    """The tiny teacher's window is 2048 tokens: a longer prompt is refused by vLLM, and the
    contract server answers as OpenAI does, so the backend drops the request."""
    long = " ".join(f"word{i}" for i in range(4000))
    requests = [
        Request.chat([{"role": "user", "content": text}], Sampling(max_tokens=8, seed=1), id=i)
        for i, text in (("long", long), ("short", "Say hello."))
    ]
    backend = OpenAIBackend(MODES["none"], api.url, KEY_ENV, response_format="none")
    (dropped,), (answered,) = backend.generate(requests)
    assert dropped.dropped and dropped.finish_reason == CONTEXT_LENGTH
    assert not answered.dropped and answered.completion_tokens > 0
    assert sorted(e.code or "" for e in api.log) == ["", "context_length_exceeded"]


@pytest.mark.slow
@pytest.mark.parametrize("limit", ["requests", "tokens"])
def test_rate_limits_answer_429_with_their_headers_and_are_waited_out(api, limit):
    api.minute_s = 2.0
    prompts = [
        Request.chat(
            [{"role": "user", "content": f"Count to {i}."}], Sampling(max_tokens=8, seed=i)
        )
        for i in range(6)
    ]
    # One request costs about 8 + 10 tokens: a limit of 2 per 2 s either way.
    api.add_key(KEY, **({"rpm": 2} if limit == "requests" else {"tpm": 40}))
    # A fixed pool of 6 (the adaptive one would not overshoot: see below).
    backend = OpenAIBackend(
        MODES["none"],
        api.url,
        KEY_ENV,
        max_concurrency=6,
        max_attempts=30,
        response_format="none",
        adaptive=False,
    )
    answers = backend.generate(prompts)
    assert all(a[0].completion_tokens > 0 for a in answers)
    limited = api.entries(429)
    assert limited, "the limit was never reached"
    assert len(api.entries(200)) == 6 and api.repeats() == 0
    for entry in limited:
        assert entry.code == "rate_limit_exceeded" and int(entry.headers["retry-after"]) >= 1
        assert entry.headers[f"x-ratelimit-remaining-{limit}"] == "0" or limit == "tokens"
        for name in ("limit", "remaining", "reset"):
            assert f"x-ratelimit-{name}-{limit}" in entry.headers
    assert all(f"x-ratelimit-limit-{limit}" in e.headers for e in api.entries(200))


@pytest.mark.slow
@pytest.mark.parametrize("limit", ["requests", "tokens"])
def test_the_adaptive_pool_paces_itself_under_the_rate_limit(api, limit):
    """The same limits and pool size: the backend reads the x-ratelimit headers and starts a
    request only when the bucket holds it, so the fixed pool's 429s do not happen."""
    api.minute_s = 2.0
    prompts = [
        Request.chat(
            [{"role": "user", "content": f"Count to {i}."}], Sampling(max_tokens=8, seed=i)
        )
        for i in range(8)
    ]
    api.add_key(KEY, **({"rpm": 2} if limit == "requests" else {"tpm": 40}))
    backend = OpenAIBackend(
        MODES["none"], api.url, KEY_ENV, max_concurrency=6, max_attempts=30, response_format="none"
    )
    answers = backend.generate(prompts)
    assert all(a[0].completion_tokens > 0 for a in answers)
    assert len(api.entries(200)) == 8 and api.repeats() == 0
    assert len(api.entries(429)) == backend.limited == 0


@pytest.mark.slow
def test_server_errors_dropped_connections_and_slow_answers_are_retried(api):
    api.fault("server_error", times=2)
    api.fault("drop", times=1)
    api.fault("slow", times=1, delay_s=3.0)
    prompts = [
        Request.chat(
            [{"role": "user", "content": f"Name a color, {i}."}], Sampling(max_tokens=8, seed=i)
        )
        for i in range(3)
    ]
    backend = OpenAIBackend(
        MODES["none"],
        api.url,
        KEY_ENV,
        max_concurrency=1,
        max_attempts=6,
        timeout_s=1.5,
        response_format="none",
    )
    answers = backend.generate(prompts)
    assert [len(a) for a in answers] == [1, 1, 1]
    statuses = [e.status for e in api.log]
    assert statuses.count(500) == 2 and statuses.count(None) == 1
    # The slow answer was given after the client had stopped waiting: it was sent again.
    assert [e.fault for e in api.log].count("slow") == 1
    assert len(api.entries(200)) == 4 and api.repeats() == 1


# --- answers committed as they arrive -------------------------------------------------------


def _prompts(n: int, max_tokens: int = 8) -> list[Request]:
    return [
        Request.chat(
            [{"role": "user", "content": f"Name an animal, {i}."}],
            Sampling(max_tokens=max_tokens, seed=i),
            id=f"p{i}",
        )
        for i in range(n)
    ]


@pytest.mark.slow
def test_answers_reach_the_cache_while_the_slowest_request_is_pending(api, tmp_path):
    """Request 1 takes 8 s; the four after it are answered and committed meanwhile, through
    the other slot, whatever SPEED_CACHE_FLUSH_EVERY (2 here) says."""
    prompts = _prompts(6)
    api.fault("slow", when=lambda body: "animal, 1." in body["messages"][-1]["content"], delay_s=8)
    backend = OpenAIBackend(
        MODES["none"], api.url, KEY_ENV, max_concurrency=2, response_format="none"
    )
    client = LLMClient(backend, CompletionCache(tmp_path / "completions"), flush_every=2)
    worker = threading.Thread(target=client.generate, args=(prompts,))
    worker.start()
    deadline = time.monotonic() + 120
    while len(api.entries(200)) < 5 and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(0.5)  # the last of them reaches the client
    pending = [e for e in api.log if e.fault == "slow"]
    assert len(pending) == 1 and pending[0].status is None, "the slow request already answered"
    keys = [cache_key(backend.identity, r, 0) for r in prompts]
    reader = CompletionCache(tmp_path / "completions")
    assert set(reader.get_many(keys)) == {keys[i] for i in (0, 2, 3, 4, 5)}
    reader.close(compact=False)
    worker.join(timeout=120)
    assert len(client.cache) == 6 and len(api.entries(200)) == 6


@pytest.mark.slow
def test_a_killed_teacher_job_pays_for_no_answer_again(api, tmp_path, monkeypatch):
    """A seed job in its own process, under a budget, is SIGKILLed after 5 of its 12 answers
    (the 6th and 7th hang in the server); the rerun sends exactly the other 7 requests, none
    of them a repeat of an answer the killed job got, and the spend table counts 12 calls."""
    monkeypatch.setenv(ENV_VAR, budget_env("kill", {"max_calls": 100}))
    params = small_params(max_tokens=16)
    inputs = write_inputs(tmp_path / "in", params, n=12)
    llm = spec(api, "json_schema", max_concurrency=2)
    arrivals = itertools.count()
    api.fault("slow", delay_s=lambda: 0.0 if next(arrivals) < 5 else 10.0)
    args = tmp_path / "job.json"
    job = {"stage": "seed", "llm": llm, "root": str(tmp_path), "params": params}
    args.write_text(json.dumps({**job, "inputs": {k: str(v) for k, v in inputs.items()}}))
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.teacher_stages", str(args)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        deadline = time.monotonic() + 180
        while len(api.entries(200)) < 5 and time.monotonic() < deadline:
            assert proc.poll() is None, "the job ended before it was killed"
            time.sleep(0.1)
        time.sleep(1.0)  # the fifth answer reaches the job
        answered = {json.dumps(e.body, sort_keys=True) for e in api.entries(200)}
        assert len(answered) == 5 and len(api.log) == 7  # two in flight, hanging
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()

    api.faults.clear()
    mark = len(api.log)
    result = run_stage("seed", llm, tmp_path, params, inputs)
    rerun = api.log[mark:]
    assert [e.status for e in rerun] == [200] * 7
    assert not answered & {json.dumps(e.body, sort_keys=True) for e in rerun}
    assert result["kept"] + result["rejected"] == 12
    guard = SpendGuard(tmp_path / "cache" / "spend.sqlite", "kill", {}, Price())
    assert guard.spent()["calls"] == 12  # the killed job's answers settled, its hold released
    guard.close()
