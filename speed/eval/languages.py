"""Language-subset folder names of local tasks (docs/eval_layouts.md), without importing mteb:
the workflow names evaluation jobs with them when it builds the DAG."""

from __future__ import annotations

import re

# Language-subset folders (`.../AmazonCounterfactualClassification/en`): ISO 639-1 code, with an
# optional suffix as in mteb's subset names ("en-ext", "en-en"), mapped to mteb's lang-script tag.
LANGS = {
    "en": "eng-Latn", "de": "deu-Latn", "fr": "fra-Latn", "es": "spa-Latn", "it": "ita-Latn",
    "pt": "por-Latn", "nl": "nld-Latn", "pl": "pol-Latn", "ru": "rus-Cyrl", "ar": "ara-Arab",
    "tr": "tur-Latn", "ja": "jpn-Jpan", "zh": "cmn-Hans", "ko": "kor-Hang", "hi": "hin-Deva",
    "sv": "swe-Latn", "da": "dan-Latn", "fi": "fin-Latn", "no": "nob-Latn", "cs": "ces-Latn",
}  # fmt: skip
_SUBSET = re.compile(r"([a-z]{2})(-[a-z]{2,4})?")


def is_language_code(name: str) -> bool:
    """`en`, `de`, `en-ext`, `en-en`: a folder named like a language subset of its parent task
    (mteb's own subset names of a registered parent count too: speed.eval.local_tasks)."""
    m = _SUBSET.fullmatch(name)
    return bool(m and m.group(1) in LANGS)
