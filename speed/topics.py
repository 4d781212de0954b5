"""Stage 1 (Topics): ODP-style category paths, truncated and sampled, that condition the teacher.

Topic conditioning keeps the teacher from drifting to a few favourite domains (SPEED.md, stage 1).
Paths come from a built-in list, a plain file of paths, or an ODP RDF dump (`structure.rdf.u8`,
several GB uncompressed, hence the streaming parser). Paths deeper than `max_depth` lose their
middle components: the top levels say which domain, the last levels say what is specific.
"""

from __future__ import annotations

import gzip
import logging
import os
import random
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Iterator, Sequence
from importlib import resources
from typing import IO, Any

log = logging.getLogger("speed.topics")

SOURCES = ("builtin", "file", "odp_rdf")
_RDF_ID = "{http://www.w3.org/TR/RDF/}id"
_TOPIC_TAGS = frozenset({"{http://dmoz.org/rdf/}Topic", "Topic"})  # tolerate a dump without xmlns
_GZIP_MAGIC = b"\x1f\x8b"


def _parts(path: str) -> list[str]:
    return [p.strip() for p in path.split("/") if p.strip()]


def truncate_path(path: str, max_depth: int = 4) -> str:
    """Keep the first max_depth//2 and the last max_depth - max_depth//2 components if deeper."""
    if max_depth < 1:
        raise ValueError(f"max_depth must be >= 1, got {max_depth}")
    parts = _parts(path)
    if len(parts) > max_depth:
        head = max_depth // 2
        parts = parts[:head] + parts[len(parts) - (max_depth - head) :]
    return "/".join(parts)


def _strip_top(path: str) -> str:
    # ODP ids all start with the root "Top"; it carries no meaning for a prompt.
    path = path.strip()
    if path == "Top":
        return ""
    return path[4:] if path.startswith("Top/") else path


def _parse_lines(lines: Iterable[str]) -> list[str]:
    out = []
    for line in lines:
        line = line.strip()
        if line and not line.startswith("#") and (path := _strip_top(line)):
            out.append(path)
    return out


def builtin_paths() -> list[str]:
    """The packaged list (speed/assets/topics.txt), for runs without an ODP dump."""
    text = resources.files("speed.assets").joinpath("topics.txt").read_text(encoding="utf-8")
    return _parse_lines(text.splitlines())


def read_path_file(path: str | os.PathLike[str]) -> list[str]:
    """One slash-separated path per line; blanks and `#` comments skipped; `Top/` removed."""
    # utf-8-sig: files saved by Windows editors often start with a BOM.
    with open(path, encoding="utf-8-sig") as f:
        return _parse_lines(f)


def _open_binary(path: str | os.PathLike[str]) -> IO[bytes]:
    # Sniff the gzip magic instead of trusting the suffix: dumps get renamed.
    with open(path, "rb") as f:
        gz = f.read(2) == _GZIP_MAGIC
    return gzip.open(path, "rb") if gz else open(path, "rb")  # noqa: SIM115 (caller closes)


def iter_odp_rdf(path: str | os.PathLike[str]) -> Iterator[str]:
    """Yield `<Topic r:id=...>` ids from an ODP RDF dump (plain or gzip), without `Top/`.

    Streaming: each finished Topic is cleared and the root's children are detached, so memory
    stays flat on a multi-GB dump. Aliases and other top-level elements are skipped (and freed
    at the next Topic). The loop body is kept minimal: it runs for millions of events.
    """
    name = os.fspath(path)
    with _open_binary(path) as f:
        try:
            events = ET.iterparse(f, events=("start", "end"))
            _, root = next(events)  # the first event is the root's start: keep it to detach from
            for event, elem in events:
                if event == "end" and elem.tag in _TOPIC_TAGS:
                    if topic := _strip_top(elem.get(_RDF_ID) or elem.get("id") or ""):
                        yield topic
                    elem.clear()
                    del root[:]  # the root would otherwise keep every (emptied) Topic alive
        except ET.ParseError as e:
            line, col = e.position
            raise ValueError(f"{name}: malformed ODP RDF at line {line}, column {col}: {e}") from e
        except (EOFError, gzip.BadGzipFile) as e:
            raise ValueError(f"{name}: corrupt or truncated gzip stream: {e}") from e


def load_topic_source(source: str, path: str | None) -> Iterator[str]:
    """Paths from `builtin`, `file` (read_path_file) or `odp_rdf` (iter_odp_rdf).

    Not a generator itself, so a bad source or missing file fails at the call, not on first use.
    """
    if source == "builtin":
        return iter(builtin_paths())
    if source not in SOURCES:
        raise ValueError(f"unknown topic source {source!r}; expected one of {', '.join(SOURCES)}")
    if not path:
        raise ValueError(f"topic source {source!r} needs a path (topics.path in the config)")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"topic source {source!r}: no such file {path!r}")
    return iter(read_path_file(path)) if source == "file" else iter_odp_rdf(path)


def select_topics(
    paths: Iterable[str],
    n: int,
    seed: int,
    max_depth: int = 4,
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
) -> list[dict[str, Any]]:
    """Filter by top level, truncate, dedup, and draw a seeded sample of `n` topic records.

    The pool is sorted before sampling so the result depends only on the set of paths (and the
    seed), not on the order a file or dump lists them in. The records keep the sample's order,
    so any prefix of the list is itself a random subset.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    inc = {p.strip("/ ") for p in include}
    exc = {p.strip("/ ") for p in exclude}
    originals: dict[str, str] = {}  # truncated -> first original path seen
    seen = 0
    for raw in paths:
        parts = _parts(_strip_top(raw))
        if not parts:
            continue
        seen += 1
        if (inc and parts[0] not in inc) or parts[0] in exc:
            continue
        originals.setdefault(truncate_path("/".join(parts), max_depth), "/".join(parts))
    if not originals:
        raise ValueError(
            f"no topics left after filtering {seen} paths "
            f"(include={sorted(inc) or 'all'}, exclude={sorted(exc) or 'none'})"
        )
    pool = sorted(originals)
    if n >= len(pool):
        log.warning("asked for %d topics but only %d distinct ones exist; using all", n, len(pool))
    chosen = random.Random(seed).sample(pool, min(n, len(pool)))
    log.info("selected %d topics from %d distinct (%d paths read)", len(chosen), len(pool), seen)
    return [
        {"id": f"topic-{i:05d}", "path": p, "original": originals[p], "depth": p.count("/") + 1}
        for i, p in enumerate(chosen)
    ]
