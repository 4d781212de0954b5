"""A synthesis shard job reads only its share of the prompts: the same rows, in the same order,
as slicing the whole file, with the other rows never parsed."""

from __future__ import annotations

import json
from typing import Any

import pytest

from speed.io import read_jsonl, read_jsonl_share, write_jsonl
from speed.prompts.families import output_schema
from speed.stages.synthesize import run_generate, run_revise_shard
from tests.scripted import ScriptedBackend, registered

SAMPLING = {"temperature": 1.0, "top_p": 1.0, "max_tokens": 200}


def test_a_share_is_the_slice_of_the_whole_file(tmp_path):
    # Rows of uneven length, non-ASCII text, and blank lines (no rows, as read_jsonl has it).
    rows = [{"id": i, "text": "é\u2028 w " * (i * 7 % 13), "n": [i] * (i % 4)} for i in range(23)]
    path = tmp_path / "rows.jsonl"
    lines = [json.dumps(r, ensure_ascii=False) for r in rows]
    lines[5:5] = ["", "   "]
    path.write_text("\n".join(lines) + "\n\n", encoding="utf-8")
    assert read_jsonl(path) == rows
    for parts in (1, 2, 3, 7, 23, 30):
        shares = [read_jsonl_share(path, k, parts) for k in range(parts)]
        assert shares == [rows[k::parts] for k in range(parts)], parts
        assert sorted(r["id"] for share in shares for r in share) == list(range(23))


def test_the_rows_of_other_shares_are_not_parsed(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text('{"id": 0}\n{"id": 1, broken\n{"id": 2}\n{"id": 3}\n')
    assert read_jsonl_share(path, 0, 2) == [{"id": 0}, {"id": 2}]
    with pytest.raises(json.JSONDecodeError):
        read_jsonl_share(path, 1, 2)
    for part, parts in [(2, 2), (-1, 2), (0, 0)]:
        with pytest.raises(ValueError, match="outside"):
            read_jsonl_share(path, part, parts)


def prompt(i: int) -> dict[str, Any]:
    pid = f"synthesis-{i:06d}"
    return {
        "id": pid,
        "purpose": "synthesis",
        "family": "sts",
        "task": None,
        "instruction": "Retrieve semantically similar text.",
        "topic": "Animals",
        "topic_id": f"topic-{i:05d}",
        "messages": [{"role": "user", "content": f"Write one STS example. [{pid}]"}],
        "schema": output_schema("sts", 200),
    }


def answer(_request, _sample) -> str:
    return json.dumps({"S1": "a cat sat", "S2": "a cat was sitting", "S3": "a dog ran"})


def test_shard_jobs_answer_their_share_and_the_revisor_reads_the_same(tmp_path):
    prompts = [prompt(i) for i in range(11)]
    prompts_path = tmp_path / "prompts.jsonl"
    write_jsonl(prompts_path, prompts)
    backend = ScriptedBackend(answer, name="senior")
    with registered(backend) as llm:
        for shard in range(3):
            run_generate(
                llm=llm,
                generator="senior",
                prompts_path=str(prompts_path),
                shard=shard,
                shards=3,
                sampling=SAMPLING,
                seed=1,
                cache_dir=str(tmp_path / "cache"),
                output=str(tmp_path / f"raw{shard}.jsonl"),
            )
    for shard in range(3):
        ids = [r["prompt_id"] for r in read_jsonl(tmp_path / f"raw{shard}.jsonl")]
        assert ids == [p["id"] for p in prompts[shard::3]]
    # Each prompt was asked once, by its own shard's job.
    assert sorted(r.id for r in backend.requests) == [p["id"] for p in prompts]

    revisor = ScriptedBackend(answer, name="revisor")

    def revise(shard: int) -> dict[str, Any]:
        with registered(revisor) as llm:
            return run_revise_shard(
                llm=llm,
                raw_path=str(tmp_path / "raw1.jsonl"),
                prompts_path=str(prompts_path),
                sampling=SAMPLING,
                seed=1,
                cache_dir=str(tmp_path / "cache"),
                output=str(tmp_path / "revised1.jsonl"),
                stats_output=str(tmp_path / "revised1.stats.json"),
                shard=shard,
                shards=3,
            )

    assert revise(1) == {"examples": 4, "outcome": {"revised": 4}}
    assert [r.id for r in revisor.requests] == [p["id"] for p in prompts[1::3]]
    with pytest.raises(ValueError, match="shard 2 of 3"):
        revise(2)  # another shard's raw file: its prompts are not in this share
