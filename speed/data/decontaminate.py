"""Decontamination: no training text may carry evaluation data.

Two checks per text, against every text of the configured evaluation tasks:
- a shared word n-gram of `ngram` words (13 by default, as in GPT-3's and E5's contamination
  studies) catches copied passages inside longer documents;
- MinHash near-duplicate search catches short texts (an STS sentence has fewer than 13 words)
  and lightly edited copies.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from itertools import chain
from typing import Any

import numpy as np

from speed.data.dedup import CHUNK, minhashes, word_shingles, words

GRAM_FLUSH = 1 << 20  # n-gram hashes buffered in a Python list before they go to numpy


@dataclass
class EvalIndex:
    """Every evaluation text as word n-gram hashes (per task a sorted int64 array: 8 bytes per
    n-gram, so the MTEB English test sets' ~10^8 n-grams fit in a few GB) and, for texts shorter
    than two n-grams, as a MinHash LSH index. Longer texts need no MinHash: a copy light enough
    for MinHash's threshold keeps whole n-grams between its edits."""

    ngram: int
    threshold: float
    shingle_size: int
    num_perm: int = 128
    seed: int = 0

    def __post_init__(self) -> None:
        from rensa import RMinHashLSH

        # task -> sorted distinct hashes of its n-grams (64 bits: against 10^8 evaluation
        # n-grams a false match is about 1e-11 likely per n-gram looked up), in the order added
        self._grams: dict[str, np.ndarray] = {}
        self._texts = 0
        self._lsh = RMinHashLSH(threshold=self.threshold, num_perm=self.num_perm, num_bands=16)
        self._hashes: list[Any] = []
        self._tasks: list[str] = []

    def _ngram_keys(self, w: Sequence[str]) -> Iterator[int]:
        """Hashes of the word n-grams, in text order (a tuple's hash reuses its words')."""
        return map(hash, zip(*(w[k:] for k in range(self.ngram)), strict=False))

    def _minhash(self, word_lists: Sequence[Sequence[str]]) -> list[Any]:
        sets = [word_shingles(w, self.shingle_size) for w in word_lists]
        return minhashes(sets, self.num_perm, self.seed)

    def add(self, task: str, texts: Iterable[str]) -> None:
        short: list[list[str]] = []
        grams: list[int] = []
        parts = [self._grams.get(task, np.empty(0, np.int64))]
        for text in texts:
            if not (text and text.strip()):
                continue
            self._texts += 1
            w = words(text)
            grams.extend(self._ngram_keys(w))
            if len(grams) >= GRAM_FLUSH:
                parts.append(np.fromiter(grams, np.int64, len(grams)))
                grams = []
            if len(w) < 2 * self.ngram:
                short.append(w)
                if len(short) == CHUNK:
                    self._insert(task, short)
                    short = []
        self._insert(task, short)
        parts.append(np.fromiter(grams, np.int64, len(grams)))
        keys = np.concatenate(parts)
        del parts, grams
        keys.sort()  # in place: the only copy made is the distinct keys below
        self._grams[task] = keys[np.r_[True, keys[1:] != keys[:-1]]] if len(keys) else keys

    def _insert(self, task: str, word_lists: Sequence[Sequence[str]]) -> None:
        for mh in self._minhash(word_lists):
            self._lsh.insert(len(self._hashes), mh)
            self._hashes.append(mh)
            self._tasks.append(task)

    def __len__(self) -> int:
        """Evaluation texts indexed."""
        return self._texts

    def n_grams(self) -> int:
        """Distinct evaluation n-grams (per task: one shared by two tasks counts twice)."""
        return sum(len(k) for k in self._grams.values())

    def hits(self, texts: Sequence[str]) -> list[str | None]:
        """For each text, the evaluation task it is contaminated by, or None."""
        return self.hits_words([words(t) for t in texts])

    def hits_words(self, word_lists: Sequence[Sequence[str]]) -> list[str | None]:
        """`hits` for texts given as their words (`dedup.words`): the first of the text's
        n-grams (in text order) that an evaluation text has, else the first MinHash match."""
        found: list[str | None] = [None] * len(word_lists)
        counts = [max(len(w) - self.ngram + 1, 0) for w in word_lists]
        flat = np.fromiter(
            chain.from_iterable(map(self._ngram_keys, word_lists)), np.int64, sum(counts)
        )
        order = np.argsort(flat)  # sorted needles: each searchsorted walks the keys once
        needles = flat[order]
        task_of = np.full(len(flat), -1, np.int32)  # per needle (sorted): first task that has it
        names = list(self._grams)
        for t, keys in enumerate(self._grams.values()):
            if len(keys) and len(needles):
                pos = np.minimum(np.searchsorted(keys, needles), len(keys) - 1)
                task_of[(keys[pos] == needles) & (task_of < 0)] = t
        task_of[order] = task_of.copy()  # back to text order
        hit = np.flatnonzero(task_of >= 0)
        owner = np.repeat(np.arange(len(word_lists)), counts)[hit]
        texts, first = np.unique(owner, return_index=True)  # the first hit of each text
        for i, t in zip(texts.tolist(), task_of[hit[first]].tolist(), strict=True):
            found[i] = names[t]
        rest = [i for i, task in enumerate(found) if task is None]
        if self._hashes and rest:
            for i, mh in zip(rest, self._minhash([word_lists[i] for i in rest]), strict=True):
                for key in self._lsh.query(mh):
                    if mh.jaccard(self._hashes[key]) >= self.threshold:
                        found[i] = self._tasks[key]
                        break
        return found
