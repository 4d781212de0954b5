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
from typing import Any

from speed.data.dedup import CHUNK, minhashes, word_shingles, words


@dataclass
class EvalIndex:
    """Every evaluation text, as a set of word n-grams and as a MinHash LSH index."""

    ngram: int
    threshold: float
    shingle_size: int
    num_perm: int = 128
    seed: int = 0

    def __post_init__(self) -> None:
        from rensa import RMinHashLSH

        # hash of an n-gram -> the first task that has it (64 bits: against a million
        # evaluation n-grams, a false match is about 1e-13 likely per n-gram looked up)
        self._grams: dict[int, str] = {}
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
        batch: list[list[str]] = []
        for text in texts:
            if not (text and text.strip()):
                continue
            w = words(text)
            for h in self._ngram_keys(w):
                self._grams.setdefault(h, task)
            batch.append(w)
            if len(batch) == CHUNK:
                self._insert(task, batch)
                batch = []
        self._insert(task, batch)

    def _insert(self, task: str, word_lists: Sequence[Sequence[str]]) -> None:
        for mh in self._minhash(word_lists):
            self._lsh.insert(len(self._hashes), mh)
            self._hashes.append(mh)
            self._tasks.append(task)

    def __len__(self) -> int:
        return len(self._hashes)

    def hits(self, texts: Sequence[str]) -> list[str | None]:
        """For each text, the evaluation task it is contaminated by, or None."""
        return self.hits_words([words(t) for t in texts])

    def hits_words(self, word_lists: Sequence[Sequence[str]]) -> list[str | None]:
        """`hits` for texts given as their words (`dedup.words`): the first of the text's
        n-grams (in text order) that an evaluation text has, else the first MinHash match."""
        found: list[str | None] = []
        for w, mh in zip(word_lists, self._minhash(word_lists), strict=True):
            task = None
            if not self._grams.keys().isdisjoint(self._ngram_keys(w)):
                task = next(self._grams[h] for h in self._ngram_keys(w) if h in self._grams)
            if task is None:
                for key in self._lsh.query(mh):
                    if mh.jaccard(self._hashes[key]) >= self.threshold:
                        task = self._tasks[key]
                        break
            found.append(task)
        return found
