"""Backend settings that change no output ("knobs"): engine batch sizes, KV-cache size, eager
mode, tensor parallelism, the OpenAI transport (concurrency, retries, timeouts) and the Batch
API's polling.

They reach jobs through the SPEED_KNOBS environment variable, which the Snakefile sets from the
config (speed.workflow.knobs), not through rule params or the backend's identity: changing one
reruns nothing and keeps every cache key. The budget reaches jobs the same way (budget.py).
`make_backend` puts them under a spec's own options, so a spec that names one (a test, a
benchmark) wins, and a backend built outside the workflow gets its constructor's defaults.
"""

from __future__ import annotations

import json
import os
from typing import Any

ENV_VAR = "SPEED_KNOBS"


def knobs_env(knobs: dict[str, dict[str, Any]]) -> str:
    """The environment value for `knobs`: backend kind (vllm, transformers, openai,
    openai_batch) -> constructor keyword arguments."""
    return json.dumps(knobs, sort_keys=True)


def knobs_for(kind: str) -> dict[str, Any]:
    """The knobs the workflow announced for backends of `kind` ({} outside the workflow)."""
    raw = os.environ.get(ENV_VAR)
    if not raw:
        return {}
    try:
        knobs = json.loads(raw)
    except ValueError as err:
        raise ValueError(f"{ENV_VAR} is not JSON ({err}): {raw[:200]!r}") from None
    found = knobs.get(kind, {}) if isinstance(knobs, dict) else None
    if not isinstance(found, dict):
        raise ValueError(f"{ENV_VAR}[{kind!r}] is not a mapping of settings: {found!r}")
    return found
