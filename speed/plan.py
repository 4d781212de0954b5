"""What a config will do before it runs: teacher calls, tokens and cost per stage, examples per
stage and family, GPU jobs and shards (`speed-plan`, and the budget check at workflow start).

Calls and example counts are exact consequences of the config. Tokens are estimates: prompts are
rendered with the real prompt builders on placeholder tasks and counted at CHARS_PER_TOKEN; an
example's length follows from the length its prompt asks for (the sampled attributes), at
TOKENS_PER_WORD, capped by the stage's max_tokens. Nothing here loads or calls a model.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from statistics import fmean
from typing import Any

import yaml

from speed.memory_plan import format_memory, memory_plan
from speed.prompts.align import judge_messages, request_text, revise_messages
from speed.prompts.brainstorm import brainstorm_messages
from speed.prompts.data import build_prompts, family_counts
from speed.prompts.families import BRAINSTORMED, FAMILIES
from speed.topics import builtin_paths
from speed.workflow import VARIANT_SOURCES, teacher_price, uses_batch_api

CHARS_PER_TOKEN = 4.0  # English text in GPT/LLaMA tokenizers
TOKENS_PER_WORD = 1.35
MESSAGE_OVERHEAD_TOKENS = 8  # chat-template tokens around one message
JSON_OVERHEAD_TOKENS = 12  # braces, quotes and keys of one example
TASK_WORDS = 12  # a brainstormed task description (the prompt asks for about 10 words)
SAMPLE_PROMPTS = 200  # rendered per family to measure prompt and example lengths

# How far the token estimates are from real usage: checked on config/paper.yaml against the
# paper's reported tokens (seed 10M, judge 12M, revise 10M; tests/unit/test_plan.py). Measured:
# seed +18%, revise +9%. Judge +75%: every judge prompt counts all k candidates at full length
# (k = 5), and the paper's 12M fits about 2 of them. Brainstorm and teacher_only: not checked.
TOKEN_ERROR = 0.25  # seed and revise: within +-25%
JUDGE_TOKENS_OVER = 1.0  # judge: over by up to 100% (2x)

# Words an example has when it follows its prompt ("at least N words" counts as about N).
_QUERY_WORDS = {"less than 5 words": 3, "5 to 15 words": 10, "at least 10 words": 15}
_INPUT_WORDS = {
    "less than 10 words": 7,
    "at least 10 words": 25,
    "at least 50 words": 60,
    "at least 100 words": 115,
    "at least 200 words": 220,
}
_STS_UNIT_WORDS = {"sentence": 18, "phrase": 5, "passage": 90}
_S2S_WORDS, _P2P_WORDS, _LABEL_WORDS = 12, 320, 3


def example_words(family: str, attrs: dict[str, Any]) -> int:
    if family == "retrieval":
        return _QUERY_WORDS[attrs["query_length"]] + 2 * attrs["num_words"]
    if family == "classification":
        return _INPUT_WORDS[attrs["length"]] + 2 * _LABEL_WORDS
    if family == "sts":
        return 3 * _STS_UNIT_WORDS[attrs["unit"]]
    return 2 * (_S2S_WORDS if family == "s2s" else _P2P_WORDS)


def _text_tokens(text: str) -> float:
    return len(text) / CHARS_PER_TOKEN


def _message_tokens(messages: list[dict[str, str]]) -> float:
    return sum(_text_tokens(m["content"]) + MESSAGE_OVERHEAD_TOKENS for m in messages)


@dataclass(frozen=True)
class FamilyLengths:
    """Mean token lengths of one family's data prompt and of the example it asks for."""

    prompt: float
    example: float
    request_chars: float  # the prompt as quoted inside judge/revise prompts


def measure_families(max_field_chars: int, seed: int) -> dict[str, FamilyLengths]:
    topics = [{"id": f"t{i}", "path": p} for i, p in enumerate(builtin_paths())]
    # Placeholder tasks of the requested length, distinct per topic so prompts vary.
    tasks = {
        f: [
            {
                "task": " ".join([t["id"], *["task"] * (TASK_WORDS - 1)]),
                "topic": t["path"],
                "topic_id": t["id"],
            }
            for t in topics
        ]
        for f in BRAINSTORMED
    }
    out = {}
    for family in FAMILIES:
        prompts = build_prompts(
            "synthesis", SAMPLE_PROMPTS, {family: 1}, tasks, topics, seed, max_field_chars
        )
        cap = len(FAMILIES[family].keys) * max_field_chars / CHARS_PER_TOKEN
        out[family] = FamilyLengths(
            prompt=fmean(_message_tokens(p["messages"]) for p in prompts),
            example=fmean(
                min(cap, example_words(family, p["attributes"]) * TOKENS_PER_WORD)
                + JSON_OVERHEAD_TOKENS
                for p in prompts
            ),
            request_chars=fmean(len(request_text(p["messages"])) for p in prompts),
        )
    return out


