"""The default (tiny, offline) workflow end to end: a clean run, a no-op rerun, a rebuild served
from the call cache, a config change that reruns exactly its downstream jobs, and one target."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from speed.io import read_jsonl
from tests.conftest import snakemake

FAMILIES = {"classification", "retrieval", "sts", "s2s", "p2p"}


def planned_jobs(workflow: Path, *args: str) -> dict[str, int]:
    """Rule -> job count from a dry run's job stats table."""
    out = snakemake(workflow, "-n", *args).stdout
    if "Nothing to be done" in out:
        return {}
    table = out.split("Job stats:", 1)[1].split("total", 1)[0]
    return {m[1]: int(m[2]) for m in re.finditer(r"^(\w+)\s+(\d+)\s*$", table, re.M)}


@pytest.mark.slow
def test_default_dag(workflow):
    snakemake(workflow, "--cores", "2")
    run = workflow / "results" / "tiny"

    seeds = read_jsonl(run / "teacher" / "seed.jsonl")
    assert {r["family"] for r in seeds} == FAMILIES
    stats = json.loads((run / "teacher" / "seed.stats.json").read_text())
    assert stats["prompts"] == stats["kept"] + stats["rejected"] == 46
    for r in seeds:
        assert r["query"] and r["positive"] and r["instruction"] and r["prompt_id"]
        assert (r["negative"] is None) == (r["family"] in {"s2s", "p2p"})
    ledger = [r for p in sorted((run / "ledger").glob("*.jsonl")) for r in read_jsonl(p)]
    assert sum(r["stage"] == "brainstorm" for r in ledger) == 4 * 24
    assert sum(r["stage"] == "seed" for r in ledger) == 46
    assert not any(r["cached"] for r in ledger)

    assert planned_jobs(workflow) == {}

    # A forced rebuild is served by the call cache: same output, nothing paid twice.
    snakemake(workflow, "--cores", "2", "--forcerun", "seed")
    assert read_jsonl(run / "teacher" / "seed.jsonl") == seeds
    assert all(r["cached"] for r in read_jsonl(run / "ledger" / "seed.jsonl"))

    # Changing topics.n reruns topics and everything downstream of it, and nothing else.
    cfg_file = workflow / "config" / "config.yaml"
    config = yaml.safe_load(cfg_file.read_text())
    config["topics"]["n"] = 20
    # Keep key order: Snakemake compares params by their repr, so reordering is a change.
    cfg_file.write_text(yaml.safe_dump(config, sort_keys=False))
    assert planned_jobs(workflow) == {
        "topics": 1, "brainstorm": 4, "prompts": 4, "seed": 1, "all": 1
    }  # fmt: skip

    # One target alone: the smoke job only needs the (existing) teacher model.
    assert planned_jobs(workflow, "results/tiny/smoke/teacher.jsonl") == {"smoke_teacher": 1}
    snakemake(workflow, "--cores", "2", "results/tiny/smoke/teacher.jsonl")
    for row in read_jsonl(run / "smoke" / "teacher.jsonl"):
        assert set(json.loads(row["text"])) == {"topic", "sentence"}
