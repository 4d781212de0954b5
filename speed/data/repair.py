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

_FENCE = re.compile(r"```(?:json|JSON|javascript|js)?\s*\n?(.*?)(?:```|$)", re.DOTALL)
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


def _loads(text: str) -> Any:
    # strict=False accepts raw control characters (newlines, tabs) inside strings.
    return json.loads(text, strict=False)


def _outermost_object(text: str) -> str | None:
    start = text.find("{")
    if start < 0:
        return None
    end = text.rfind("}")
    return text[start : end + 1] if end > start else text[start:]


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


def parse_json_object(text: str) -> Parsed:
    """The JSON object in `text`, repaired if needed, or None with the reason."""
    if not text or not text.strip():
        return Parsed(None, error="empty output")
    attempts: list[tuple[str, str]] = [("", text.strip())]
    fenced = _FENCE.search(text)
    if fenced:
        attempts.append(("markdown fence", fenced.group(1).strip()))
    base = fenced.group(1) if fenced else text
    obj = _outermost_object(base)
    if obj is None:
        return Parsed(None, error="no JSON object in output")
    if obj != base.strip():
        attempts.append(("text around object", obj))
    candidates = list(attempts)
    for label, cand in attempts:
        prefix = [label] if label else []
        candidates.append(("|".join([*prefix, "trailing comma"]), _TRAILING_COMMA.sub(r"\1", cand)))
        candidates.append(("|".join([*prefix, "smart quotes"]), cand.translate(_SMART)))
    candidates.append(("truncated object", _close_truncated(_TRAILING_COMMA.sub(r"\1", obj))))
    candidates.append(("smart quotes|truncated object", _close_truncated(obj.translate(_SMART))))
    for label, cand in candidates:
        try:
            value = _loads(cand)
        except (json.JSONDecodeError, ValueError):
            continue
        if isinstance(value, dict):
            return Parsed(value, [r for r in label.split("|") if r])
    for label, cand in [("python literal", obj)]:
        try:
            value = _python_literal(cand)
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            continue
        if isinstance(value, dict):
            return Parsed(value, [label])
    return Parsed(None, error="invalid JSON")


def clean_string(value: Any) -> str | None:
    """Field value as a trimmed string: numbers become text, containers and blanks None."""
    if isinstance(value, bool) or value is None or isinstance(value, dict | list):
        return None
    text = str(value).strip()
    return text or None
