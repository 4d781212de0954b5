"""Stage 1 (Topics): truncation, the built-in tree, the streaming ODP parser, sampling."""

from __future__ import annotations

import gzip
import logging
import shutil
import tracemalloc
from pathlib import Path

import pytest

from speed.topics import (
    builtin_paths,
    iter_odp_rdf,
    load_topic_source,
    read_path_file,
    select_topics,
    truncate_path,
)

TOP_LEVELS = {
    "Arts", "Business", "Computers", "Games", "Health", "Home", "News", "Recreation",
    "Reference", "Science", "Shopping", "Society", "Sports", "Kids_and_Teens",
}  # fmt: skip

RDF_HEAD = (
    '<?xml version="1.0" encoding="UTF-8"?>\n'
    '<RDF xmlns:r="http://www.w3.org/TR/RDF/" xmlns:d="http://purl.org/dc/elements/1.0/" '
    'xmlns="http://dmoz.org/rdf/">\n'
)

FIXTURE = (
    RDF_HEAD
    + """<!-- Generated at 2017-03-12 00:00:01 EST from Open Directory Project -->
<Topic r:id="Top">
  <catid>1</catid>
  <d:Title>Top</d:Title>
  <narrow r:resource="Top/Arts"/>
  <narrow r:resource="Top/Adult"/>
  <narrow r:resource="Top/World"/>
</Topic>
<Topic r:id="Top/Arts">
  <catid>2</catid>
  <d:Title>Arts</d:Title>
  <d:Description>Arts &amp; culture</d:Description>
  <narrow r:resource="Top/Arts/Movies"/>
</Topic>
<Topic r:id="Top/Arts/Movies">
  <catid>3</catid>
  <d:Title>Movies</d:Title>
  <lastUpdate>2016-12-01 10:20:30</lastUpdate>
  <narrow r:resource="Top/Arts/Movies/Genres"/>
  <symbolic r:resource="Film:Top/Arts/Movies"/>
</Topic>
<Alias r:id="Top/Arts/Movies/Films:Movies">
  <d:Title>Films</d:Title>
  <Target r:resource="Top/Arts/Movies"/>
</Alias>
<Topic r:id="Top/Arts/Movies/Genres/Film_Noir/Directors/Hollywood">
  <catid>4</catid>
  <d:Title>Hollywood</d:Title>
</Topic>
<Topic r:id="Top/Arts/Music/Composition/Composers/Dvořák">
  <catid>5</catid>
  <d:Title>Dvořák</d:Title>
</Topic>
<Topic r:id="Top/Adult/Arts">
  <catid>6</catid>
  <d:Title>Arts</d:Title>
</Topic>
<Topic r:id="Top/World/Deutsch/Kunst/Bühnenkunst">
  <catid>7</catid>
  <d:Title>Bühnenkunst</d:Title>
</Topic>
<Topic r:id="Top/World/Français/Arts/Cinéma">
  <catid>8</catid>
  <d:Title>Cinéma</d:Title>
  <altlang r:resource="English:Top/Arts/Movies"/>
</Topic>
<Topic r:id="Top/World/日本語/アート">
  <catid>9</catid>
  <d:Title>アート</d:Title>
</Topic>
</RDF>
"""
)

EXPECTED = [
    "Arts",
    "Arts/Movies",
    "Arts/Movies/Genres/Film_Noir/Directors/Hollywood",
    "Arts/Music/Composition/Composers/Dvořák",
    "Adult/Arts",
    "World/Deutsch/Kunst/Bühnenkunst",
    "World/Français/Arts/Cinéma",
    "World/日本語/アート",
]


@pytest.fixture
def rdf(tmp_path: Path) -> Path:
    p = tmp_path / "structure.rdf.u8"
    p.write_text(FIXTURE, encoding="utf-8")
    return p


# -- truncation ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("Arts", "Arts"),
        ("Arts/Movies/Genres/Film_Noir", "Arts/Movies/Genres/Film_Noir"),
        ("Kids_and_Teens/Arts/Drawing", "Kids_and_Teens/Arts/Drawing"),
        ("A/B/C/D/E", "A/B/D/E"),
        ("A/B/C/D/E/F", "A/B/E/F"),
        (
            "Science/Biology/Ecology/Aquatic_Ecology/Wetlands/Mangroves/Roots",
            "Science/Biology/Mangroves/Roots",
        ),
        ("/Arts//Movies/ ", "Arts/Movies"),
        (" A / B /C//D/ E /", "A/B/D/E"),
        ("", ""),
    ],
)
def test_truncate_default(path: str, expected: str) -> None:
    assert truncate_path(path) == expected


