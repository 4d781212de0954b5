"""Model cards: a Hugging Face style README.md in every trained model folder.

A card is YAML front matter (base_model, library_name, tags, license, ...) and a Markdown body:
the model's role in SPEED, how it was trained (method, example count, hyper-parameters, final
losses), how to load and query it, and where its evaluation scores are.

Cards are deterministic: no dates, timings, absolute paths, library versions or hardware, so the
same training writes the same bytes (a rerun that reloads the final checkpoint included). The
model identity (speed.llm.fingerprint) leaves README.md out: rewording a card reruns nothing.

Choices:
- `base_model` is the configured base as written in the config (a hub id or a path; a tiny model
  is named by its build folder, `results/<run>/models/tiny/<name>`), never a resolved absolute
  path. The senior is DPO'd from the junior, which is not on the hub: its base_model is the
  generation base too (`base_model_relation: finetune` on every generator), and the body says it
  was trained from the junior.
- `datasets` is left out: SPEED's training data is synthetic and local, not a hub dataset; the
  body describes it.
- `license` comes from `card.license` (default `other`: the right license depends on the base
  model's and the teacher's terms, which the workflow cannot know).

Embedding models get sentence-transformers' own card (speed.train.embedding builds it offline),
with its training logs, timings, hyper-parameter dump and library versions cut out and a SPEED
section added. Evaluation runs after training, so a card holds a scores block (between the
SCORES markers) that a later step fills: `put_scores` (any Markdown; speed-export's table of the
variant beside the untrained base) or `add_scores` (one variant's scores table); either
replaces the block.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import yaml

from speed.io import atomic_file
from speed.prompts.families import FAMILIES

if TYPE_CHECKING:
    from speed.train.common import TrainSpec
    from speed.train.embedding import EmbeddingSpec

CARD_NAME = "README.md"
DEFAULT_LICENSE = "other"
MINILM_ID = "sentence-transformers/all-MiniLM-L6-v2"  # what base "minilm" packages
SCORES_BEGIN = "<!-- speed:scores -->"
SCORES_END = "<!-- /speed:scores -->"
# sentence-transformers' sections that hold timings, versions or what a resumed run lacks.
DROPPED_SECTIONS = (
    "Training Hyperparameters",  # filled only when train() runs, not when a rerun reloads
    "Training Logs",  # only the steps this process ran, not those before a resume
    "Training Time",
    "Environmental Impact",
    "Training Hardware",
    "Framework Versions",
    "Additional Resources",
)

_ROLES = {
    "junior": (
        "the **junior** generator: the base LLM fine-tuned (SFT) on the teacher's seed examples. "
        "Given a SPEED data prompt it writes one embedding training example as JSON. Its sampled "
        "candidates are judged by the teacher (preference pairs for the senior) and revised by "
        "the teacher (training data for the revisor); it writes the `no_dpo` and `junior_only` "
        "corpora."
    ),
    "senior": (
        "the **senior** generator: the junior further trained with DPO on the teacher's "
        "best/worst judgments of the junior's candidates (reference policy: the frozen junior). "
        "It writes the `speed` and `no_revisor` corpora."
    ),
    "revisor": (
        "the **revisor**: the base LLM fine-tuned (SFT) on the teacher's revisions of junior "
        "drafts. Given a data request and a draft answer, it writes the improved example; it "
        "revises the `speed` and `no_dpo` corpora once."
    ),
}


@dataclass(frozen=True)
class CardFacts:
    """What a card says that training does not know: the model's name in SPEED (junior, senior,
    revisor or an embedding variant such as `speed`), its base as configured, the license."""

    name: str | None = None
    base_model: str = ""
    license: str = DEFAULT_LICENSE

    @classmethod
    def of(cls, card: Mapping[str, Any] | None, base_model: str) -> CardFacts:
        """From a rule's `card` params; `base_model` where they name none."""
        card = dict(card or {})
        unknown = set(card) - {"name", "base_model", "license"}
        if unknown:
            raise ValueError(f"unknown card fields: {sorted(unknown)}")
        card.setdefault("base_model", base_model)
        card["license"] = card.get("license") or DEFAULT_LICENSE
        return cls(**card)


# --- Markdown and YAML helpers ---------------------------------------------------------------


def front_matter(meta: Mapping[str, Any]) -> str:
    dumped = yaml.safe_dump(dict(meta), sort_keys=False, allow_unicode=True, width=1000)
    return f"---\n{dumped}---\n"


