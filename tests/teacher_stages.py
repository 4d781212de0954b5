"""Every teacher stage (brainstorm, seed, judge, revise, teacher_only) run as its rule runs it,
with the parameters a config gives it, on small inputs written here: for tests that point the
stages at a backend (the contract server, a capturing backend) and look at what they sent."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from speed.io import read_jsonl, write_jsonl
from speed.prompts.data import build_prompts
from speed.prompts.families import BRAINSTORMED, FAMILIES
from speed.stages.align import run_judge, run_revise
from speed.stages.synthesize import run_generate
from speed.stages.teacher import run_brainstorm, run_seed

STAGES = ("brainstorm", "seed", "judge", "revise", "teacher_only")
PRICE = {"prompt_per_m": 2.5, "completion_per_m": 10.0}
TOPICS = [
    {"id": "t0", "path": "Science/Astronomy"},
    {"id": "t1", "path": "Recreation/Outdoors/Hiking"},
]


def params_from(config: dict[str, Any]) -> dict[str, Any]:
    """What the teacher rules pass the stages (rules/teacher.smk, align.smk, synthesize.smk)."""
    t = config["teacher"]
    return {
        "seed": config["seed"],
        "sampling": {"temperature": t["temperature"], "top_p": t["top_p"]},
        "brainstorm": {k: v for k, v in config["brainstorm"].items() if k != "max_tokens"},
        "brainstorm_max_tokens": config["brainstorm"]["max_tokens"],
        "seed_max_tokens": config["seed_data"]["max_tokens"],
        "max_field_chars": config["prompts"]["max_field_chars"],
        "mix": config["prompts"]["mix"],
        "k": config["candidates"]["k"],
        "judge": config["judge"],
        "revise": config["revise"],
        "synthesis_sampling": config["synthesis"]["sampling"],
    }


def small_params(max_tokens: int = 48) -> dict[str, Any]:
    """Parameters for a tiny model: short answers, so a test stays quick."""
    return {
        "seed": 7,
        "sampling": {"temperature": 1.0, "top_p": 1.0},
        "brainstorm": {
            "list_size": 3,
            "tasks_per_topic": 1,
            "max_task_words": 30,
            "max_task_chars": 120,
        },
        "brainstorm_max_tokens": max_tokens,
        "seed_max_tokens": max_tokens,
        "max_field_chars": 160,
        "mix": {f: 1 for f in FAMILIES},
        "k": 3,
        "judge": {"temperature": 0.0, "max_tokens": max_tokens, "max_reason_chars": 200},
        "revise": {"max_tokens": max_tokens, "max_reason_chars": 200},
        "synthesis_sampling": {"temperature": 1.0, "top_p": 1.0, "max_tokens": max_tokens},
    }


def write_inputs(root: Path, params: dict[str, Any], n: int) -> dict[str, Path]:
    """Topics, `n` seed and teacher_only prompts, and candidate lists of `k` for those."""
    root.mkdir(parents=True, exist_ok=True)
    paths = {name: root / f"{name}.jsonl" for name in ("topics", "seed", "teacher_only", "cands")}
    write_jsonl(paths["topics"], TOPICS)
    tasks = {
        f: [
            {
                "task": f"Given a {f} question about {t['path']}, find what answers it.",
                "topic": t["path"],
                "topic_id": t["id"],
            }
            for t in TOPICS
        ]
        for f in BRAINSTORMED
    }
    for purpose in ("seed", "teacher_only"):
        prompts = build_prompts(
            purpose, n, params["mix"], tasks, TOPICS, params["seed"], params["max_field_chars"]
        )
        write_jsonl(paths[purpose], prompts)
    write_jsonl(paths["cands"], [candidates_row(p, params["k"]) for p in read_jsonl(paths["seed"])])
    return paths


def candidates_row(prompt: dict[str, Any], k: int) -> dict[str, Any]:
    keys = FAMILIES[prompt["family"]].keys
    texts = [json.dumps({key: f"{key} text {i}" for key in keys}) for i in range(k)]
    return {
        "prompt_id": prompt["id"],
        "family": prompt["family"],
        "instruction": prompt["instruction"],
        "messages": prompt["messages"],
        "schema": prompt["schema"],
        "candidates": [{"text": t, "valid": True, "reason": None} for t in texts],
    }


def run_stage(
    stage: str, llm: dict[str, Any], root: Path, params: dict[str, Any], inputs: dict[str, Path]
) -> dict[str, Any]:
    """Run one teacher stage into `root/stage`; its stats (teacher_only: its rows' count)."""
    out = root / stage
    out.mkdir(parents=True, exist_ok=True)
    common = {"llm": llm, "cache_dir": str(root / "cache"), "ledger": str(out / "ledger.jsonl")}
    sampling = params["sampling"]
    if stage == "brainstorm":
        return run_brainstorm(
            **common,
            family="retrieval",
            topics_path=str(inputs["topics"]),
            **params["brainstorm"],
            sampling={**sampling, "max_tokens": params["brainstorm_max_tokens"]},
            seed=params["seed"],
            price=PRICE,
            output=str(out / "tasks.jsonl"),
            stats_output=str(out / "stats.json"),
        )
    if stage == "seed":
        return run_seed(
            **common,
            prompts_path=str(inputs["seed"]),
            sampling={**sampling, "max_tokens": params["seed_max_tokens"]},
            seed=params["seed"],
            price=PRICE,
            output=str(out / "seed.jsonl"),
            rejects_output=str(out / "rejects.jsonl"),
            stats_output=str(out / "stats.json"),
        )
    if stage == "judge":
        j = params["judge"]
        return run_judge(
            **common,
            candidates_path=str(inputs["cands"]),
            temperature=j["temperature"],
            max_tokens=j["max_tokens"],
            max_reason_chars=j["max_reason_chars"],
            price=PRICE,
            judgments_output=str(out / "judgments.jsonl"),
            pairs_output=str(out / "pairs.jsonl"),
            stats_output=str(out / "stats.json"),
        )
    if stage == "revise":
        r = params["revise"]
        return run_revise(
            **common,
            candidates_path=str(inputs["cands"]),
            sampling={**sampling, "max_tokens": r["max_tokens"]},
            max_field_chars=params["max_field_chars"],
            max_reason_chars=r["max_reason_chars"],
            seed=params["seed"],
            price=PRICE,
            output=str(out / "revisions.jsonl"),
            rejects_output=str(out / "rejects.jsonl"),
            stats_output=str(out / "stats.json"),
        )
    if stage == "teacher_only":
        return run_generate(
            **common,
            generator="teacher",
            prompts_path=str(inputs["teacher_only"]),
            shard=0,
            shards=1,
            sampling=params["synthesis_sampling"],
            seed=params["seed"],
            output=str(out / "examples.jsonl"),
            price=PRICE,
        )
    raise ValueError(f"unknown teacher stage {stage}")


def ledger(root: Path, stage: str) -> list[dict[str, Any]]:
    path = root / stage / "ledger.jsonl"
    return read_jsonl(path) if path.exists() else []


if __name__ == "__main__":
    # A teacher job in a process of its own (a test kills it): python -m tests.teacher_stages
    # ARGS.json with {stage, llm, root, params, inputs}.
    import sys

    args = json.loads(Path(sys.argv[1]).read_text())
    inputs = {k: Path(v) for k, v in args["inputs"].items()}
    run_stage(args["stage"], args["llm"], Path(args["root"]), args["params"], inputs)