def test_truncate_other_depths() -> None:
    assert truncate_path("A/B/C/D/E/F/G", max_depth=5) == "A/B/E/F/G"
    assert truncate_path("A/B/C/D/E/F/G", max_depth=3) == "A/F/G"
    assert truncate_path("A/B/C/D/E/F/G", max_depth=7) == "A/B/C/D/E/F/G"
    assert truncate_path("A/B/C", max_depth=1) == "C"
    with pytest.raises(ValueError):
        truncate_path("A/B", max_depth=0)


# -- built-in tree -------------------------------------------------------------------------------


def test_builtin_tree() -> None:
    paths = builtin_paths()
    assert len(paths) == len(set(paths)) >= 300
    tops = [p.split("/")[0] for p in paths]
    assert set(tops) == TOP_LEVELS
    assert all(tops.count(t) >= 18 for t in TOP_LEVELS)
    depths = [len(p.split("/")) for p in paths]
    assert min(depths) >= 2 and max(depths) <= 7
    assert sum(d > 4 for d in depths) >= 40
    assert all(p == truncate_path(p, 99) and not p.startswith("Top") for p in paths)
    assert len({truncate_path(p) for p in paths}) >= 300


# -- path files ----------------------------------------------------------------------------------


def test_read_path_file(tmp_path: Path) -> None:
    p = tmp_path / "paths.txt"
    p.write_text("# my topics\n\nTop/Arts/Movies\n  Science/Math  \nTop\n# Top/Games\n", "utf-8")
    assert read_path_file(p) == ["Arts/Movies", "Science/Math"]


# -- ODP RDF parser ------------------------------------------------------------------------------


def test_odp_rdf(rdf: Path) -> None:
    assert list(iter_odp_rdf(rdf)) == EXPECTED


def test_odp_rdf_gzip(rdf: Path, tmp_path: Path) -> None:
    gz = tmp_path / "structure.rdf.u8.gz"
    with open(rdf, "rb") as src, gzip.open(gz, "wb") as dst:
        shutil.copyfileobj(src, dst)
    assert list(iter_odp_rdf(gz)) == EXPECTED
    renamed = tmp_path / "dump.rdf"  # detected by content, not suffix
    shutil.copy(gz, renamed)
    assert list(iter_odp_rdf(renamed)) == EXPECTED


def test_odp_rdf_malformed(tmp_path: Path) -> None:
    bad = tmp_path / "bad.rdf"
    bad.write_text(RDF_HEAD + '<Topic r:id="Top/Arts">\n<catid>2</Topic>\n</RDF>\n', "utf-8")
    with pytest.raises(ValueError, match=r"bad\.rdf.*line 4"):
        list(iter_odp_rdf(bad))
    empty = tmp_path / "empty.rdf"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match=r"empty\.rdf.*line 1"):
        list(iter_odp_rdf(empty))
    truncated = tmp_path / "cut.rdf.gz"
    truncated.write_bytes(gzip.compress(FIXTURE.encode())[:200])
    with pytest.raises(ValueError, match=r"cut\.rdf\.gz"):
        list(iter_odp_rdf(truncated))


def test_odp_rdf_streams(tmp_path: Path) -> None:
    # 200k one-child Topics (15 MB). Measured peaks: this parser ~0.3 MiB; one that clears Topics
    # but leaves them attached to the root ~15 MiB; no clearing at all ~100 MiB. Hence 8 MiB.
    # Topics carry one child only: tracemalloc slows every allocation, and the test must stay fast.
    n = 200_000
    big = tmp_path / "big.rdf.u8"
    with open(big, "w", encoding="utf-8") as f:
        f.write(RDF_HEAD)
        f.writelines(
            f'<Topic r:id="Top/Science/Field_{i % 97}/Sub_{i}"><catid>{i}</catid></Topic>\n'
            for i in range(n)
        )
        f.write("</RDF>\n")
    tracemalloc.start()
    try:
        count, last = 0, ""
        for topic in iter_odp_rdf(big):
            count, last = count + 1, topic
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert count == n and last == f"Science/Field_{(n - 1) % 97}/Sub_{n - 1}"
    assert peak < 8 * 2**20, f"peak {peak / 2**20:.1f} MiB: the parser is not streaming"


