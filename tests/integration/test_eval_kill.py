"""A killed evaluation job (SIGKILL) of one task: the other tasks' files stay as they were, the
killed task leaves no file, and the rerun resumes from mteb's cache under cache_dir, running
only the split the killed job had not finished."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.eval_folders import pair_folder, sts_folder

pytestmark = pytest.mark.slow  # about 30 s: three jobs, each loading the model

# One evaluation job as rule evaluate runs it (speed.stages.evaluate), in its own process. With
# SPLITS=2 the task gets a second eval split (a copy of test named dev), as multi-split mteb
# tasks have, and with SLOW set every encode call after the first split's two sleeps, so the
# test can kill the job between its splits. It prints how many texts it encoded.
JOB = """
import logging, sys, time
import speed.eval.run as run
from speed.stages.evaluate import evaluate_variant

spec, out, cache, splits, slow = sys.argv[1:6]
logging.basicConfig(level=logging.WARNING)
logging.getLogger("speed").setLevel(logging.INFO)
load_tasks, encoder = run.load_tasks, run._encoder
texts = []


def two_splits(specs):
    tasks = load_tasks(specs)
    for task in tasks:
        cls = type(task)
        cls.metadata = cls.metadata.model_copy(update={"eval_splits": ["test", "dev"]})
        load = cls.load_data

        def load_data(self, *a, load=load, **kw):
            load(self, *a, **kw)
            for subset in self.dataset.values():
                subset["dev"] = subset["test"]

        cls.load_data = load_data
    return tasks


def counting_encoder(*a, **kw):
    enc = encoder(*a, **kw)
    encode = enc.encode

    def counted(inputs, **kwargs):
        if slow == "1" and len(texts) >= 2:  # the test split is done (and cached)
            time.sleep(600)
        batch = [t for b in inputs for t in b["text"]]
        texts.append(len(batch))
        return encode(inputs, **kwargs)

    enc.encode = counted
    return enc


if splits == "2":
    run.load_tasks = two_splits
run._encoder = counting_encoder
evaluate_variant("base", spec, None, "minilm", out, cache)
print("ENCODED", len(texts), flush=True)
"""


def job(spec: str, out: Path, cache: Path, splits: int, slow: bool) -> subprocess.Popen:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    args = [sys.executable, "-c", JOB, spec, str(out), str(cache), str(splits), str(int(slow))]
    return subprocess.Popen(
        args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True,
    )  # fmt: skip


def finish(proc: subprocess.Popen) -> str:
    text, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, text
    return text


def test_a_killed_task_leaves_the_others_and_resumes(tmp_path: Path) -> None:
    import mteb

    eval_dir, cache = tmp_path / "eval" / "base", tmp_path / "cache"
    pairs = eval_dir / "TinyPairs.json"
    finish(job(f"local:{pair_folder(tmp_path / 'TinyPairs')}", pairs, cache, 1, False))
    before = (pairs.read_bytes(), pairs.stat().st_mtime_ns)

    sts_spec, sts = f"local:{sts_folder(tmp_path / 'TinySTS')}", eval_dir / "TinySTS.json"
    proc = job(sts_spec, sts, cache, 2, True)
    deadline = time.time() + 300
    cached: list[Path] = []
    while time.time() < deadline and not cached and proc.poll() is None:
        cached = list(cache.rglob("results/*/*/TinySTS.json"))  # saved after its first split
        time.sleep(0.05)
    assert cached, proc.communicate()[0] if proc.poll() is not None else "no cache file"
    time.sleep(0.5)  # now sleeping inside the second split's encoding
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert list(json.loads(cached[0].read_text())["scores"]) == ["test"]
    assert not sts.exists()  # complete or absent
    assert (pairs.read_bytes(), pairs.stat().st_mtime_ns) == before  # the other task untouched

    text = finish(job(sts_spec, sts, cache, 2, False))
    assert "resuming; done: ['test']" in text
    assert "ENCODED 2" in text  # the dev split's two sides only; test came from the cache
    result = mteb.TaskResult.from_disk(sts)
    assert sorted(result.scores) == ["dev", "test"]
    assert (pairs.read_bytes(), pairs.stat().st_mtime_ns) == before
