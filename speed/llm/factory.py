"""Build a backend and its cached, ledgered client from a plain spec dict (a rule's params)."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from speed.io import atomic_file
from speed.llm.budget import SpendGuard
from speed.llm.cache import CompletionCache
from speed.llm.client import LLMClient
from speed.llm.knobs import knobs_for
from speed.llm.ledger import Ledger, Price
from speed.llm.types import Backend

log = logging.getLogger(__name__)

# Backend kinds added in-process (tests register scripted backends here): kind -> build(spec).
_REGISTERED: dict[str, Callable[[dict[str, Any]], Backend]] = {}


def register_backend(kind: str, build: Callable[[dict[str, Any]], Backend]) -> None:
    """Let specs of this process name `kind` as their backend; `build(spec)` makes it."""
    _REGISTERED[kind] = build


def unregister_backend(kind: str) -> None:
    _REGISTERED.pop(kind, None)


def backend_options(kind: str, options: dict[str, Any]) -> dict[str, Any]:
    """A spec's options over the knobs the workflow announced (speed.llm.knobs): the spec holds
    what decides outputs (a rule param), the knobs what does not (no param, no cache key)."""
    merged = {**knobs_for(kind), **options}
    used = {k: merged[k] for k in knobs_for(kind)}
    if kind == "openai" and "batch" in merged:
        merged["batch"] = {**knobs_for("openai_batch"), **merged["batch"]}
        used |= {k: merged["batch"][k] for k in knobs_for("openai_batch")}
    if used:  # the job log says what it ran with: no param or output records a knob
        log.info("%s backend knobs: %s", kind, json.dumps(used, sort_keys=True))
    return merged


def make_backend(spec: dict[str, Any]) -> Backend:
    """spec: {backend, model, adapter?, options: {...}} as built by speed.workflow
    (teacher_spec, generator_spec)."""
    kind = spec["backend"]
    if kind in _REGISTERED:
        return _REGISTERED[kind](spec)
    options = backend_options(kind, spec.get("options", {}))
    if kind == "vllm":
        from speed.llm.vllm_backend import VLLMBackend

        return VLLMBackend(spec["model"], adapter=spec.get("adapter"), **options)
    if kind == "transformers":
        from speed.llm.transformers_backend import TransformersBackend

        return TransformersBackend(spec["model"], adapter=spec.get("adapter"), **options)
    if kind == "openai":
        if batch := options.pop("batch", None):
            from speed.llm.openai_batch import OpenAIBatchBackend

            return OpenAIBatchBackend(spec["model"], **options, **batch)
        from speed.llm.openai_backend import OpenAIBackend

        return OpenAIBackend(spec["model"], **options)
    raise ValueError(f"unknown LLM backend {kind!r} (expected vllm, transformers or openai)")


@contextmanager
def open_client(
    spec: dict[str, Any],
    cache_dir: str | Path,
    ledger_path: str | Path | None = None,
    stage: str | None = None,
    price: dict[str, float] | None = None,
) -> Iterator[LLMClient]:
    """A client whose ledger (if any) appears at `ledger_path` only when the job succeeds."""
    cache = CompletionCache(Path(cache_dir) / "completions")
    backend = make_backend(spec)
    guard = None
    try:
        if ledger_path is None:
            yield LLMClient(backend, cache)
            return
        # A ledgered client is a teacher stage: the run's budget (if any) guards it.
        guard = SpendGuard.from_env(cache_dir, Price(**(price or {})))
        with atomic_file(ledger_path) as stream:
            ledger = Ledger(
                stream, stage or "unknown", spec.get("name", spec["model"]), Price(**(price or {}))
            )
            yield LLMClient(backend, cache, ledger, budget=guard)
    finally:
        backend.close()
        cache.close()
        if guard is not None:
            guard.close()
