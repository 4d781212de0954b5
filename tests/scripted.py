"""A scripted LLM backend for tests: a real `Backend` whose answers are given, not sampled.

Stage functions build their backend from a spec dict; `registered` makes a spec whose `backend`
names a scripted backend reach that very instance (through `speed.llm.factory.register_backend`),
so a test can run a stage end to end and then look at every request the stage paid for.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from speed.llm.factory import register_backend, unregister_backend
from speed.llm.types import Completion, GenerationError, Request, parse_structured

# (request, sample index within the request) -> the completion text
Script = Callable[[Request, int], str]


def words(text: str) -> int:
    return len(text.split())


def last_user(request: Request) -> str:
    return next(m["content"] for m in reversed(request.messages) if m["role"] == "user")


def by_substring(answers: Mapping[str, str]) -> Script:
    """Answer with the text of the one key found in the last user message (an error if none or
    several match: a test's script must be unambiguous)."""

    def answer(request: Request, _sample: int) -> str:
        user = last_user(request)
        hits = [text for key, text in answers.items() if key in user]
        if len(hits) != 1:
            raise AssertionError(f"{len(hits)} scripted answers match {user[:200]!r}")
        return hits[0]

    return answer


class ScriptedBackend:
    """Answers each request from `script`. Token counts are word counts (prompt: all message
    contents; completion: the text), so the ledger and a budget guard see real numbers.

    `fail` picks requests that fail: a generate() call holding one raises GenerationError whose
    `done` holds the answers to the others, as the real backends do after a partial failure.
    `cut` picks requests whose answers stop at max_tokens (finish_reason "length")."""

    def __init__(
        self,
        script: Script | Mapping[str, str],
        name: str = "scripted",
        fail: Callable[[Request], bool] | None = None,
        cut: Callable[[Request], bool] | None = None,
    ):
        self.script: Script = by_substring(script) if isinstance(script, Mapping) else script
        self.identity: dict[str, Any] = {"backend": "scripted", "model": name}
        self.fail, self.cut = fail, cut
        self.calls: list[list[Request]] = []  # the requests of every generate() call
        self.closed = 0

    @property
    def requests(self) -> list[Request]:
        """Every request the backend was asked, in order (what was paid for)."""
        return [r for call in self.calls for r in call]

    def _answer(self, request: Request) -> list[Completion]:
        prompt_tokens = sum(words(m["content"]) for m in request.messages)
        out = []
        for i in range(request.n):
            text = self.script(request, i)
            out.append(
                Completion(
                    text=text,
                    finish_reason="length" if self.cut and self.cut(request) else "stop",
                    prompt_tokens=prompt_tokens,
                    completion_tokens=words(text),
                    parsed=parse_structured(text, request.schema),
                    latency_s=0.001,
                )
            )
        return out

    def generate(self, requests: list[Request]) -> list[list[Completion]]:
        self.calls.append(list(requests))
        failed = [i for i, r in enumerate(requests) if self.fail is not None and self.fail(r)]
        if failed:
            done = {i: self._answer(r) for i, r in enumerate(requests) if i not in failed}
            raise GenerationError(f"scripted failure of {len(failed)} request(s)", done)
        return [self._answer(r) for r in requests]

    def close(self) -> None:
        self.closed += 1


class StreamingBackend(ScriptedBackend):
    """A ScriptedBackend that streams as the OpenAI backend does: `admit(position)` before each
    request is sent (False stops sending), `on_answer(position, completions)` as each answer
    comes, in the order `order(n)` gives (e.g. the first request answering last). `each`, if
    set, runs after every answer: a test looks at the cache there. A request that `fail` picks
    raises after the others were answered."""

    def __init__(self, script, order=None, each=None, **kwargs):
        super().__init__(script, **kwargs)
        self.order = order or (lambda n: list(range(n)))
        self.each = each

    def stream(self, requests, on_answer, admit=None) -> None:
        sent = []
        for pos in range(len(requests)):
            if admit is not None and not admit(pos):
                break
            sent.append(pos)
        self.calls.append([requests[pos] for pos in sent])
        failed = [p for p in sent if self.fail is not None and self.fail(requests[p])]
        for pos in (p for p in self.order(len(sent)) if p not in failed):
            on_answer(pos, self._answer(requests[pos]))
            if self.each is not None:
                self.each(pos)
        if failed:
            raise GenerationError(f"scripted failure of {len(failed)} request(s)")


@contextmanager
def registered(backend: ScriptedBackend, kind: str = "scripted") -> Iterator[dict[str, Any]]:
    """A spec dict (as a rule's params) whose client is `backend`, while the block runs."""
    register_backend(kind, lambda _spec: backend)
    try:
        yield {
            "backend": kind,
            "model": backend.identity["model"],
            "name": backend.identity["model"],
        }
    finally:
        unregister_backend(kind)
