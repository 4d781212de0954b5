"""The one request/completion interface every LLM backend speaks."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True)
class Sampling:
    temperature: float = 1.0
    top_p: float = 1.0
    max_tokens: int = 512
    seed: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Request:
    """One prompt; `n` samples of it. `schema` (JSON Schema) asks for structured output."""

    messages: tuple[dict[str, str], ...]
    sampling: Sampling = field(default_factory=Sampling)
    schema: dict[str, Any] | None = None
    n: int = 1
    id: str | None = None  # caller's handle (e.g. prompt id); not part of the cache key

    @staticmethod
    def chat(
        messages: list[dict[str, str]],
        sampling: Sampling | None = None,
        schema: dict[str, Any] | None = None,
        n: int = 1,
        id: str | None = None,
    ) -> Request:
        return Request(
            tuple({"role": m["role"], "content": m["content"]} for m in messages),
            sampling or Sampling(),
            schema,
            n,
            id,
        )


# finish_reason of a request the server refused as longer than the model's context: it was not
# answered (nor billed), is never cached, and the stage counts it as a drop of this reason.
CONTEXT_LENGTH = "context_length"
DROPPED = frozenset({CONTEXT_LENGTH})


@dataclass
class Completion:
    text: str
    finish_reason: str | None
    prompt_tokens: int
    completion_tokens: int
    parsed: Any | None = None  # strict json.loads of text when the request had a schema
    cached: bool = False
    latency_s: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def dropped(self) -> bool:
        """A request the server refused for itself (too long), not an answer."""
        return self.finish_reason in DROPPED

    @staticmethod
    def refused(reason: str) -> Completion:
        return Completion(text="", finish_reason=reason, prompt_tokens=0, completion_tokens=0)


def parse_structured(text: str, schema: dict[str, Any] | None) -> Any | None:
    """Strict parse of a structured output; None when there is no schema or it does not parse."""
    if schema is None:
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return None


class GenerationError(RuntimeError):
    """A generate() call that failed for some requests after the others were answered (and paid
    for): `done` maps the answered requests' positions to their completions, so the caller can
    keep them before the error goes up."""

    def __init__(self, message: str, done: dict[int, list[Completion]] | None = None):
        super().__init__(message)
        self.done = done or {}


class Backend(Protocol):
    """Runs requests. `identity` names everything that decides the outputs (model, adapter hash)."""

    identity: dict[str, Any]

    def generate(self, requests: list[Request]) -> list[list[Completion]]:
        """One list of `request.n` completions per request, in order."""
        ...

    def close(self) -> None: ...
