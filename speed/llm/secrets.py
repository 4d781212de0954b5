"""Scrubbing of secrets from server texts before they become log lines or exception messages.

Servers echo what they were sent: OpenAI's 401 says "Incorrect API key provided: sk-proj-****wxyz",
proxies repeat the Authorization header, batch error files quote request lines. Anything that
looks like a key becomes `[REDACTED]`, masked forms included (their visible tail is still part of
the key), and so does the configured key itself, whatever its shape.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

MASK = "[REDACTED]"  # no url-safe or mask characters: never re-matched below
_URLSAFE = r"A-Za-z0-9_\-"

_PATTERNS = [
    # OpenAI keys (sk-, sk-proj-, sk-svcacct-, sk-admin-), also masked: sk-abc1****wxyz, sk-...wxyz
    re.compile(rf"\bsk-(?=[{_URLSAFE}*.…]{{4}})(?:[{_URLSAFE}*]|\.{{2,}}|…)+"),
    # An Authorization header quoted back: the token after the scheme
    re.compile(r"(?i)\b(bearer)(\s+)[A-Za-z0-9._~+/=\-]+"),
    # key=value / "api_key": "value" / api-key: value (Azure's header)
    re.compile(
        r"(?i)\b(api[_-]?key|access[_-]?token|secret|password)"
        r"([\"']?\s*[:=]\s*[\"']?)(?!\s)[^\s\"',;&]+"
    ),
    # What a masked key leaves visible around its mask: abcd********wxyz
    re.compile(rf"[{_URLSAFE}]{{0,12}}\*{{3,}}[{_URLSAFE}]{{0,12}}"),
]
# Long url-safe runs: secrets when they mix cases and digits like generated tokens do (hex
# digests and request/batch ids are one case plus digits, and are kept for debugging).
_LONG_RUN = re.compile(rf"(?<![{_URLSAFE}])[{_URLSAFE}]{{32,}}(?![{_URLSAFE}])")


def _looks_random(token: str) -> bool:
    return (
        any(c.islower() for c in token)
        and any(c.isupper() for c in token)
        and any(c.isdigit() for c in token)
    )


def _replace(match: re.Match[str]) -> str:
    # Patterns with a named prefix (bearer, api_key=) keep it: the reader learns what was there.
    if match.re.groups >= 2:
        return f"{match[1]}{match[2]}{MASK}"
    return MASK


def scrub(text: str, secrets: Iterable[str | None] = ()) -> str:
    """`text` with every known secret, anything shaped like a key and masked keys replaced."""
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, MASK)
            # A masked echo of a known key ends with its last characters after the mask.
            tail = re.escape(secret[-4:])
            text = re.sub(rf"(?:\*+|\.{{2,}}|…)[{_URLSAFE}]*{tail}", MASK, text)
    for pattern in _PATTERNS:
        text = pattern.sub(_replace, text)
    return _LONG_RUN.sub(lambda m: MASK if _looks_random(m[0]) else m[0], text)
