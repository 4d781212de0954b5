"""The documentation stands on its own: every relative link in README and docs/ resolves to a
file of this repository (a user's clone has nothing beside it)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = sorted(
    [ROOT / "README.md", *ROOT.glob("*/README.md"), *(ROOT / "docs").rglob("*.md")],
)
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def relative_links(path: Path) -> list[str]:
    targets = (m[1].split("#", 1)[0] for m in LINK.finditer(path.read_text()))
    return [t for t in targets if t and not re.match(r"^[a-z]+:", t)]


def test_the_docs_have_links_to_check():
    assert ROOT / "docs" / "architecture.md" in DOCS
    assert "docs/architecture.md" in relative_links(ROOT / "README.md")


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_links_stay_inside_the_repository(doc: Path):
    for target in relative_links(doc):
        resolved = (doc.parent / target).resolve()
        assert resolved.is_relative_to(ROOT), f"{doc.name} links outside the repo: {target}"
        assert resolved.exists(), f"{doc.name} links to a missing file: {target}"
