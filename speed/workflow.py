"""Pure helpers the Snakefile uses to turn the validated config into paths and rule params.

Kept out of the .smk files so they are unit-tested and so every rule gets the same answer.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from speed.eval.languages import is_language_code

# Corpus variant -> (generator, revised?): which shards it is assembled from. teacher_only, the
# all-teacher baseline, has no generator.
VARIANT_SOURCES: dict[str, tuple[str, bool]] = {
    "speed": ("senior", True),
    "no_revisor": ("senior", False),
    "no_dpo": ("junior", True),
    "junior_only": ("junior", False),
}


def run_dir(config: dict[str, Any]) -> str:
    return f"{config['results_dir']}/{config['run']}"


def tiny_model_dir(config: dict[str, Any], name: str) -> str:
    return f"{run_dir(config)}/models/tiny/{name}"


def tiny_model_names(config: dict[str, Any]) -> list[str]:
    return [name for name, spec in config["models"].items() if "tiny" in spec]


def model_path(config: dict[str, Any], name: str) -> str:
    """Where a configured model lives: a build target of this workflow or a hub id/local path."""
    spec = config["models"].get(name)
    if spec is None:
        raise KeyError(f"model {name!r} is not defined under models: in the config")
    return tiny_model_dir(config, name) if "tiny" in spec else spec["hub"]


def model_inputs(config: dict[str, Any], *names: str) -> list[str]:
    """The build targets among `names`, for a rule's input: (hub models are not files)."""
    return [tiny_model_dir(config, n) for n in names if "tiny" in config["models"][n]]


def card_params(
    config: dict[str, Any], model: str | None = None, name: str | None = None
) -> dict[str, Any]:
    """A training rule's `card` params (speed.train.cards.CardFacts): the license, the trained
    model's `name` in SPEED (junior, senior, revisor, an embedding variant) and, for a
    generator, its configured base `model` (a name under `models:`) as its card names it: the
    hub id or path as configured, or a tiny model's build folder (relative, so cards hold no
    absolute path). An embedding card names `embedding.base` itself."""
    out: dict[str, Any] = {"license": config["card"]["license"]}
    if name is not None:
        out["name"] = name
    if model is not None:
        out["base_model"] = model_path(config, model)
    return out


# Backend settings that change no output (config/README.md says why, key by key): they reach
# jobs through SPEED_KNOBS (`knobs`), never a rule param or a cache key, so changing one reruns
# nothing. Every other `backends.<engine>` key is a param: a key added to the schema and not
# listed here reruns what it touches, the safe side (tests/unit/test_knobs.py makes every key
# of the schema be classed as one or the other).
ENGINE_KNOBS: dict[str, tuple[str, ...]] = {
    "vllm": (
        "kv_cache_gib",
        "max_lora_rank",
        "enforce_eager",
        "tensor_parallel_size",
        "max_num_seqs",
        "max_num_batched_tokens",
        "gpu_memory_utilization",
        "enable_prefix_caching",
    ),
    "transformers": ("batch_size",),
}
# ... and those that decide outputs: rule params, and part of the backend's identity.
ENGINE_OUTPUTS: dict[str, tuple[str, ...]] = {
    "vllm": ("dtype", "max_model_len"),
    "transformers": ("dtype",),
}
OPENAI_KNOBS = ("max_concurrency", "max_attempts", "timeout_s")  # teacher.openai
# teacher.openai, as params
OPENAI_OPTIONS = ("base_url", "api_key_env", "response_format", "strict_subset")
BATCH_KNOBS = ("completion_window", "poll_s", "max_requests")  # teacher.openai.batch


def local_engine_options(config: dict[str, Any], engine: str) -> dict[str, Any]:
    """The engine settings that decide outputs (dtype, context length) and the run's seed."""
    names = ENGINE_KNOBS[engine]
    opts = {k: v for k, v in config["backends"][engine].items() if k not in names}
    opts["seed"] = config["seed"]
    return opts


TRAINING_SECTIONS = ("junior", "senior", "revisor", "embedding")
TRAINING_KNOBS = ("processes",)  # how many ranks train: the same batches, the same weights


def train_params(config: dict[str, Any], section: str) -> dict[str, Any]:
    """A training rule's `train` params: its config section but the knobs (and the embedding's
    `base`, a param of its own)."""
    return {k: v for k, v in config[section].items() if k not in (*TRAINING_KNOBS, "base")}