def split_card(card: str) -> tuple[dict[str, Any], str]:
    """(front matter, body) of a card; ({}, card) when it has no front matter."""
    m = re.match(r"---\n(.*?\n)---\n", card, flags=re.S)
    if not m:
        return {}, card
    return yaml.safe_load(m.group(1)) or {}, card[m.end() :]


def _heading(line: str) -> tuple[int, str] | None:
    m = re.match(r"(#{1,6}) +(.*?)\s*$", line)
    return (len(m.group(1)), m.group(2)) if m else None


def drop_sections(markdown: str, titles: Iterable[str]) -> str:
    """`markdown` without the sections titled `titles` (each up to the next heading of its level
    or above). Lines inside ``` fences are never headings (a `# comment` in a code block)."""
    titles = set(titles)
    kept: list[str] = []
    fence = False
    dropping: int | None = None  # level of the section being dropped
    for line in markdown.splitlines(keepends=True):
        head = None if fence else _heading(line)
        if line.lstrip().startswith("```"):
            fence = not fence
        if head and dropping is not None and head[0] <= dropping:
            dropping = None
        if head and dropping is None and head[1] in titles:
            dropping = head[0]
        if dropping is None:
            kept.append(line)
    return squeeze("".join(kept))


def squeeze(markdown: str) -> str:
    """No runs of blank lines (tables end with a newline and are joined with one more)."""
    return re.sub(r"\n{3,}", "\n\n", markdown)


