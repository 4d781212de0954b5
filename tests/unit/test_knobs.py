"""Knobs, the backend settings that change no output, reach jobs without being rule params or
part of the call cache key (speed/llm/knobs.py, config/README.md): changing one reruns nothing,
while changing a setting that decides outputs reruns what it touches."""

from __future__ import annotations

import copy
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from speed import workflow as wf
from speed.llm.factory import backend_options, make_backend
from speed.llm.knobs import ENV_VAR, knobs_env, knobs_for
from speed.llm.types import Request, Sampling
from speed.plan import load_config
from tests.conftest import ROOT, copy_workflow, snakemake

ALL_KNOBS = {*wf.OPENAI_KNOBS, *wf.BATCH_KNOBS, *(k for ks in wf.ENGINE_KNOBS.values() for k in ks)}


def schema_keys(*path: str) -> set[str]:
    node = yaml.safe_load((ROOT / "config" / "schema.yaml").read_text())
    for key in path:
        node = node["properties"][key]
    return set(node["properties"])


def config(**changes: Any) -> dict[str, Any]:
    """The default config with dotted-path changes (`teacher.backend`: "openai")."""
    cfg = load_config(ROOT / "config" / "config.yaml")
    for dotted, value in changes.items():
        set_key(cfg, dotted, value)
    return cfg


