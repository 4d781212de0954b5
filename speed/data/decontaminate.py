"""Decontamination: no training text may carry evaluation data.

Two checks per text, against every text of the configured evaluation tasks:
- a shared word n-gram of `ngram` words (13 by default, as in GPT-3's and E5's contamination
  studies) catches copied passages inside longer documents;
- MinHash near-duplicate search catches short texts (an STS sentence has fewer than 13 words)
  and lightly edited copies.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from speed.data.dedup import shingles, words


def _h(gram: str) -> int:
    return int.from_bytes(hashlib.blake2b(gram.encode(), digest_size=8).digest(), "little")


def ngram_hashes(text: str, n: int) -> set[int]:
    w = words(text)
    return {_h(" ".join(w[i : i + n])) for i in range(len(w) - n + 1)}


@dataclass
class EvalIndex:
    """Every evaluation text, as n-gram hashes and as a MinHash LSH index."""

    ngram: int
    threshold: float
    shingle_size: int
    num_perm: int = 128
    seed: int = 0

    def __post_init__(self) -> None:
        from rensa import RMinHashLSH

        self._grams: dict[int, str] = {}
        self._lsh = RMinHashLSH(threshold=self.threshold, num_perm=self.num_perm, num_bands=16)
        self._hashes: list[object] = []
        self._tasks: list[str] = []

    def _minhash(self, texts: Sequence[str]) -> list[object]:
        from rensa import RMinHash

        return RMinHash.from_token_sets(
            [sorted(shingles(t, self.shingle_size)) or [""] for t in texts],
            self.num_perm,
            self.seed,
        )

    def add(self, task: str, texts: Iterable[str]) -> None:
        texts = [t for t in texts if t and t.strip()]
        for t in texts:
            for g in ngram_hashes(t, self.ngram):
                self._grams.setdefault(g, task)
        for mh in self._minhash(texts):
            self._lsh.insert(len(self._hashes), mh)
            self._hashes.append(mh)
            self._tasks.append(task)

    def __len__(self) -> int:
        return len(self._hashes)

    def hits(self, texts: Sequence[str]) -> list[str | None]:
        """For each text, the evaluation task it is contaminated by, or None."""
        found: list[str | None] = []
        for start in range(0, len(texts), 20_000):  # bound the memory of the MinHash objects
            chunk = texts[start : start + 20_000]
            found += self._hits(chunk, self._minhash(chunk))
        return found

    def _hits(self, texts: Sequence[str], hashes: list[object]) -> list[str | None]:
        found: list[str | None] = []
        for t, mh in zip(texts, hashes, strict=True):
            task = next(
                (self._grams[g] for g in ngram_hashes(t, self.ngram) if g in self._grams), None
            )
            if task is None:
                for key in self._lsh.query(mh):
                    if mh.jaccard(self._hashes[key]) >= self.threshold:
                        task = self._tasks[key]
                        break
            found.append(task)
        return found
