"""Conda envs (envs/*.yaml) agree with requirements/*.txt; every job rule names one."""

from __future__ import annotations

import re
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


def _job_rules() -> dict[str, str]:
    """rule name -> body, for every rule with something to run (script/shell/run/wrapper)."""
    rules = {}
    for smk in [ROOT / "Snakefile", *sorted((ROOT / "rules").glob("*.smk"))]:
        for m in re.finditer(r"^rule (\w+):\n((?:[ \t]+.*\n|\n)*)", smk.read_text(), re.M):
            name, body = m.groups()
            if re.search(r"^\s+(script|shell|run|wrapper|notebook):", body, re.M):
                rules[name] = body
    return rules


def test_every_job_rule_names_a_conda_env():
    rules = _job_rules()
    assert {"topics", "seed", "junior", "synth_raw", "corpus"} <= set(rules)
    envs = {p.name for p in ENVS}
    for name, body in rules.items():
        m = re.search(r"^\s+conda:\s*\n\s+(.+)$", body, re.M)
        assert m, f"rule {name} has no conda: directive"
        named = set(re.findall(r'"\.\./envs/([\w.-]+\.yaml)"', m.group(1) + body))
        if "llm_env(" in m.group(1):
            named |= {"llm.yaml", "llm-gpu.yaml"}
        assert named and named <= envs, f"rule {name}: {m.group(1)}"
