"""Where tests find the offline MTEB test sets: one setting, `SPEED_EVAL_DATA`.

It names a folder holding the sets below in the layouts of docs/eval_layouts.md; unset, it
defaults to `../shared/eval-data` beside the repository when that folder exists. Tests that need
the sets take the `eval_data` fixture (tests/conftest.py): without them they skip with the reason
below, or fail where `SPEED_EVAL_DATA_REQUIRED=1` (CI, where the sets must be present)."""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SETS = ("STSBenchmark", "SciFact", "Banking77Classification")
HOW = (
    "set SPEED_EVAL_DATA to a folder holding {sets} in the layouts of docs/eval_layouts.md "
    "(the MTEB test sets as JSONL/BEIR files), or evaluate `mteb:` tasks where the hub is reachable"
)


def eval_data_dir() -> Path:
    setting = os.environ.get("SPEED_EVAL_DATA")
    return Path(setting).resolve() if setting else ROOT.parent / "shared" / "eval-data"


def missing_sets(root: Path) -> list[str]:
    return [name for name in SETS if not (root / name).is_dir()]


def unavailable_reason(root: Path) -> str | None:
    """None when every set is there, else why the tests that need them cannot run."""
    missing = missing_sets(root)
    if not missing:
        return None
    return f"offline MTEB test sets {missing} not found in {root}: " + HOW.format(
        sets=", ".join(SETS)
    )