# -- sources -------------------------------------------------------------------------------------


def test_load_topic_source(rdf: Path, tmp_path: Path) -> None:
    assert list(load_topic_source("builtin", None)) == builtin_paths()
    assert list(load_topic_source("odp_rdf", str(rdf))) == EXPECTED
    p = tmp_path / "p.txt"
    p.write_text("Top/Arts/Movies\n", "utf-8")
    assert list(load_topic_source("file", str(p))) == ["Arts/Movies"]
    with pytest.raises(ValueError, match="needs a path"):
        load_topic_source("file", None)
    with pytest.raises(FileNotFoundError, match="nope"):
        load_topic_source("odp_rdf", str(tmp_path / "nope.rdf"))
    with pytest.raises(ValueError, match="unknown topic source 'dmoz'"):
        load_topic_source("dmoz", None)


# -- selection -----------------------------------------------------------------------------------


def test_select_include_exclude(rdf: Path) -> None:
    paths = list(iter_odp_rdf(rdf))
    got = select_topics(paths, 100, seed=0, exclude=["Adult", "World"])
    assert {r["path"] for r in got} == {
        "Arts", "Arts/Movies", "Arts/Movies/Directors/Hollywood", "Arts/Music/Composers/Dvořák",
    }  # fmt: skip
    got = select_topics(paths, 100, seed=0, include=["World"])
    assert {r["path"] for r in got} == {
        "World/Deutsch/Kunst/Bühnenkunst", "World/Français/Arts/Cinéma", "World/日本語/アート",
    }  # fmt: skip
    got = select_topics(paths, 100, seed=0, include=["World", "Arts"], exclude=["World"])
    assert {r["path"].split("/")[0] for r in got} == {"Arts"}
    with pytest.raises(ValueError, match="no topics left"):
        select_topics(paths, 5, seed=0, include=["Sports"])
    with pytest.raises(ValueError, match="no topics left"):
        select_topics([], 5, seed=0)


def test_select_records_and_dedup() -> None:
    paths = ["Top/A/B/X/Y/C/D", "A/B/Z/C/D", "A/B/C/D", "A/B", " A / B ", "E/F/G/H/I"]
    got = select_topics(paths, 10, seed=1)
    by_path = {r["path"]: r for r in got}
    assert set(by_path) == {"A/B/C/D", "A/B", "E/F/H/I"}
    assert by_path["A/B/C/D"]["original"] == "A/B/X/Y/C/D"  # first occurrence wins
    assert by_path["E/F/H/I"] == {**by_path["E/F/H/I"], "original": "E/F/G/H/I", "depth": 4}
    assert by_path["A/B"]["depth"] == 2
    assert [r["id"] for r in got] == ["topic-00000", "topic-00001", "topic-00002"]
    assert set(got[0]) == {"id", "path", "original", "depth"}


def test_select_deterministic() -> None:
    paths = builtin_paths()
    a = select_topics(paths, 50, seed=7)
    assert a == select_topics(paths, 50, seed=7)
    assert a == select_topics(list(reversed(paths)), 50, seed=7)  # input order does not matter
    assert a != select_topics(paths, 50, seed=8)
    assert len(a) == 50 and len({r["path"] for r in a}) == 50
    assert select_topics(paths, 50, seed=7, max_depth=5) != a


def test_select_more_than_available(caplog: pytest.LogCaptureFixture) -> None:
    paths = [f"Arts/Topic_{i}" for i in range(5)]
    with caplog.at_level(logging.WARNING, logger="speed.topics"):
        got = select_topics(paths, 50, seed=3)
    assert sorted(r["path"] for r in got) == sorted(paths)
    assert "only 5 distinct" in caplog.text
    assert [r["id"] for r in got] == [f"topic-{i:05d}" for i in range(5)]
    with pytest.raises(ValueError):
        select_topics(paths, 0, seed=3)
