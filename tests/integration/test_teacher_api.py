"""The teacher stages through an OpenAI-compatible API (a real local vLLM server), and secrets:
the planted API key must not reach any file the run leaves behind."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from speed.io import read_jsonl
from tests.conftest import snakemake
from tests.servers import free_port, serve, vllm_server_cmd

KEY_ENV = "SPEED_TEST_SECRET_KEY"
KEY = "sk-planted-secret-7f3a9c2e5d1b"


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


def test_missing_key_fails_before_any_job(workflow):
    _api_config(workflow, "http://127.0.0.1:9/v1")
    assert KEY_ENV not in os.environ
    proc = snakemake(workflow, "--cores", "1", check=False)
    assert proc.returncode != 0
    assert KEY_ENV in proc.stdout + proc.stderr
    assert not (workflow / "results").exists()
