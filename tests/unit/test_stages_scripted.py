"""Alignment and synthesis stage functions, run end to end on a scripted backend: each judgment
and revision is chosen by the test, so what the stage keeps, drops and counts can be asserted."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from speed.io import read_json, read_jsonl, write_jsonl
from speed.llm.types import Request
from speed.prompts.align import judge_schema, revisor_messages
from speed.prompts.families import output_schema
from speed.stages.align import revisor_sft_examples, run_judge, run_revise, seed_sft_examples
from speed.stages.synthesize import run_revise_shard
from speed.stages.teacher import stable_seed
from tests.scripted import ScriptedBackend, last_user, registered

SYSTEM = "You write training data for text embeddings."
PRICE = {"prompt_per_m": 1.0, "completion_per_m": 2.0}


def sts(s1: str, s2: str, s3: str) -> str:
    return json.dumps({"S1": s1, "S2": s2, "S3": s3})


A = sts("a cat sat", "a cat was sitting", "a dog ran")
B = sts("the sun rose", "the sun came up", "the moon set")
C = sts("he reads books", "he is reading a book", "she writes letters")
BROKEN = '{"S1": "half an answer'


def messages(pid: str) -> list[dict[str, str]]:
    """A data prompt whose user turn carries the marker `[pid]` the script answers by."""
    return [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": f"Write one STS example about anything. [{pid}]"},
    ]


def candidate(text: str, valid: bool = True) -> dict[str, Any]:
    return {"text": text, "valid": valid, "reason": None if valid else "invalid JSON"}


def candidates_row(pid: str, texts: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "prompt_id": pid,
        "family": "sts",
        "instruction": "Retrieve semantically similar text.",
        "messages": messages(pid),
        "schema": output_schema("sts", 200),
        "candidates": texts,
    }


def verdict(best: Any, worst: Any) -> str:
    return json.dumps({"reason": "because", "best": best, "worst": worst})


def request_of(backend: ScriptedBackend, pid: str) -> Request:
    (req,) = [r for r in backend.requests if f"[{pid}]" in last_user(r)]
    return req


# ---------------------------------------------------------------- run_judge


JUDGE_LISTS = {
    # pid: (candidates, the teacher's answer)
    "normal": ([candidate(A), candidate(B), candidate(C)], verdict(2, 0)),
    "same": ([candidate(A), candidate(B), candidate(C)], verdict(1, 1)),
    "range": ([candidate(A), candidate(B), candidate(C)], verdict(3, 0)),
    "bad-chosen": ([candidate(A), candidate(BROKEN, False), candidate(C)], verdict(1, 0)),
    "bad-rejected": ([candidate(A), candidate(BROKEN, False), candidate(C)], verdict(0, 1)),
    "twins": ([candidate(A), candidate(B), candidate(f"  {A}\n")], verdict(0, 2)),
    "prose": ([candidate(A), candidate(B), candidate(C)], "The second answer is best."),
}


def judge(tmp_path: Path, backend: ScriptedBackend, tag: str = "") -> tuple[dict, Path]:
    out = tmp_path / f"align{tag}"
    write_jsonl(
        tmp_path / "candidates.jsonl",
        [candidates_row(pid, cands) for pid, (cands, _) in JUDGE_LISTS.items()],
    )
    with registered(backend) as llm:
        stats = run_judge(
            llm=llm,
            candidates_path=str(tmp_path / "candidates.jsonl"),
            temperature=0.0,
            max_tokens=128,
            max_reason_chars=300,
            price=PRICE,
            cache_dir=str(tmp_path / "cache"),
            judgments_output=str(out / "judgments.jsonl"),
            pairs_output=str(out / "pairs.jsonl"),
            stats_output=str(out / "judge.stats.json"),
            ledger=str(out / "judge.ledger.jsonl"),
        )
    return stats, out


def judge_backend() -> ScriptedBackend:
    return ScriptedBackend({f"[{pid}]": answer for pid, (_, answer) in JUDGE_LISTS.items()})


def test_judge_keeps_usable_verdicts_as_pairs_and_counts_every_drop(tmp_path):
    backend = judge_backend()
    stats, out = judge(tmp_path, backend)

    assert stats == {
        "lists": 7,
        "pairs": 2,
        "dropped": {
            "best equals worst": 1,
            "index out of range": 1,
            "chosen candidate is invalid": 1,
            "chosen equals rejected": 1,
            "judgment: no JSON object in output": 1,
        },
    }
    assert read_json(out / "judge.stats.json") == stats
    pairs = read_jsonl(out / "pairs.jsonl")
    assert pairs == [
        {
            "prompt_id": "normal",
            "family": "sts",
            "prompt": messages("normal"),
            "chosen": [{"role": "assistant", "content": C}],
            "rejected": [{"role": "assistant", "content": A}],
        },
        {  # an invalid rejected candidate is a fine rejected answer
            "prompt_id": "bad-rejected",
            "family": "sts",
            "prompt": messages("bad-rejected"),
            "chosen": [{"role": "assistant", "content": A}],
            "rejected": [{"role": "assistant", "content": BROKEN}],
        },
    ]
    judgments = {j["prompt_id"]: j for j in read_jsonl(out / "judgments.jsonl")}
    assert list(judgments) == list(JUDGE_LISTS)
    summary = {pid: (j["best"], j["worst"], j["error"]) for pid, j in judgments.items()}
    assert summary == {
        "normal": (2, 0, None),
        "same": (None, None, "best equals worst"),
        "range": (None, None, "index out of range"),
        "bad-chosen": (None, None, "chosen candidate is invalid"),
        "bad-rejected": (0, 1, None),
        "twins": (0, 2, "chosen equals rejected"),  # a usable verdict on two equal texts
        "prose": (None, None, "judgment: no JSON object in output"),
    }
    assert judgments["normal"]["reason"] == "because"
    assert {pid: j["raw"] for pid, j in judgments.items()} == {
        pid: answer for pid, (_, answer) in JUDGE_LISTS.items()
    }


def test_a_verdict_cut_at_max_tokens_is_dropped_as_truncated(tmp_path):
    # "normal" holds a usable verdict; cut at max_tokens, it is no verdict at all.
    backend = ScriptedBackend(
        {f"[{pid}]": answer for pid, (_, answer) in JUDGE_LISTS.items()},
        cut=lambda r: "[normal]" in last_user(r),
    )
    stats, out = judge(tmp_path, backend)
    assert stats["pairs"] == 1 and stats["dropped"]["truncated"] == 1
    judgments = {j["prompt_id"]: j for j in read_jsonl(out / "judgments.jsonl")}
    assert judgments["normal"]["error"] == "truncated"


def test_judge_asks_the_teacher_once_per_list_at_the_given_sampling(tmp_path):
    backend = judge_backend()
    judge(tmp_path, backend)
    assert len(backend.requests) == len(JUDGE_LISTS)
    for pid, (cands, _) in JUDGE_LISTS.items():
        req = request_of(backend, pid)
        assert req.id == pid and req.n == 1
        assert (req.sampling.temperature, req.sampling.max_tokens) == (0.0, 128)
        assert req.sampling.seed == stable_seed("judge", pid)
        assert req.schema == judge_schema(3, 300)
        # the judge sees the request (not the system turn's role) and every candidate, numbered
        user = last_user(req)
        assert SYSTEM in user and all(f"[{i}]\n{c['text']}" in user for i, c in enumerate(cands))
    assert backend.closed == 1


def test_judge_ledger_pays_once_and_a_rerun_comes_from_the_cache(tmp_path):
    backend = judge_backend()
    first, out = judge(tmp_path, backend)
    rows = read_jsonl(out / "judge.ledger.jsonl")
    assert [(r["stage"], r["model"], r["cached"]) for r in rows] == [
        ("judge", "scripted", False)
    ] * 7
    assert all(r["usd"] > 0 for r in rows)

    again, out2 = judge(tmp_path, backend, tag="2")
    assert again == first and len(backend.requests) == 7
    assert read_jsonl(out2 / "pairs.jsonl") == read_jsonl(out / "pairs.jsonl")
    rows = read_jsonl(out2 / "judge.ledger.jsonl")
    assert [(r["cached"], r["usd"]) for r in rows] == [(True, 0.0)] * 7


# ---------------------------------------------------------------- run_revise

STS_FIELDS = {"S1": "a cat sat", "S2": "a cat was sitting", "S3": "a dog ran"}
CANONICAL = '{"S1":"a cat sat","S2":"a cat was sitting","S3":"a dog ran"}'  # decoder form

REVISIONS = {
    # keys out of order and padded: the revision is cleaned and written canonically
    "object": json.dumps(
        {"reason": "S3 was too close", "revision": {"S3": " a dog ran ", **STS_FIELDS}}
    ),
    "string": json.dumps({"reason": "stringified", "revision": json.dumps(STS_FIELDS)}),
    "garbage": "I cannot revise this.",
    "invalid": json.dumps({"reason": "r", "revision": {"S1": "x", "S2": "x", "S3": "y"}}),
}


def test_revise_keeps_object_and_string_revisions_and_rejects_the_rest(tmp_path):
    backend = ScriptedBackend({f"[{pid}]": text for pid, text in REVISIONS.items()})
    lists = [
        candidates_row(pid, [candidate(A), candidate(BROKEN, False), candidate(C)])
        for pid in REVISIONS
    ]
    write_jsonl(tmp_path / "candidates.jsonl", lists)
    sampling = {"temperature": 0.7, "top_p": 0.9, "max_tokens": 256}
    with registered(backend) as llm:
        stats = run_revise(
            llm=llm,
            candidates_path=str(tmp_path / "candidates.jsonl"),
            sampling=sampling,
            max_field_chars=200,
            max_reason_chars=300,
            seed=1,  # draws drafts 2 and 1 for the kept lists: neither is the first
            price=PRICE,
            cache_dir=str(tmp_path / "cache"),
            output=str(tmp_path / "revisions.jsonl"),
            rejects_output=str(tmp_path / "revisions.rejects.jsonl"),
            stats_output=str(tmp_path / "revise.stats.json"),
            ledger=str(tmp_path / "revise.ledger.jsonl"),
        )

    assert stats == {
        "lists": 4,
        "revisions": 2,
        "rejected": {
            "revision: no JSON object in output": 1,
            "revision invalid: S1, S2, S3 not distinct": 1,
        },
    }
    kept = read_jsonl(tmp_path / "revisions.jsonl")
    assert [r["prompt_id"] for r in kept] == ["object", "string"]
    assert [(r["critique"], r["revision"]) for r in kept] == [
        ("S3 was too close", CANONICAL),
        ("stringified", CANONICAL),
    ]
    # the seeded draws (valid or not: the broken candidate is a draft too), and their texts
    assert [(r["draft_index"], r["draft"]) for r in kept] == [(2, C), (1, BROKEN)]
    for r in kept:
        assert (r["family"], r["messages"]) == ("sts", messages(r["prompt_id"]))
        # the draft is the candidate the teacher was shown
        assert r["draft"] == lists[0]["candidates"][r["draft_index"]]["text"]
        req = request_of(backend, r["prompt_id"])
        assert f"=== Draft ===\n{r['draft']}\n\n" in last_user(req)
        assert req.sampling.seed == stable_seed(1, "revise", r["prompt_id"])
        assert (req.sampling.temperature, req.sampling.top_p) == (0.7, 0.9)
    assert read_jsonl(tmp_path / "revisions.rejects.jsonl") == [
        {
            "prompt_id": "garbage",
            "reason": "revision: no JSON object in output",
            "raw": REVISIONS["garbage"],
        },
        {
            "prompt_id": "invalid",
            "reason": "revision invalid: S1, S2, S3 not distinct",
            "raw": REVISIONS["invalid"],
        },
    ]


# ---------------------------------------------------------------- run_revise_shard

DRAFTS = {
    pid: sts(f"{pid} one", f"{pid} two", f"{pid} three") for pid in ("obj", "text", "junk", "bad")
}
REVISOR = {
    "obj": json.dumps({"S2": " a cat was sitting", "S1": "a cat sat", "S3": "a dog ran"}),
    "text": f"Improved example:\n```json\n{json.dumps(STS_FIELDS)}\n```",
    "junk": "I would rather not.",
    "bad": json.dumps({"S1": "same", "S2": "same", "S3": "other"}),
}


def synthesis_prompt(pid: str) -> dict[str, Any]:
    return {
        "id": pid,
        "family": "sts",
        "messages": messages(pid),
        "schema": output_schema("sts", 200),
    }


def raw_row(pid: str) -> dict[str, Any]:
    return {
        "prompt_id": pid,
        "family": "sts",
        "instruction": "Retrieve semantically similar text.",
        "topic": "Animals",
        "topic_id": "topic-00001",
        "task": None,
        "generator": "junior",
        "text": DRAFTS[pid],
        "finish_reason": "stop",
    }


def revise_shard(tmp_path: Path, backend: ScriptedBackend) -> dict[str, Any]:
    # the prompts file holds more prompts than this shard answers
    write_jsonl(tmp_path / "prompts.jsonl", [synthesis_prompt(p) for p in [*DRAFTS, "other"]])
    write_jsonl(tmp_path / "raw.jsonl", [raw_row(p) for p in DRAFTS])
    with registered(backend) as llm:
        return run_revise_shard(
            llm=llm,
            raw_path=str(tmp_path / "raw.jsonl"),
            prompts_path=str(tmp_path / "prompts.jsonl"),
            sampling={"temperature": 0.0, "top_p": 1.0, "max_tokens": 200},
            seed=3,
            cache_dir=str(tmp_path / "cache"),
            output=str(tmp_path / "revised.jsonl"),
            stats_output=str(tmp_path / "revised.stats.json"),
        )


def test_revise_shard_takes_valid_revisions_and_otherwise_keeps_the_draft(tmp_path):
    backend = ScriptedBackend({f"[{pid}]": text for pid, text in REVISOR.items()}, name="revisor")
    stats = revise_shard(tmp_path, backend)

    assert stats == {
        "examples": 4,
        "outcome": {
            "revised": 2,
            "kept draft: no JSON object in output": 1,
            "kept draft: S1, S2, S3 not distinct": 1,
        },
    }
    assert read_json(tmp_path / "revised.stats.json") == stats
    rows = read_jsonl(tmp_path / "revised.jsonl")
    assert [(r["prompt_id"], r["revised"], r["text"]) for r in rows] == [
        ("obj", True, CANONICAL),
        ("text", True, CANONICAL),
        ("junk", False, DRAFTS["junk"]),
        ("bad", False, DRAFTS["bad"]),
    ]
    for r in rows:
        pid = r["prompt_id"]
        # both texts are kept, with the raw row's provenance and the revisor's name
        assert (r["draft"], r["revision"], r["revisor"]) == (DRAFTS[pid], REVISOR[pid], "revisor")
        assert {k: r[k] for k in raw_row(pid) if k != "text"} == {
            k: v for k, v in raw_row(pid).items() if k != "text"
        }


def test_revise_shard_asks_the_revisor_with_its_training_prompt(tmp_path):
    """The revisor is asked exactly what revisor_sft_examples trained it on."""
    backend = ScriptedBackend({f"[{pid}]": text for pid, text in REVISOR.items()})
    revise_shard(tmp_path, backend)
    assert len(backend.requests) == 4
    write_jsonl(
        tmp_path / "revisions.jsonl",
        [{"messages": messages(p), "draft": DRAFTS[p], "revision": CANONICAL} for p in DRAFTS],
    )
    trained = revisor_sft_examples(str(tmp_path / "revisions.jsonl"))
    for pid, example in zip(DRAFTS, trained, strict=True):
        req = request_of(backend, pid)
        assert list(req.messages) == example["messages"][:-1]
        assert req.schema == output_schema("sts", 200)
        assert req.sampling.seed == stable_seed(3, "revisor", pid)


# ---------------------------------------------------------------- SFT sets


def test_seed_sft_examples_pair_each_seed_with_its_prompt(tmp_path):
    prompts = [
        {"id": "seed-000000", "messages": [{"role": "user", "content": "first prompt"}]},
        {"id": "seed-000001", "messages": messages("p1")},
        {"id": "seed-000002", "messages": [{"role": "user", "content": "rejected: no seed"}]},
    ]
    seeds = [  # in another order than the prompts
        {"id": "seed-000000", "prompt_id": "seed-000001", "output": A, "query": "a cat sat"},
        {"id": "seed-000001", "prompt_id": "seed-000000", "output": B, "query": "the sun rose"},
    ]
    write_jsonl(tmp_path / "prompts.jsonl", prompts)
    write_jsonl(tmp_path / "seed.jsonl", seeds)
    assert seed_sft_examples(str(tmp_path / "seed.jsonl"), str(tmp_path / "prompts.jsonl")) == [
        {
            "messages": [
                {"role": "system", "content": SYSTEM},
                {"role": "user", "content": "Write one STS example about anything. [p1]"},
                {"role": "assistant", "content": A},
            ]
        },
        {
            "messages": [
                {"role": "user", "content": "first prompt"},
                {"role": "assistant", "content": B},
            ]
        },
    ]


def test_revisor_sft_examples_ask_with_request_and_draft_and_answer_the_revision(tmp_path):
    rows = [
        {
            "prompt_id": "p1",
            "family": "sts",
            "messages": [*messages("p1"), {"role": "assistant", "content": "an earlier turn"}],
            "draft_index": 1,
            "draft": BROKEN,
            "critique": "unfinished",
            "revision": CANONICAL,
        }
    ]
    write_jsonl(tmp_path / "revisions.jsonl", rows)
    (example,) = revisor_sft_examples(str(tmp_path / "revisions.jsonl"))
    request = f"{SYSTEM}\n\nWrite one STS example about anything. [p1]"  # no assistant turn
    assert example == {
        "messages": [
            *revisor_messages(request, BROKEN),
            {"role": "assistant", "content": CANONICAL},
        ]
    }
    (user,) = example["messages"][:-1]
    assert user["role"] == "user"
    assert f"=== Request ===\n{request}\n\n=== Draft ===\n{BROKEN}\n\n" in user["content"]
    assert "critique" not in user["content"] and "unfinished" not in user["content"]


def test_the_scripted_kind_exists_only_while_registered():
    """The test seam in make_backend: only the registered kind is redirected, only meanwhile."""
    from speed.llm.factory import make_backend

    backend = ScriptedBackend({})
    with registered(backend) as llm:
        assert make_backend(llm) is backend
        with pytest.raises(ValueError, match="unknown LLM backend 'other'"):
            make_backend({"backend": "other", "model": "m"})
    with pytest.raises(ValueError, match="unknown LLM backend 'scripted'"):
        make_backend(llm)
