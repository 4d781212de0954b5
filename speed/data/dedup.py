"""Near-duplicate removal with MinHash LSH (rensa) over word shingles."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

_WORD = re.compile(r"\w+", re.UNICODE)


def words(text: str) -> list[str]:
    return _WORD.findall(text.casefold())


def shingles(text: str, size: int) -> set[str]:
    """Word n-grams; a text shorter than `size` words is one shingle of all its words, so short
    texts (STS sentences, labels) still compare."""
    w = words(text)
    if len(w) <= size:
        return {" ".join(w)} if w else set()
    return {" ".join(w[i : i + size]) for i in range(len(w) - size + 1)}


def near_duplicate_flags(
    texts: Sequence[str],
    threshold: float,
    shingle_size: int,
    num_perm: int = 128,
    seed: int = 0,
) -> list[bool]:
    """True for each text that near-duplicates (estimated Jaccard >= threshold) an earlier
    kept text; the first of each group is kept, so the result depends only on input order."""
    from rensa import RMinHash, RMinHashDeduplicator

    dedup = RMinHashDeduplicator(threshold=threshold, num_perm=num_perm, use_lsh=True, seed=seed)
    flags = []
    for start in range(0, len(texts), 50_000):  # bound the memory of the MinHash objects
        chunk = texts[start : start + 50_000]
        hashes = RMinHash.from_token_sets(
            [sorted(shingles(t, shingle_size)) or [""] for t in chunk], num_perm, seed
        )
        for i, mh in enumerate(hashes):
            flags.append(not dedup.add(str(start + i), mh))
    return flags


def exact_keys(texts: Iterable[str]) -> list[str]:
    """Whitespace- and case-insensitive identity, for exact duplicates before MinHash."""
    return [" ".join(words(t)) for t in texts]
