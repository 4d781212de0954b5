"""Conda envs (envs/*.yaml) agree with requirements/*.txt; every job rule names one."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
ENVS = sorted((ROOT / "envs").glob("*.yaml"))
# env -> the requirements files its pins come from, and the inference engine it carries whole
SOURCES = {
    "data.yaml": (["common.txt"], None),
    "llm.yaml": (["common.txt", "engine-cpu.txt"], "engine-cpu.txt"),
    "llm-gpu.yaml": (["common.txt", "engine-gpu.txt"], "engine-gpu.txt"),
    "embed.yaml": (["common.txt", "engine-cpu.txt"], None),  # torch only
}


def requirements(*names: str) -> dict[str, Requirement]:
    reqs = {}
    for name in names:
        for line in (ROOT / "requirements" / name).read_text().splitlines():
            line = line.split("#", 1)[0].strip()
            if line and not line.startswith("-"):
                req = Requirement(line)
                reqs[canonicalize_name(req.name)] = req
    return reqs


def env_pip(path: Path) -> tuple[list, dict[str, Requirement]]:
    spec = yaml.safe_load(path.read_text())
    deps = spec["dependencies"]
    pip = next(d["pip"] for d in deps if isinstance(d, dict) and "pip" in d)
    reqs = [Requirement(p) for p in pip]
    return deps, {canonicalize_name(r.name): r for r in reqs}


def test_every_env_is_listed():
    assert {p.name for p in ENVS} == set(SOURCES)


@pytest.mark.parametrize("path", ENVS, ids=lambda p: p.name)
def test_env_pins_agree_with_requirements(path):
    deps, pip = env_pip(path)
    assert "python=3.11" in deps and "pip" in deps
    sources, engine = SOURCES[path.name]
    pinned = requirements(*sources)
    for name, req in pip.items():
        assert name in pinned, f"{path.name}: {name} is not in requirements/"
        assert req.specifier == pinned[name].specifier, (
            f"{path.name}: {req} but requirements/ say {pinned[name]}"
        )
    if engine:  # the whole inference engine, not part of it
        assert set(requirements(engine)) <= set(pip)
    # Snakemake runs jobs from the submitting environment, and the package comes from the
    # post-deploy script (a path in the env file would be resolved in .snakemake/conda/).
    assert "snakemake" not in pip
    deploy = path.with_name(path.stem + ".post-deploy.sh")
    assert "pip install" in deploy.read_text() and "-e" in deploy.read_text()


# Loads the workflow with Snakemake's own API in a child process (the API changes the working
# directory and sets up logging) and prints, per rule, whether it runs a job and the conda env
# file it names, resolved as Snakemake resolves it (against the rule's own file). Twice: with
# the config as shipped, and with GPU jobs, where model-running rules switch to the CUDA env.
RULES = """
import json, sys
from pathlib import Path
from snakemake.api import SnakemakeApi
from snakemake.settings.types import ConfigSettings, OutputSettings, ResourceSettings

def rules(config):
    with SnakemakeApi(OutputSettings(quiet={"all"})) as api:
        workflow = api.workflow(
            resource_settings=ResourceSettings(),
            config_settings=ConfigSettings(config=config),
            snakefile=Path("Snakefile"),
            workdir=Path.cwd(),
        )._workflow
        return {
            rule.name: {
                "runs": not rule.norun,  # has a script, shell, run, wrapper or notebook
                "conda": None if rule.conda_env is None
                else str((Path(rule.basedir) / rule.conda_env).resolve()),
            }
            for rule in workflow.rules
        }

gpu = {"resources": {"llm": {"gpu": 1}, "gpu": {"gpu": 1}}}
json.dump({"cpu": rules({}), "gpu": rules(gpu)}, sys.stdout)
"""


def workflow_rules(workdir: Path) -> dict[str, dict[str, dict]]:
    """Per setting ("cpu", "gpu"): rule name -> {"runs": bool, "conda": env path or None}."""
    proc = subprocess.run(
        [sys.executable, "-c", RULES], cwd=workdir, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_every_job_rule_names_a_conda_env(workflow):
    """Every rule that runs a job names one of envs/*.yaml, in either GPU setting."""
    found = workflow_rules(workflow)
    envs_dir = (workflow / "envs").resolve()
    used: set[str] = set()
    for setting, rules in found.items():
        jobs = {name for name, rule in rules.items() if rule["runs"]}
        assert {"topics", "seed", "junior", "synth_raw", "corpus"} <= jobs, setting
        assert "all" in rules and "all" not in jobs  # a target rule, nothing to run
        for name in sorted(jobs):
            conda = rules[name]["conda"]
            assert conda, f"rule {name} has no conda: directive ({setting})"
            env = Path(conda)
            assert env.parent == envs_dir and env.name in SOURCES and env.is_file(), (
                f"rule {name} ({setting}): {conda} is not one of envs/*.yaml"
            )
            used.add(env.name)
    # Every env serves some job, and the model-running rules follow the GPU setting.
    assert used == set(SOURCES)
    for name, cpu, gpu in [
        ("junior", "llm.yaml", "llm-gpu.yaml"),
        ("seed", "llm.yaml", "llm-gpu.yaml"),
        ("corpus", "data.yaml", "data.yaml"),
    ]:
        assert Path(found["cpu"][name]["conda"]).name == cpu, name
        assert Path(found["gpu"][name]["conda"]).name == gpu, name
