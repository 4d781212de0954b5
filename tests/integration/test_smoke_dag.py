"""The default workflow from a clean results dir, then a no-op rerun."""

import json

import pytest

from speed.io import read_jsonl
from tests.conftest import snakemake


@pytest.mark.slow
def test_smoke_dag_runs_then_has_nothing_to_do(workflow):
    snakemake(workflow, "--cores", "2")
    run = workflow / "results" / "tiny"
    rows = read_jsonl(run / "smoke" / "teacher.jsonl")
    assert len(rows) == 8
    for row in rows:
        assert set(json.loads(row["text"])) == {"topic", "sentence"}
    ledger = read_jsonl(run / "ledger" / "smoke.jsonl")
    assert len(ledger) == 8 and all(r["stage"] == "smoke" and not r["cached"] for r in ledger)
    assert all(r["prompt_tokens"] > 0 and r["completion_tokens"] > 0 for r in ledger)

    dry = snakemake(workflow, "-n")
    assert "Nothing to be done" in dry.stdout + dry.stderr

    # Rebuilding one target reuses the call cache: no model call is paid twice.
    snakemake(workflow, "--cores", "2", "--forcerun", "smoke_teacher")
    ledger = read_jsonl(run / "ledger" / "smoke.jsonl")
    assert len(ledger) == 8 and all(r["cached"] for r in ledger)
    assert read_jsonl(run / "smoke" / "teacher.jsonl") == rows