@dataclass(frozen=True)
class TeacherStage:
    calls: int
    prompt_tokens: int
    completion_tokens: int
    usd: float

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


def _stage(calls: float, prompt: float, completion: float, price: dict[str, float]) -> TeacherStage:
    p, c = round(calls * prompt), round(calls * completion)
    usd = (p * price["prompt_per_m"] + c * price["completion_per_m"]) / 1e6
    return TeacherStage(int(calls), p, c, round(usd, 2))


def _data_stage(
    n: int,
    mix: dict[str, float],
    lengths: dict[str, FamilyLengths],
    max_tokens: int,
    price: dict[str, float],
) -> tuple[TeacherStage, dict[str, int]]:
    """A teacher stage that answers `n` data prompts: seed examples or the teacher_only corpus."""
    counts = family_counts(n, mix)
    prompt = sum(counts[f] * lengths[f].prompt for f in counts) / max(n, 1)
    completion = sum(counts[f] * min(lengths[f].example, max_tokens) for f in counts)
    return _stage(n, prompt, completion / max(n, 1), price), counts


def make_plan(config: dict[str, Any]) -> dict[str, Any]:
    """The plan of a validated config, as plain data (what `speed-plan --json` prints)."""
    price = teacher_price(config)
    lengths = measure_families(config["prompts"]["max_field_chars"], config["seed"])
    n, mix = config["prompts"]["n"], config["prompts"]["mix"]
    variants = list(config["corpus"]["variants"])
    stages = {"brainstorm": _brainstorm_stage(config, price)}
    stages["seed"], seed_counts = _data_stage(
        n["seed"], mix, lengths, config["seed_data"]["max_tokens"], price
    )
    stages["judge"], stages["revise"] = _align_stages(config, lengths, price)
    teacher_only_counts = None
    if "teacher_only" in variants:
        stages["teacher_only"], teacher_only_counts = _data_stage(
            n["teacher_only"], mix, lengths, config["synthesis"]["sampling"]["max_tokens"], price
        )
    k = config["candidates"]["k"]
    synthesis = _synthesis(config, variants)
    return {
        "run": config["run"],
        "teacher": {
            "backend": config["teacher"]["backend"],
            "model": config["teacher"]["model"],
            "price_per_m": price,
            "batch_api": uses_batch_api(config),
        },
        "stages": {name: {**asdict(s), "tokens": s.tokens} for name, s in stages.items()},
        "total": _total(stages.values()),
        "examples": {
            "seed": seed_counts,
            "candidates": {f: c * k for f, c in family_counts(n["candidates"], mix).items()},
            "synthesis": family_counts(n["synthesis"], mix),
            **({"teacher_only": teacher_only_counts} if teacher_only_counts else {}),
        },
        "synthesis": synthesis,
        "comparison": _comparison(stages, n["synthesis"]),
        "jobs": gpu_jobs(config, synthesis["generators"], synthesis["revised_generators"]),
        "memory": memory_plan(config),
        "shards": config["synthesis"]["shards"],
        "assumptions": _assumptions(),
    }


def _brainstorm_stage(config: dict[str, Any], price: dict[str, float]) -> TeacherStage:
    """One call per (topic, family); the answer is a list of short task lines."""
    topic = "Arts/Movies/Genres/Documentary"
    bs = config["brainstorm"]
    prompt = fmean(
        _message_tokens(brainstorm_messages(f, topic, bs["list_size"])) for f in BRAINSTORMED
    )
    completion = min(bs["max_tokens"], bs["list_size"] * (TASK_WORDS * TOKENS_PER_WORD + 4))
    return _stage(config["topics"]["n"] * len(BRAINSTORMED), prompt, completion, price)


