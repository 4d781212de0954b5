"""One parse-and-repair function for every model output that should hold a JSON object.

Models wrap JSON in prose or markdown fences, stop before the closing brace, put raw newlines
or tabs inside strings, use typographic quotes or leave trailing commas. Each repair below is
tried only when the text does not parse as it is, cheapest first, and the first that parses
wins; what was repaired is reported so stats can count it.
"""

from __future__ import annotations

import ast
import json
import re
from dataclasses import dataclass, field
from typing import Any

_FENCE = re.compile(r"```[A-Za-z0-9_+-]*\s*\n?(.*?)(?:```|$)", re.DOTALL)
_TRAILING_COMMA = re.compile(r",(\s*[}\]])")
_SMART = str.maketrans({"\u201c": '"', "\u201d": '"', "\u201e": '"', "\u2018": "'", "\u2019": "'"})


@dataclass
class Parsed:
    value: Any | None
    repairs: list[str] = field(default_factory=list)
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.value is not None


def _outermost_object(text: str, start: int) -> str:
    """From the first `{` to the last `}` (or to the end when there is none after it)."""
    end = text.rfind("}")
    return text[start : end + 1] if end > start else text[start:]


def _first_object(text: str, start: int) -> str:
    """From the first `{` to the `}` that balances it, skipping braces inside strings, or to
    the end when it is never balanced (truncated). Prose after the object, a second object, or
    a brace in a string no longer ends up inside the candidate."""
    depth = 0
    in_string = escaped = False
    for i in range(start, len(text)):
        ch = text[i]
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                return text[start : i + 1]
    return text[start:]


def _close_truncated(text: str) -> str:
    """Close an unterminated string and any open brackets, in the right order."""
    stack: list[str] = []
    in_string = escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "{[":
            stack.append("}" if ch == "{" else "]")
        elif ch in "}]" and stack:
            stack.pop()
    closed = text + ('"' if in_string else "")
    closed = re.sub(r",\s*$", "", closed.rstrip())
    if closed.endswith(":"):
        closed += "null"
    return closed + "".join(reversed(stack))


def _python_literal(text: str) -> Any:
    value = ast.literal_eval(text)  # literals only: never eval
    if not isinstance(value, dict | list):
        raise ValueError("not a dict or list")
    return value


def _try_json(cand: str) -> tuple[Any, bool] | None:
    """(value, needed lenient parsing) or None. Lenient: raw control characters in strings."""
    for strict in (True, False):
        try:
            return json.loads(cand, strict=strict), not strict
        except (json.JSONDecodeError, ValueError, RecursionError):
            continue
    return None


def parse_json_object(text: str) -> Parsed:
    """The JSON object in `text`, repaired if needed, or None with the reason."""
    if not text or not text.strip():
        return Parsed(None, error="empty output")
    # The text as it is comes first among the candidates below; most outputs parse so, and
    # then building the repaired candidates (two scans of the text in Python) is wasted.
    parsed = _try_json(text.strip())
    if parsed is not None and isinstance(parsed[0], dict):
        return Parsed(parsed[0], ["control characters"] if parsed[1] else [])
    fenced = _FENCE.search(text)
    if fenced and "{" not in fenced.group(1):
        fenced = None  # a fence around something else: look for the object in the whole text
    base = fenced.group(1) if fenced else text
    start = base.find("{")
    if start < 0:
        return Parsed(None, error="no JSON object in output")
    fence = ["markdown fence"] if fenced else []
    attempts: list[tuple[list[str], str]] = [([], text.strip())]
    if fenced:
        attempts.append((fence, base.strip()))
    objects: list[tuple[list[str], str]] = []
    for obj in dict.fromkeys([_first_object(base, start), _outermost_object(base, start)]):
        labels = fence if obj == base.strip() else [*fence, "text around object"]
        objects.append((labels, obj))
        if obj != base.strip():
            attempts.append((labels, obj))
    candidates = list(attempts)
    for labels, cand in attempts:
        smart = cand.translate(_SMART)
        candidates.append(([*labels, "trailing comma"], _TRAILING_COMMA.sub(r"\1", cand)))
        candidates.append(([*labels, "smart quotes"], smart))
        candidates.append(
            ([*labels, "smart quotes", "trailing comma"], _TRAILING_COMMA.sub(r"\1", smart))
        )
    # A truncated object runs to the end of the text: close it from its first `{`.
    tail = base[start:]
    before = [*fence, "text around object"] if base[:start].strip() else fence
    candidates.append(
        ([*before, "truncated object"], _close_truncated(_TRAILING_COMMA.sub(r"\1", tail)))
    )
    candidates.append(
        ([*before, "smart quotes", "truncated object"], _close_truncated(tail.translate(_SMART)))
    )
    for labels, cand in candidates:
        parsed = _try_json(cand)
        if parsed is not None and isinstance(parsed[0], dict):
            value, lenient = parsed
            return Parsed(value, [*labels, "control characters"] if lenient else labels)
    for labels, obj in objects:
        try:
            value = _python_literal(obj)  # single-quoted Python dict
        except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
            continue
        if isinstance(value, dict):
            return Parsed(value, [*labels, "python literal"])
    return Parsed(None, error="invalid JSON")


def clean_string(value: Any) -> str | None:
    """Field value as a trimmed string: numbers become text, containers and blanks None."""
    if isinstance(value, bool) or value is None or isinstance(value, dict | list):
        return None
    text = str(value).strip()
    return text or None