def table(header: tuple[str, ...], rows: Iterable[Iterable[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def fmt(value: Any) -> str:
    """A fixed rendering of a number or setting (float noise beyond 6 digits is not news)."""
    if isinstance(value, bool) or value is None:
        return f"`{value}`"
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, list | tuple):
        return ", ".join(f"`{v}`" for v in value)
    return f"`{value}`" if isinstance(value, str) else str(value)


def write_card(folder: Any, text: str) -> None:
    from pathlib import Path

    with atomic_file(Path(folder) / CARD_NAME) as f:
        f.write(text)


# --- scores ----------------------------------------------------------------------------------


def scores_block(text: str) -> str:
    return f"{SCORES_BEGIN}\n{text.strip()}\n{SCORES_END}\n"


def put_scores(card: str, text: str) -> str:
    """`card` with its scores block holding `text` (Markdown), so calling it again replaces
    rather than appends. A card without the block gets one at the end."""
    block = scores_block(text)
    pattern = re.compile(re.escape(SCORES_BEGIN) + r".*?" + re.escape(SCORES_END) + r"\n?", re.S)
    if pattern.search(card):
        return pattern.sub(lambda _: block, card, count=1)
    return card.rstrip("\n") + "\n\n## Evaluation\n\n" + block


def add_scores(card: str, rows: Any, source: str = "") -> str:
    """`card` with its scores block holding a table of `rows` (the records of
    variant's scores table, `speed.eval.results.read_scores` of its `eval/<variant>/<task>.json`
    files: task, category, metric, score; a polars/pandas frame or dicts)."""
    if hasattr(rows, "to_dicts"):
        rows = rows.to_dicts()
    elif hasattr(rows, "to_dict"):
        rows = rows.to_dict("records")
    body = [
        (r["task"], r.get("category", ""), r["metric"], f"{float(r['score']):.2f}") for r in rows
    ]
    text = "Scores (mteb main score x 100)" + (f" from `{source}`" if source else "") + ":\n\n"
    return put_scores(card, text + table(("task", "category", "metric", "score"), body))


def set_license(card: str, license: str) -> str:
    """`card` with `license` in its front matter (added where it has none)."""
    meta, body = split_card(card)
    return front_matter({**meta, "license": license}) + body


# --- generator cards (junior, senior, revisor) ----------------------------------------------


def _training_rows(method: str, spec: TrainSpec, beta: float | None) -> list[tuple[str, str]]:
    """(setting, value) of an SFT/DPO spec (speed.train.common.TrainSpec); checkpoint cadence
    (save_steps, ...) is left out: it does not change the weights."""
    if spec.lora:
        tuning = (
            f"LoRA r {spec.lora_r}, alpha {fmt(spec.lora_alpha)}, dropout {fmt(spec.lora_dropout)}"
        )
        rows = [("fine-tuning", tuning + ", merged into the weights")]
        rows.append(("LoRA target modules", fmt(spec.target_modules)))
    else:
        rows = [("fine-tuning", "full (every weight)")]
    if beta is not None:
        rows.append(("DPO beta", fmt(beta)))
    steps = f"max_steps {spec.max_steps}" if spec.max_steps > 0 else f"{fmt(spec.epochs)} epochs"
    rows += [
        ("learning rate", fmt(spec.learning_rate)),
        ("length", steps),
        (
            "per-device batch x gradient accumulation",
            f"{spec.per_device_batch_size} x {spec.gradient_accumulation}",
        ),
        ("max length (tokens)", str(spec.max_length)),
        ("warmup ratio", fmt(spec.warmup_ratio)),
        ("weight decay", fmt(spec.weight_decay)),
        ("seed", str(spec.seed)),
        ("dtype / bf16", f"{fmt(spec.dtype)} / {fmt(spec.bf16)}"),
    ]
    rows += [(k, fmt(v)) for k, v in sorted(spec.extra.items())]
    return [
        ("method", "DPO (trl)" if method == "dpo" else "SFT, loss on the answer only (trl)"),
        *rows,
    ]


def _result_rows(method: str, metrics: Mapping[str, Any]) -> list[tuple[str, str]]:
    rows = [
        ("optimizer steps", str(metrics.get("global_step"))),
        (
            "first / last training loss",
            f"{fmt(metrics.get('first_loss'))} / {fmt(metrics.get('last_loss'))}",
        ),
    ]
    if method == "dpo":
        last = metrics.get("last") or {}
        rows += [(f"last {k}", fmt(v)) for k, v in sorted(last.items()) if k != "loss"]
    return rows


_FAMILY_KEYS = table(
    ("family", "JSON keys"), ((f.name, ", ".join(f.keys)) for f in FAMILIES.values())
)

_GENERATOR_USAGE = """```python
from transformers import AutoModelForCausalLM, AutoTokenizer

folder = "path/to/this/folder"
model = AutoModelForCausalLM.from_pretrained(folder)
tokenizer = AutoTokenizer.from_pretrained(folder)
{messages}
inputs = tokenizer.apply_chat_template(
    messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
)
out = model.generate(**inputs, max_new_tokens=400, do_sample=True, temperature=1.0)
print(tokenizer.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True))
```
"""

_DATA_MESSAGES = """# A SPEED data prompt: the `messages` of a record in prompts/synthesis.jsonl
# of a run (speed.prompts.data.build_messages): one user turn, the task and its guidelines.
messages = [{"role": "user", "content": "Write one training example for this task: ..."}]"""

_REVISOR_MESSAGES = """from speed.prompts.align import request_text, revisor_messages

# The data prompt a generator answered, and its draft answer (one JSON object).
prompt_messages = [{"role": "user", "content": "Write one training example for this task: ..."}]
draft = '{"user_query": "...", "positive_document": "...", "hard_negative_document": "..."}'
messages = revisor_messages(request_text(prompt_messages), draft)"""


def _generator_usage(name: str | None) -> str:
    if name == "revisor":
        prompt = (
            "Input: one user turn holding the data request and a draft answer "
            "(`speed.prompts.align.revisor_messages(request, draft)`, exactly as in training). "
            "Output: the improved example, as one JSON object with the keys the request asks for."
        )
        code = _GENERATOR_USAGE.format(messages=_REVISOR_MESSAGES)
    else:
        prompt = (
            "Input: the chat messages of a SPEED data prompt, with no system turn. Output: one "
            "JSON object with the keys of the prompt's task family:\n\n" + _FAMILY_KEYS
        )
        code = _GENERATOR_USAGE.format(messages=_DATA_MESSAGES)
    load = (
        "A plain merged causal LM (no adapter, no peft): `AutoModelForCausalLM` and vLLM "
        "(`vllm.LLM(model=folder)`) load it as is. Prompt it through the tokenizer's chat "
        "template with the generation prompt added."
    )
    return f"## How to use\n\n{load}\n\n{prompt}\n\n{code}"


def generator_card(
    facts: CardFacts,
    method: str,
    spec: TrainSpec,
    metrics: Mapping[str, Any],
    beta: float | None = None,
) -> str:
    """The card of a junior, senior or revisor folder (`method` "sft" or "dpo")."""
    name = facts.name or "generator"
    meta = {
        "base_model": facts.base_model,
        "base_model_relation": "finetune",
        "library_name": "transformers",
        "pipeline_tag": "text-generation",
        "license": facts.license,
        "tags": [
            "speed",
            "synthetic-data",
            "trl",
            method,
            "lora" if spec.lora else "full-fine-tuning",
            name,
        ],
    }
    role = _ROLES.get(name, "a generator of embedding training data.")
    examples = metrics.get("pairs" if method == "dpo" else "examples")
    if method == "dpo":
        origin = (
            f"DPO from the SPEED junior (itself SFT of `{facts.base_model}`) on {examples} "
            "preference pairs (prompt; chosen: the teacher's best candidate; rejected: its worst)."
        )
    else:
        what = "(request + draft -> revision)" if name == "revisor" else "(data prompt -> example)"
        origin = f"SFT of `{facts.base_model}` on {examples} chat examples {what}."
    body = [
        f"# SPEED {name}\n",
        f"This model is {role}\n",
        "SPEED: *Little Giants: Synthesizing High-Quality Embedding Data at Scale* "
        "(arXiv:2410.18634).\n",
        f"## Training\n\n{origin}\n",
        table(("setting", "value"), _training_rows(method, spec, beta)),
        "\nResults (from `metrics.json` in this folder, which holds the per-step log):\n",
        table(("metric", "value"), _result_rows(method, metrics)),
        "\n## Evaluation\n",
        scores_block(
            "Generators are not scored directly: what they are worth shows in the embedding "
            "models trained on their corpora (`eval/summary.csv` of the run: `speed` vs "
            "`no_dpo`, `no_revisor`, `junior_only`, `teacher_only`)."
        ),
        "\n" + _generator_usage(facts.name),
    ]
    return front_matter(meta) + "\n" + squeeze("\n".join(body))


# --- embedding cards -------------------------------------------------------------------------

_VARIANTS = {
    "speed": "the senior's examples, revised by the revisor: the full SPEED pipeline",
    "no_revisor": "the senior's examples, unrevised",
    "no_dpo": "the junior's examples, revised by the revisor",
    "junior_only": "the junior's examples, unrevised",
    "teacher_only": "the teacher's own examples: the all-teacher baseline",
}

_EMBEDDING_USAGE = """```python
import json
from pathlib import Path

from sentence_transformers import SentenceTransformer

folder = Path("path/to/this/folder")
model = SentenceTransformer(str(folder))
query_format = json.loads((folder / "speed_embedding.json").read_text())["query_format"]

task = "Given a web search query, retrieve relevant passages that answer the query"
queries = [query_format.format(instruction=task, query="how do solar panels work")]
documents = ["Solar panels turn sunlight into electricity with photovoltaic cells."]
query_embeddings = model.encode(queries)  # the instruction is part of the query text
document_embeddings = model.encode(documents)  # documents: no instruction, no prompt
print(model.similarity(query_embeddings, document_embeddings))  # cosine
```
"""


def _variant_text(name: str | None) -> str:
    if not name:
        return "a SPEED corpus"
    variant, _, fraction = name.partition("@")
    what = _VARIANTS.get(variant, "a SPEED corpus")
    if fraction:
        return f"a nested {fraction} fraction of the `{variant}` corpus ({what})"
    return f"the `{variant}` corpus ({what})"


def _embedding_rows(
    base_model: str, spec: EmbeddingSpec, loss_scale: float
) -> list[tuple[str, str]]:
    rows = [
        ("base model", f"`{base_model}`"),
        (
            "kind",
            fmt(spec.kind)
            + (
                " (last-token pooling, EOS appended)"
                if spec.kind == "decoder"
                else " (its own pooling)"
            ),
        ),
        ("loss", f"`CachedMultipleNegativesRankingLoss`, scale {fmt(loss_scale)}"),
        ("temperature", fmt(spec.temperature)),
        (
            "batch size (in-batch negatives) / cached mini-batch",
            f"{spec.batch_size} / {spec.mini_batch_size}",
        ),
        ("learning rate", fmt(spec.learning_rate)),
        ("warmup steps", str(spec.warmup_steps)),
        ("weight decay", fmt(spec.weight_decay)),
        (
            "length",
            f"max_steps {spec.max_steps}" if spec.max_steps > 0 else f"{fmt(spec.epochs)} epochs",
        ),
        ("max length (tokens)", str(spec.max_length)),
    ]
    if spec.kind == "decoder":
        lora = f"r {spec.lora_r}, alpha {fmt(spec.lora_alpha)}, dropout {fmt(spec.lora_dropout)}"
        rows.append(("LoRA (all linear layers, merged)", lora))
    rows += [("seed", str(spec.seed)), ("dtype / bf16", f"{fmt(spec.dtype)} / {fmt(spec.bf16)}")]
    return rows


def _embedding_section(
    facts: CardFacts, spec: EmbeddingSpec, metrics: Mapping[str, Any], prefix: str | None
) -> str:
    counts = metrics.get("examples") or {}
    total = sum(counts.values())
    parts = ", ".join(f"{n} {k}" for k, n in counts.items())
    results = [
        ("optimizer steps", str(metrics.get("global_step"))),
        (
            "first / last / min training loss",
            " / ".join(fmt(metrics.get(k)) for k in ("first_loss", "last_loss", "min_loss")),
        ),
    ]
    single = (
        f'\nThe whole corpus used one instruction, so `model.prompts["query"]` holds its filled '
        f"prefix (`{prefix!r}`) and `model.encode_query(raw_queries)` is the same as encoding "
        "formatted queries.\n"
        if prefix
        else '\n`model.prompts["query"]` is empty: write the instruction into each query.\n'
    )
    scores = (
        "The training job runs before evaluation, so this card holds no scores yet: they are in "
        f"`eval/{facts.name or '<variant>'}/<task>.json` of the run (every variant side by side in "
        "`eval/summary.csv`). `speed-export` puts them here in the exported copy of this folder "
        "(`speed.train.cards.add_scores(card, rows)` does it for any card)."
    )
    loss_scale = metrics.get("loss_scale", 1 / spec.temperature)
    lines = [
        "## SPEED\n",
        f"An embedding model trained on {_variant_text(facts.name)}. SPEED "
        "(arXiv:2410.18634): small LLMs, aligned with a teacher, synthesize the training data.\n",
        "### Training\n",
        f"Contrastive InfoNCE with in-batch negatives on {total} examples ({parts}: a "
        "triplet has a hard negative, a pair has none; a batch never mixes them).\n",
        table(("setting", "value"), _embedding_rows(facts.base_model, spec, loss_scale)),
        "\nResults (from `metrics.json` and `training_curve.json` in this folder):\n",
        table(("metric", "value"), results),
        "\n### Queries and documents\n",
        "A query carries its task's instruction, written into the text as in training "
        "(`query_format` in `speed_embedding.json`); documents carry none:\n",
        f"```text\n{spec.query_format}\n```\n",
        _EMBEDDING_USAGE,
        "The tokenizer appends EOS itself where the model needs it: never add it, and never "
        "set `default_prompt_name` (it would instruct documents too)." + single,
        "### Evaluation\n",
        scores_block(scores),
    ]
    return squeeze("\n".join(lines))


def _library_body(library_card: str) -> tuple[dict[str, Any], str]:
    """sentence-transformers' card without what changes between reruns or machines."""
    meta, body = split_card(library_card)
    meta.pop("co2_eq_emissions", None)
    body = drop_sections(body, DROPPED_SECTIONS)
    body = re.sub(r"# Download from the .* Hub\n", "# Load from this folder\n", body)
    body = body.replace('"sentence_transformers_model_id"', '"path/to/this/folder"')
    return meta, body


def embedding_card(
    facts: CardFacts,
    spec: EmbeddingSpec,
    metrics: Mapping[str, Any],
    prefix: str | None = None,
    library_card: str | None = None,
) -> str:
    """An embedding folder's card: sentence-transformers' `library_card` (when it could make
    one) cleaned, with the SPEED section before its model details; else the SPEED section
    alone. `prefix`: the single-instruction query prompt, if any."""
    lib_meta, lib_body = _library_body(library_card) if library_card else ({}, "")
    tags = ["speed", "synthetic-data", "sentence-transformers", "sentence-similarity"]
    meta = {
        "base_model": facts.base_model,
        "license": facts.license,
        "library_name": "sentence-transformers",
        "pipeline_tag": "sentence-similarity",
        **{k: v for k, v in lib_meta.items() if k not in ("base_model", "license", "tags")},
        "tags": tags + [t for t in lib_meta.get("tags", []) if t not in tags],
    }
    section = _embedding_section(facts, spec, metrics, prefix)
    title = (
        f"# SPEED embedding model ({facts.name})\n\n"
        if facts.name
        else "# SPEED embedding model\n\n"
    )
    if "\n## Model Details" in lib_body:
        head, _, tail = lib_body.partition("\n## Model Details")
        body = f"{head.rstrip()}\n\n{section}\n## Model Details{tail}"
    else:
        body = title + section + ("\n" + lib_body if lib_body else "")
    return front_matter(meta) + body.rstrip("\n") + "\n"