def knobs(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Backend kind (and "training": section -> processes) -> the knobs of the config
    (speed.llm.knobs), for SPEED_KNOBS."""
    out: dict[str, dict[str, Any]] = {
        engine: {k: v for k, v in config["backends"][engine].items() if k in names}
        for engine, names in ENGINE_KNOBS.items()
    }
    o = config["teacher"]["openai"]
    out["openai"] = {k: o[k] for k in OPENAI_KNOBS if k in o}
    out["openai_batch"] = {k: v for k, v in o.get("batch", {}).items() if k in BATCH_KNOBS}
    out["training"] = {s: config[s].get("processes", "auto") for s in TRAINING_SECTIONS}
    return out


def teacher_spec(config: dict[str, Any]) -> dict[str, Any]:
    """Everything that decides the teacher's outputs (its knobs are in `knobs`); the API key
    itself never appears here, only the name of the variable that holds it."""
    t = config["teacher"]
    if t["backend"] == "openai":
        o = t["openai"]
        return {
            "backend": "openai",
            "name": t["model"],
            "model": t["model"],
            "options": {
                **{k: o[k] for k in OPENAI_OPTIONS},
                **({"batch": batch_options(config)} if uses_batch_api(config) else {}),
            },
        }
    return {
        "backend": t["backend"],
        "name": t["model"],
        "model": model_path(config, t["model"]),
        "options": local_engine_options(config, t["backend"]),
    }


def uses_batch_api(config: dict[str, Any]) -> bool:
    t = config["teacher"]
    return t["backend"] == "openai" and t["openai"]["batch"]["enabled"]


def batch_options(config: dict[str, Any]) -> dict[str, Any]:
    """Where the Batch API's records live; its knobs (BATCH_KNOBS) are no param."""
    return {"state_dir": str(Path(config["cache_dir"]) / "openai-batches")}


def teacher_price(config: dict[str, Any]) -> dict[str, float]:
    """USD per million tokens the teacher's calls really cost (the Batch API's discount applied)."""
    t = config["teacher"]
    if not uses_batch_api(config):
        return t["price"]
    return {k: v * t["openai"]["batch"]["price_factor"] for k, v in t["price"].items()}


def teacher_inputs(config: dict[str, Any]) -> list[str]:
    t = config["teacher"]
    return [] if t["backend"] == "openai" else model_inputs(config, t["model"])


def log_path(config: dict[str, Any], name: str) -> str:
    return str(Path(run_dir(config)) / "logs" / f"{name}.log")


def generator_spec(config: dict[str, Any], name: str, path: str) -> dict[str, Any]:
    """A trained generator (junior, senior, revisor) on the configured local engine."""
    engine = config["generation"]["backend"]
    return {
        "backend": engine,
        "name": name,
        "model": path,
        "options": local_engine_options(config, engine),
    }


def decontamination_tasks(config: dict[str, Any]) -> dict[str, str]:
    """Task name -> where the texts of every evaluation set the corpus must not contain are:
    a `local:` folder (one named like a language, `en`, is a subset: the task is its parent's
    name), or for `mteb:<Name>` the file rule eval_texts extracts from mteb's data.
    `evaluation` stands for the evaluated tasks."""
    specs = []
    for spec in config["corpus"]["decontaminate_against"]:
        if spec == "evaluation":  # every evaluated task but the run's own held-out split
            specs += [t for t in config["evaluation"]["tasks"] if not t.startswith("heldout:")]
        else:
            specs.append(spec)
    tasks = {}
    for spec in dict.fromkeys(specs):
        kind, _, arg = spec.partition(":")
        if kind == "mteb":
            tasks[arg] = str(Path(run_dir(config)) / "decontamination" / f"{arg}.jsonl")
        else:
            path = Path(arg)
            name = path.parent.name if len(path.name) <= 3 and path.parent.name else path.name
            tasks[name] = str(path)
    return tasks


def eval_task_key(spec: str) -> str:
    """The name of one evaluated task's job and file (`eval/<variant>/<key>.json`), from its
    spec alone (a held-out folder does not exist yet when the DAG is built): the task name of
    `mteb:<Name>` and `heldout:<Name>`; a `local:` folder's name, `<parent>-<name>` for a folder
    named like a language subset (`.../AmazonCounterfactualClassification/en`)."""
    kind, _, arg = spec.partition(":")
    if kind != "local":
        return arg
    path = Path(arg)
    if is_language_code(path.name) and path.parent.name:
        return f"{path.parent.name}-{path.name}"
    return path.name


def eval_tasks(config: dict[str, Any]) -> dict[str, str]:
    """Task key -> spec of every evaluated task, in config order; `heldout:<Name>` becomes the
    `local:` folder of this run's held-out split. One evaluation job per (variant, key)."""
    heldout = f"{run_dir(config)}/eval/heldout"
    tasks: dict[str, str] = {}
    for t in config["evaluation"]["tasks"]:
        key = eval_task_key(t)
        if key in tasks or not re.fullmatch(r"[\w.@+-]+", key):
            raise ValueError(
                f"evaluation.tasks: {t!r} is named {key!r}, "
                + ("as another task is" if key in tasks else "not usable as a file name")
            )
        name = t.removeprefix("heldout:")
        tasks[key] = f"local:{heldout}/{name}" if t.startswith("heldout:") else t
    return tasks


def eval_resources(config: dict[str, Any], key: str) -> dict[str, int]:
    """mem_mb, runtime and gpu of one task's evaluation jobs: `resources.gpu`, with the task's
    `evaluation.resources` entry over it (retrieval over large corpora needs longer)."""
    gpu = config["resources"]["gpu"]
    base = {"mem_mb": gpu["mem_mb"], "runtime": gpu["runtime"], "gpu": gpu.get("gpu", 0)}
    return base | config["evaluation"].get("resources", {}).get(key, {})


def check_eval_resources(config: dict[str, Any]) -> None:
    """A resources entry for a task that is not evaluated is a typo, never silently ignored."""
    keys = [eval_task_key(t) for t in config["evaluation"]["tasks"]]
    unknown = sorted(set(config["evaluation"].get("resources", {})) - set(keys))
    if unknown:
        raise ValueError(
            f"evaluation.resources names tasks that evaluation.tasks does not: {unknown} "
            f"(the tasks are {keys})"
        )


def uses_heldout(config: dict[str, Any]) -> bool:
    return any(t.startswith("heldout:") for t in config["evaluation"]["tasks"])
