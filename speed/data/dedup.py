"""Duplicate removal: exact (same words, case-insensitive) and near duplicates (MinHash LSH,
rensa, over word shingles). Both are streaming filters: a text is a duplicate of an earlier
kept text, so texts can be fed in chunks and the result depends only on their order.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator, Sequence
from typing import Any

_WORD = re.compile(r"\w+", re.UNICODE)
CHUNK = 2_000  # texts whose word lists, shingles and MinHash objects are held at once


def words(text: str) -> list[str]:
    return _WORD.findall(text.casefold())


def word_shingles(w: Sequence[str], size: int) -> set[str]:
    """Word n-grams; fewer than `size` words make one shingle of all of them, so short texts
    (STS sentences, labels) still compare."""
    if len(w) <= size:
        return {" ".join(w)} if w else set()
    return set(word_ngrams(w, size))


def word_ngrams(w: Sequence[str], n: int) -> Iterator[str]:
    """The n-grams of a word sequence, in order."""
    return map(" ".join, zip(*(w[k:] for k in range(n)), strict=False))


def shingles(text: str, size: int) -> set[str]:
    return word_shingles(words(text), size)


def minhashes(shingle_sets: Sequence[set[str]], num_perm: int, seed: int) -> list[Any]:
    """One rensa RMinHash per set (an empty set hashes like the empty string)."""
    from rensa import RMinHash

    return RMinHash.from_token_sets([s or [""] for s in shingle_sets], num_perm, seed)


class ExactDuplicates:
    """Texts with the same words (case and whitespace ignored); remembers a 16-byte digest
    per distinct text, not the text."""

    def __init__(self) -> None:
        self._seen: set[bytes] = set()

    def seen(self, w: Sequence[str]) -> bool:
        """Whether these words were seen before; remembers them."""
        text = " ".join(w).encode("utf-8", "surrogatepass")
        digest = hashlib.blake2b(text, digest_size=16).digest()
        if digest in self._seen:
            return True
        self._seen.add(digest)
        return False


class NearDuplicates:
    """Estimated Jaccard >= threshold with an earlier kept text (rensa's LSH deduplicator,
    which keeps one MinHash and its band hashes per kept text, about 1.5 kB)."""

    def __init__(
        self, threshold: float, shingle_size: int, num_perm: int = 128, seed: int = 0
    ) -> None:
        from rensa import RMinHashDeduplicator

        self.shingle_size, self.num_perm, self.seed = shingle_size, num_perm, seed
        self._dedup = RMinHashDeduplicator(
            threshold=threshold, num_perm=num_perm, use_lsh=True, seed=seed
        )
        self._n = 0

    def flags(self, word_lists: Sequence[Sequence[str]]) -> list[bool]:
        """True for each text (given as its words) that near-duplicates an earlier kept one;
        the others are kept."""
        sets = [word_shingles(w, self.shingle_size) for w in word_lists]
        flags = []
        for mh in minhashes(sets, self.num_perm, self.seed):
            flags.append(not self._dedup.add(str(self._n), mh))
            self._n += 1
        return flags