def set_key(cfg: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, last = dotted.split(".")
    node = cfg
    for p in parents:
        node = node.setdefault(p, {})
    node[last] = value


OPENAI_BATCH = {"teacher.backend": "openai", "teacher.openai.batch.enabled": True}


def test_every_backend_setting_is_a_knob_or_an_output_setting():
    """A key added to the schema fails here until it is classed (and documented)."""
    for engine in ("vllm", "transformers"):
        knobs, outputs = set(wf.ENGINE_KNOBS[engine]), set(wf.ENGINE_OUTPUTS[engine])
        assert not knobs & outputs
        assert schema_keys("backends", engine) == knobs | outputs, engine
    assert schema_keys("teacher", "openai") == {*wf.OPENAI_KNOBS, *wf.OPENAI_OPTIONS, "batch"}
    # `enabled` picks the backend and the price, `price_factor` the price: rule params both.
    batch = schema_keys("teacher", "openai", "batch")
    assert batch == {*wf.BATCH_KNOBS, "enabled", "price_factor"}


def keys_of(node: Any) -> set[str]:
    if isinstance(node, dict):
        return set(node) | {k for v in node.values() for k in keys_of(v)}
    if isinstance(node, list):
        return {k for v in node for k in keys_of(v)}
    return set()


@pytest.mark.parametrize(
    "changes",
    [{}, {"generation.backend": "vllm", "teacher.backend": "vllm"}, OPENAI_BATCH],
    ids=["transformers", "vllm", "openai-batch"],
)
def test_specs_hold_no_knob_and_the_env_holds_them_all(changes):
    cfg = config(**changes)
    specs = [wf.teacher_spec(cfg), wf.generator_spec(cfg, "junior", "models/junior")]
    assert not keys_of(specs) & ALL_KNOBS
    knobs = wf.knobs(cfg)
    for engine, names in wf.ENGINE_KNOBS.items():
        assert knobs[engine] == {
            k: cfg["backends"][engine][k] for k in names if k in cfg["backends"][engine]
        }
    assert knobs["openai"] == {k: cfg["teacher"]["openai"][k] for k in wf.OPENAI_KNOBS}
    batch = cfg["teacher"]["openai"]["batch"]
    assert knobs["openai_batch"] == {k: batch[k] for k in wf.BATCH_KNOBS}
    # What decides outputs is still there.
    local = wf.generator_spec(cfg, "junior", "models/junior")["options"]
    assert local["dtype"] == cfg["backends"][cfg["generation"]["backend"]]["dtype"]


def test_openai_knobs_reach_the_backend_and_leave_its_identity(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    built = []
    for concurrency, poll in [(3, 7.5), (50, 120.0)]:
        cfg = config(**OPENAI_BATCH)
        set_key(cfg, "teacher.openai.max_concurrency", concurrency)
        set_key(cfg, "teacher.openai.max_attempts", concurrency + 1)
        set_key(cfg, "teacher.openai.timeout_s", 9.0)
        set_key(cfg, "teacher.openai.batch.poll_s", poll)
        set_key(cfg, "teacher.openai.batch.max_requests", 123)
        monkeypatch.setenv(ENV_VAR, knobs_env(wf.knobs(cfg)))
        backend = make_backend(wf.teacher_spec(cfg))
        assert (backend.max_concurrency, backend.max_attempts) == (concurrency, concurrency + 1)
        assert (backend.timeout_s, backend.poll_s, backend.max_requests) == (9.0, poll, 123)
        built.append(backend)
    assert built[0].identity == built[1].identity


def test_spec_options_win_and_no_env_means_defaults(monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)
    assert backend_options("vllm", {"dtype": "float32"}) == {"dtype": "float32"}
    env = {"vllm": {"kv_cache_gib": 1, "enforce_eager": True}, "openai_batch": {"poll_s": 5}}
    monkeypatch.setenv(ENV_VAR, knobs_env(env))
    assert backend_options("vllm", {"dtype": "float32", "kv_cache_gib": 4}) == {
        "dtype": "float32", "kv_cache_gib": 4, "enforce_eager": True
    }  # fmt: skip
    assert backend_options("openai", {"batch": {"state_dir": "s"}}) == {
        "batch": {"state_dir": "s", "poll_s": 5}
    }
    assert backend_options("transformers", {}) == {}
    monkeypatch.setenv(ENV_VAR, "{not json")
    with pytest.raises(ValueError, match=ENV_VAR):
        knobs_for("vllm")


def test_transformers_batch_size_changes_no_answer_and_no_key(tiny_models, monkeypatch):
    """The knob's claim on the real engine: rows decode alone whatever shares their batch."""
    schema = {
        "type": "object",
        "properties": {"query": {"type": "string", "maxLength": 30}},
        "required": ["query"],
        "additionalProperties": False,
    }
    requests = [
        Request.chat([{"role": "user", "content": "word " * i}], Sampling(t, 1.0, 24, seed=i), s)
        for i in range(6)
        for t, s in [(0.0, None), (1.0, schema)]
    ]
    spec = {
        "backend": "transformers",
        "model": tiny_models["base"],
        "options": {"dtype": "float32"},
    }
    answers, identities = [], []
    for batch_size in (1, 5):
        monkeypatch.setenv(ENV_VAR, knobs_env({"transformers": {"batch_size": batch_size}}))
        backend = make_backend(spec)
        assert backend.batch_size == batch_size
        answers.append([[c.text for c in cs] for cs in backend.generate(requests)])
        identities.append(backend.identity)
        backend.close()
    assert answers[0] == answers[1]
    assert identities[0] == identities[1]
    other = make_backend({**spec, "options": {"dtype": "bfloat16"}})
    assert other.identity != identities[0]  # precision decides answers: part of the key
    other.close()


# -- the job plan ------------------------------------------------------------------------------

# Prints (to a file) every output of every job of the workflow's DAG and whether it is a
# directory(), through Snakemake's own API (in a child: the API changes the working directory).
OUTPUTS = """
import json, sys
from pathlib import Path
from snakemake.api import SnakemakeApi
from snakemake.io import is_flagged
from snakemake.settings.types import ConfigSettings, OutputSettings, ResourceSettings

with SnakemakeApi(OutputSettings(quiet={"all"})) as api:
    workflow = api.workflow(
        resource_settings=ResourceSettings(),
        config_settings=ConfigSettings(),
        snakefile=Path("Snakefile"),
        workdir=Path.cwd(),
    ).dag().workflow_api._workflow
    workflow._prepare_dag(forceall=False, ignore_incomplete=True, lock_warn_only=True)
    workflow._build_dag()
    outputs = {str(f): is_flagged(f, "directory") for job in workflow.dag.jobs for f in job.output}
Path(sys.argv[1]).write_text(json.dumps(outputs))
"""
API_KEY = {"OPENAI_API_KEY": "sk-not-used"}  # onstart wants it for an openai teacher


def planned_jobs(
    workflow: Path, *targets: str, env: dict[str, str] | None = None
) -> dict[str, int]:
    """Rule -> job count from a dry run's job stats table ({} when nothing is to be done)."""
    text = snakemake(workflow, "-n", *targets, env=env).stdout
    if "Nothing to be done" in text:
        return {}
    table = text.split("Job stats:", 1)[1].split("total", 1)[0]
    return {m[1]: int(m[2]) for m in re.finditer(r"^(\w+)\s+(\d+)\s*$", table, re.M)}


def completed_run(root: Path, **changes: Any) -> Path:
    """A workflow copy whose whole DAG counts as run under `changes`: every output made empty,
    then `--touch --forceall`, which records each job's params, code and software env in
    Snakemake's metadata as a real run does. Nothing runs and nothing is computed."""
    workflow = copy_workflow(root)
    cfg_file = workflow / "config" / "config.yaml"
    cfg = yaml.safe_load(cfg_file.read_text())
    for dotted, value in changes.items():
        set_key(cfg, dotted, value)
    cfg_file.write_text(yaml.safe_dump(cfg, sort_keys=False))
    listing = workflow / "outputs.json"
    proc = subprocess.run(
        [sys.executable, "-c", OUTPUTS, str(listing)], cwd=workflow, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    for path, is_dir in json.loads(listing.read_text()).items():
        target = workflow / path
        target.mkdir(parents=True, exist_ok=True) if is_dir else target.parent.mkdir(
            parents=True, exist_ok=True
        )
        if not is_dir:
            target.touch()
    snakemake(workflow, "--touch", "--forceall", "--cores", "1", env=API_KEY)
    assert planned_jobs(workflow) == {}, "the faked run is not complete"
    return workflow


def with_change(workflow: Path, dotted: str, value: Any, *targets: str) -> dict[str, int]:
    """The jobs a dry run plans after one config change; the config is restored after."""
    cfg_file = workflow / "config" / "config.yaml"
    original = cfg_file.read_text()
    cfg = yaml.safe_load(original)
    before = copy.deepcopy(cfg)
    set_key(cfg, dotted, value)
    assert cfg != before, f"{dotted} is {value!r} already"
    # Keep key order: Snakemake compares params by their repr, so reordering is a change.
    cfg_file.write_text(yaml.safe_dump(cfg, sort_keys=False))
    try:
        return planned_jobs(workflow, *targets)
    finally:
        cfg_file.write_text(original)


# The default config with vLLM generators (a transformers teacher): both local engines in use.
LOCAL = {"generation.backend": "vllm"}


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("knobs")
    return {
        "local": completed_run(root / "local", **LOCAL),
        "openai": completed_run(root / "openai", **OPENAI_BATCH),
    }


KNOB_CHANGES = [
    ("local", "backends.transformers.batch_size", 3),  # the teacher's engine here
    ("local", "backends.vllm.kv_cache_gib", 7),  # the generators' engine here
    ("local", "backends.vllm.max_lora_rank", 64),
    ("local", "backends.vllm.enforce_eager", False),
    ("local", "backends.vllm.tensor_parallel_size", 2),
    ("local", "backends.vllm.max_num_seqs", 64),
    ("local", "backends.vllm.max_num_batched_tokens", 4096),
    ("local", "backends.vllm.gpu_memory_utilization", 0.5),
    ("local", "backends.vllm.enable_prefix_caching", False),
    ("local", "backends.vllm.kv_cache_gib", None),  # null: gpu_memory_utilization sizes it
    ("local", "resources.gpu.threads", 6),  # threads of generation (and training) jobs
    ("local", "resources.llm.threads", 6),  # threads of teacher jobs on a local model
    ("local", "junior.processes", 2),  # data-parallel ranks: the same batches, the same weights
    ("local", "embedding.processes", 2),
    ("openai", "teacher.openai.max_concurrency", 64),
    ("openai", "teacher.openai.max_attempts", 9),
    ("openai", "teacher.openai.timeout_s", 600),
    ("openai", "teacher.openai.batch.poll_s", 5),
    ("openai", "teacher.openai.batch.max_requests", 1000),
    ("openai", "teacher.openai.batch.completion_window", "48h"),
]


@pytest.mark.slow
@pytest.mark.parametrize(("run", "key", "value"), KNOB_CHANGES, ids=[k for _, k, _ in KNOB_CHANGES])
def test_a_knob_reruns_nothing(runs, run, key, value):
    assert with_change(runs[run], key, value) == {}


@pytest.mark.slow
def test_the_cache_flush_interval_reruns_nothing(runs):
    for run in runs.values():
        assert planned_jobs(run, env={"SPEED_CACHE_FLUSH_EVERY": "3"}) == {}


TEACHER_STAGES = {"brainstorm": 4, "seed": 1, "judge": 1, "revise": 1}
GENERATOR_STAGES = {"candidates": 1, "synth_raw": 2, "synth_revised": 2}
BEFORE_TEACHER = {"tiny_tokenizer", "tiny_llm", "topics"}
# The teacher's judgments and revisions read the junior's candidates: they do rerun.
BEFORE_JUNIOR = {*BEFORE_TEACHER, "brainstorm", "prompts", "seed", "junior"}


@pytest.mark.slow
@pytest.mark.parametrize(
    ("run", "key", "value", "reruns", "untouched"),
    [
        ("local", "backends.transformers.dtype", "bfloat16", TEACHER_STAGES, BEFORE_TEACHER),
        ("local", "backends.vllm.dtype", "bfloat16", GENERATOR_STAGES, BEFORE_JUNIOR),
        ("local", "backends.vllm.max_model_len", 1024, GENERATOR_STAGES, BEFORE_JUNIOR),
        ("openai", "teacher.openai.base_url", "http://127.0.0.1:9/v1", TEACHER_STAGES,
         BEFORE_TEACHER),
    ],
    ids=["transformers.dtype", "vllm.dtype", "vllm.max_model_len", "openai.base_url"],
)  # fmt: skip
def test_an_output_setting_reruns_what_it_touches(runs, run, key, value, reruns, untouched):
    """The same plan is sensitive: a setting that decides outputs is a param."""
    planned = with_change(runs[run], key, value)
    assert {rule: planned.get(rule) for rule in reruns} == reruns, planned
    assert not untouched & set(planned), planned


@pytest.mark.slow
def test_knobs_reach_a_real_job_and_changing_one_reruns_nothing(tmp_path):
    """The whole channel on a real (small) run: config -> Snakefile -> SPEED_KNOBS -> the job's
    backend, named in the job's log; then a changed knob leaves the finished job alone."""
    workflow = copy_workflow(tmp_path / "wf")
    cfg_file = workflow / "config" / "config.yaml"
    cfg = yaml.safe_load(cfg_file.read_text())
    set_key(cfg, "backends.transformers.batch_size", 3)
    cfg["smoke"] = {"requests": 2, "max_tokens": 16}
    cfg_file.write_text(yaml.safe_dump(cfg, sort_keys=False))
    target = "results/tiny/smoke/teacher.jsonl"
    snakemake(workflow, "--cores", "2", target)
    log = (workflow / "results/tiny/logs/smoke_teacher.log").read_text()
    assert 'transformers backend knobs: {"batch_size": 3}' in log
    assert with_change(workflow, "backends.transformers.batch_size", 5, target) == {}
    dtype = with_change(workflow, "backends.transformers.dtype", "bfloat16", target)
    assert dtype == {"smoke_teacher": 1}
