"""Shared fixtures: tiny offline models and throwaway copies of the workflow."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.eval_data import eval_data_dir, unavailable_reason

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")

ROOT = Path(__file__).resolve().parents[1]
SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))
WORKFLOW_FILES = ["Snakefile", "rules", "scripts", "config", "profiles", "envs", "docs"]


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> dict[str, str]:
    from speed.models.tiny import build_llama, build_tokenizer

    root = tmp_path_factory.mktemp("tiny")
    paths = {name: str(root / name) for name in ("tokenizer", "base", "teacher")}
    build_tokenizer(paths["tokenizer"], vocab_size=1024)
    build_llama(paths["base"], paths["tokenizer"], 64, 2, 2, seed=12)
    build_llama(paths["teacher"], paths["tokenizer"], 128, 2, 4, seed=11)
    return paths


@pytest.fixture(scope="session")
def eval_data() -> Path:
    """The offline MTEB test sets (tests/eval_data.py): skip without them, fail in CI."""
    root = eval_data_dir()
    reason = unavailable_reason(root)
    if reason and os.environ.get("SPEED_EVAL_DATA_REQUIRED") == "1":
        pytest.fail(reason)
    if reason:
        pytest.skip(reason)
    return root


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # The marker follows the fixture, so `-m eval_data` selects every test that needs the sets.
    for item in items:
        if "eval_data" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.eval_data)


def copy_workflow(dest: Path) -> Path:
    """A runnable copy of the workflow (the package itself is installed, editable)."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in WORKFLOW_FILES:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, dest / name)
        else:
            shutil.copy2(src, dest / name)
    return dest


def snakemake(
    workdir: Path, *args: str, env: dict[str, str] | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [SNAKEMAKE, *args],
        cwd=workdir,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=1500,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.fixture
def workflow(tmp_path) -> Path:
    return copy_workflow(tmp_path / "wf")