def _align_stages(
    config: dict[str, Any], lengths: dict[str, FamilyLengths], price: dict[str, float]
) -> tuple[TeacherStage, TeacherStage]:
    """Judge and revise. They see the junior's candidates: as long as the examples the prompt
    asks for, k of them per judge prompt, one per revise prompt."""
    n = config["prompts"]["n"]["candidates"]
    k, cand_max = config["candidates"]["k"], config["candidates"]["max_tokens"]
    judge_overhead = _message_tokens(judge_messages("", [""] * k))
    revise_overhead = _message_tokens(revise_messages("", ""))
    judge_prompt = revise_prompt = revise_completion = 0.0
    for family, count in family_counts(n, config["prompts"]["mix"]).items():
        draft = min(lengths[family].example, cand_max)
        request = lengths[family].request_chars / CHARS_PER_TOKEN
        judge_prompt += count * (judge_overhead + request + k * draft)
        revise_prompt += count * (revise_overhead + request + draft)
        revise_completion += count * (
            min(config["revise"]["max_tokens"], draft + _reason_tokens(config["revise"]))
        )
    per_list = max(n, 1)
    judge_completion = min(config["judge"]["max_tokens"], _reason_tokens(config["judge"]) + 12)
    return (
        _stage(n, judge_prompt / per_list, judge_completion, price),
        _stage(n, revise_prompt / per_list, revise_completion / per_list, price),
    )


def _synthesis(config: dict[str, Any], variants: list[str]) -> dict[str, Any]:
    """What the generators write: raw examples per generator, and which of them are revised."""
    raw = config["prompts"]["n"]["synthesis"]
    sources = [VARIANT_SOURCES[v] for v in variants if v in VARIANT_SOURCES]
    generators = sorted({generator for generator, _ in sources})
    revised = sorted({generator for generator, is_revised in sources if is_revised})
    return {
        "raw_examples": raw,
        "generators": generators,
        "revised_generators": revised,
        "generated": raw * len(generators),
        "revisions": raw * len(revised),
        "per_family": family_counts(raw, config["prompts"]["mix"]),
    }


def _comparison(stages: dict[str, TeacherStage], raw: int) -> dict[str, Any]:
    """SPEED's teacher calls against one teacher call per example of the same raw corpus."""
    speed_calls = sum(stages[s].calls for s in ("seed", "judge", "revise"))
    return {
        "speed_teacher_calls": speed_calls,
        "speed_teacher_calls_with_brainstorm": speed_calls + stages["brainstorm"].calls,
        "all_teacher_calls_same_size": raw,
        "ratio": round(speed_calls / raw, 4) if raw else None,
    }


def _assumptions() -> dict[str, Any]:
    """What the token estimates rest on, and how far they are known to be off."""
    return {
        "chars_per_token": CHARS_PER_TOKEN,
        "tokens_per_word": TOKENS_PER_WORD,
        "brainstorm_calls": "topics.n x 4 families (fewer if the source has fewer topics)",
        "token_error": {
            "stages": ["seed", "revise"],
            "relative": TOKEN_ERROR,
            "judge_over_by_up_to": JUDGE_TOKENS_OVER,
            "basis": "config/paper.yaml against the paper's reported tokens (seed 10M, "
            "judge 12M, revise 10M); judge prompts count all k candidates at full length; "
            "brainstorm and teacher_only not checked",
        },
    }


def planned_teacher_stages(config: dict[str, Any]) -> dict[str, dict[str, int]]:
    """The plan's calls and tokens per teacher stage, for the cost report (rules/report.smk)."""
    return {
        stage: {k: v for k, v in plan.items() if k in ("calls", "tokens")}
        for stage, plan in make_plan(config)["stages"].items()
    }


def _reason_tokens(cfg: dict[str, Any]) -> float:
    return cfg["max_reason_chars"] / CHARS_PER_TOKEN


def _total(stages: Any) -> dict[str, Any]:
    stages = list(stages)
    return {
        "calls": sum(s.calls for s in stages),
        "prompt_tokens": sum(s.prompt_tokens for s in stages),
        "completion_tokens": sum(s.completion_tokens for s in stages),
        "tokens": sum(s.tokens for s in stages),
        "usd": round(sum(s.usd for s in stages), 2),
    }


def gpu_jobs(config: dict[str, Any], generators: list[str], revised: list[str]) -> dict[str, int]:
    """Jobs per rule that ask for `resources.*.gpu` (rules/*.smk), for the whole `rule all`."""
    shards = config["synthesis"]["shards"]
    variants = config["corpus"]["variants"]
    scaled = len(config["scaling"]["fractions"])  # the scaling study's smaller training sets
    jobs = {
        "junior": 1,
        "candidates": 1,
        "senior": int("senior" in generators),
        "revisor": int(bool(revised)),
        "synth_raw": shards * len(generators),
        "synth_revised": shards * len(revised),
        "embedding": len(variants) + scaled,
        # one job per (evaluated model, task): the base, each variant, each scaling point
        "evaluate": (1 + len(variants) + scaled) * len(config["evaluation"]["tasks"]),
    }
    if config["resources"]["llm"].get("gpu", 0) and config["teacher"]["backend"] != "openai":
        jobs |= {"brainstorm": len(BRAINSTORMED), "seed": 1, "judge": 1, "revise": 1}
        jobs["teacher_only"] = int("teacher_only" in variants)
    jobs = {rule: n for rule, n in jobs.items() if n}
    return {**jobs, "total": sum(jobs.values())}


