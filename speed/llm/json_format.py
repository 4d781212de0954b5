"""The exact JSON text the constrained decoders write, so that training targets match it.

Both local engines decode structured outputs with llguidance: the transformers backend directly,
vLLM through its `guidance` backend with `disable_any_whitespace` (vLLM's xgrammar backend, with
the same flag, also writes "," and ":" but lets raw control characters into strings, which is why
it is not used). For our schemas (an object of required string properties, no extra ones) that
grammar accepts exactly:

- no whitespace outside strings: separators "," and ":" (plain xgrammar would write ", " and
  ": ");
- the properties once each, in the schema's `properties` order;
- inside strings any character as itself except the control characters U+0000-U+001F and U+007F,
  which must be escaped; the escapes \\" \\\\ \\b \\f \\n \\r \\t, and \\uXXXX (either hex case)
  for those control characters only: no \\/, no \\u00e9, no surrogate pairs.

`decoder_json` is `json.dumps(ensure_ascii=False)` with compact separators and U+007F escaped
(json.dumps writes it raw, which the grammar refuses): one of the texts the decoder can write for
an object, and the one a model trained on it learns. tests/unit/test_json_format.py checks these
rules against llguidance itself.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

_ESCAPE = re.compile(r"\\(u[0-9a-fA-F]{4}|.)", re.DOTALL)
_SHORT = {'"': '"', "\\": "\\", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t"}


def decoder_json(obj: Mapping[str, Any]) -> str:
    """The compact JSON the constrained decoders write for `obj`, keys in `obj`'s order."""
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).replace("\x7f", "\\u007f")


def _respell(text: str) -> str | None:
    """`text` with every escape written as decoder_json writes it; None when an escape is one
    the decoder's grammar does not allow."""
    bad = False

    def one(m: re.Match[str]) -> str:
        nonlocal bad
        esc = m.group(1)
        if esc.startswith("u") and len(esc) == 5:
            char = chr(int(esc[1:], 16))
            if not (ord(char) < 0x20 or ord(char) == 0x7F):
                bad = True
        elif esc in _SHORT:
            char = _SHORT[esc]
        else:
            bad = True
            return m.group(0)
        return json.dumps(char, ensure_ascii=False)[1:-1].replace("\x7f", "\\u007f")

    out = _ESCAPE.sub(one, text)
    return None if bad else out


class _Pairs(list):
    """A JSON object as its (key, value) pairs, in text order, duplicates kept."""


def _plain(value: Any) -> Any:
    if isinstance(value, _Pairs):
        return {k: _plain(v) for k, v in value}
    return [_plain(v) for v in value] if isinstance(value, list) else value


def parse_pairs(text: str) -> list[tuple[str, Any]] | None:
    """The key-value pairs of a JSON object in text order (duplicates kept), or None when
    `text` is not strictly one JSON object."""
    try:
        pairs = json.loads(text, object_pairs_hook=_Pairs)
    except ValueError:
        return None
    return list(pairs) if isinstance(pairs, _Pairs) else None


def in_decoder_form(text: str, keys: tuple[str, ...] | None = None) -> bool:
    """True when `text` is a JSON object the constrained decoder could have written byte for
    byte: compact, allowed escapes only, and (with `keys`) exactly those keys in that order."""
    pairs = parse_pairs(text)
    if pairs is None or (keys is not None and tuple(k for k, _ in pairs) != keys):
        return False
    if len({k for k, _ in pairs}) != len(pairs):
        return False
    return _respell(text) == decoder_json({k: _plain(v) for k, v in pairs})