def check_budget(plan: dict[str, Any], budget: dict[str, Any] | None) -> list[str]:
    """Why the planned teacher spend exceeds `teacher.budget` (empty: it fits)."""
    total = plan["total"]
    problems = []
    for key, planned, unit in (
        ("max_calls", total["calls"], "calls"),
        ("max_tokens", total["tokens"], "tokens"),
        ("max_usd", total["usd"], "USD"),
    ):
        limit = (budget or {}).get(key)
        if limit is not None and planned > limit:
            problems.append(f"the plan needs {planned:,} {unit}, teacher.budget.{key} is {limit:,}")
    return problems


def format_plan(plan: dict[str, Any]) -> str:
    teacher = plan["teacher"]
    via = " Batch API" if teacher["batch_api"] else ""
    lines = [f"run {plan['run']}: teacher {teacher['model']} ({teacher['backend']}{via})"]
    lines.append(f"{'teacher stage':<14}{'calls':>12}{'tokens (est.)':>16}{'USD (est.)':>12}")
    for name, s in [*plan["stages"].items(), ("total", plan["total"])]:
        lines.append(f"{name:<14}{s['calls']:>12,}{s['tokens']:>16,}{s['usd']:>12,.2f}")
    err = plan["assumptions"]["token_error"]
    lines.append(
        f"token estimates: \u00b1{err['relative']:.0%} of the paper's reported tokens "
        f"({', '.join(err['stages'])}); judge up to {1 + err['judge_over_by_up_to']:g}x over "
        "(counts all k candidates at full length)"
    )
    cmp = plan["comparison"]
    lines.append(
        f"SPEED teacher calls (seed + judge + revise): {cmp['speed_teacher_calls']:,}; one call "
        f"per example for the same raw corpus: {cmp['all_teacher_calls_same_size']:,} "
        f"(ratio {cmp['ratio']})"
    )
    lines.append("examples per stage and family:")
    for stage, counts in plan["examples"].items():
        per = ", ".join(f"{f} {c:,}" for f, c in counts.items())
        lines.append(f"  {stage:<13}{sum(counts.values()):>10,}  ({per})")
    syn = plan["synthesis"]
    lines.append(
        f"synthesis: {syn['raw_examples']:,} raw examples per generator "
        f"({', '.join(syn['generators'])}), {syn['revisions']:,} revisions, "
        f"{plan['shards']} shards per generator"
    )
    jobs = plan["jobs"]
    lines.append(
        f"GPU jobs: {jobs['total']} ("
        + ", ".join(f"{r} {n}" for r, n in jobs.items() if r != "total")
        + ")"
    )
    lines += format_memory(plan["memory"])
    return "\n".join(lines)


SCHEMA = Path(__file__).resolve().parents[1] / "config" / "schema.yaml"


def load_config(path: str | Path) -> dict[str, Any]:
    """A config file validated (and given its schema defaults) as the Snakefile does."""
    from snakemake.utils import validate

    with open(path) as f:
        config = yaml.safe_load(f)
    if not isinstance(config, dict):
        raise ValueError(f"{path}: not a YAML mapping")
    validate(config, str(SCHEMA))
    return config


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="speed-plan", description=__doc__.split("\n\n")[0])
    ap.add_argument("configfile", type=Path, help="a complete workflow config (config/*.yaml)")
    ap.add_argument("--json", action="store_true", help="print the plan as one JSON object")
    args = ap.parse_args(argv)
    try:
        config = load_config(args.configfile)
    except Exception as e:  # schema errors name the key; show them without a traceback
        print(f"speed-plan: {args.configfile}: {e}", file=sys.stderr)
        return 2
    plan = make_plan(config)
    problems = check_budget(plan, config["teacher"].get("budget"))
    plan["budget"] = {"limits": config["teacher"].get("budget"), "exceeded_by_plan": problems}
    if args.json:
        print(json.dumps(plan, indent=2))
    else:
        print(format_plan(plan))
        for p in problems:
            print(f"over budget: {p}")
    return 0
