"""The summary `make run` prints: numbers read from the run folder, the noise warning of a tiny run,
the next command, and what is missing said plainly."""

from __future__ import annotations

import json
import re
from pathlib import Path

from speed.report import run_summary
from speed.report.run_summary import main, summary

ROOT = Path(__file__).resolve().parents[2]


def jsonl(path: Path, n: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps({"i": i}) + "\n" for i in range(n)))


def fake_run(run: Path) -> Path:
    """A run folder with distinct counts everywhere, so each number can be found."""
    jsonl(run / "topics.jsonl", 7)
    jsonl(run / "tasks" / "retrieval.jsonl", 3)
    jsonl(run / "tasks" / "s2s.jsonl", 2)
    jsonl(run / "prompts" / "seed.jsonl", 11)
    jsonl(run / "prompts" / "synthesis.jsonl", 13)
    jsonl(run / "teacher" / "seed.jsonl", 9)
    jsonl(run / "align" / "candidates.jsonl", 5)
    jsonl(run / "align" / "preference_pairs.jsonl", 4)
    jsonl(run / "align" / "revisions.jsonl", 6)
    for name in ("tiny/teacher", "junior", "senior", "revisor"):
        (run / "models" / name).mkdir(parents=True)
    for shard, n in (("0", 8), ("1", 10)):
        jsonl(run / "synth" / "raw" / "senior" / f"{shard}.jsonl", n)
        jsonl(run / "synth" / "revised" / "senior" / f"{shard}.jsonl", n - 1)
    (run / "corpus").mkdir()
    (run / "corpus" / "speed.stats.json").write_text(json.dumps({"in": 17, "out": 15}))
    (run / "corpus" / "teacher_only.stats.json").write_text(json.dumps({"in": 12, "out": 12}))
    for variant in ("speed", "speed@0.5"):
        (run / "embedding" / variant).mkdir(parents=True)
    (run / "eval").mkdir()
    (run / "eval" / "summary.csv").write_text(
        "variant,task,category,metric,score\n"
        "base,SyntheticSTS,STS,cosine_spearman,40.0\n"
        "base,average,STS,mean main score,40.0\n"
        "base,average,all,mean main score,41.26\n"
        "speed,average,all,mean main score,38.5\n"
    )
    (run / "report").mkdir()
    total = {"calls": 321, "paid_calls": 300, "cached_calls": 21, "usd": 1.5}
    (run / "report" / "cost.json").write_text(json.dumps({"total": total}))
    for name in ("data_card.md", "scores.png", "cost_per_stage.png"):
        (run / "report" / name).write_text("x")
    return run


def test_summary_names_the_numbers_in_the_folder(tmp_path):
    text = summary(fake_run(tmp_path / "results" / "tiny"))
    lines = {line.split()[0]: line for line in text.splitlines()[2:14]}
    assert "7 topics" in lines["topics"]
    assert "retrieval 3, s2s 2" in lines["tasks"]
    assert "seed 11, synthesis 13" in lines["prompts"]
    assert "9 examples" in lines["seed"]
    assert "321 (300 paid, 21 cached, $1.50)" in lines["teacher"]
    assert "5 candidate lists, 4 pairs, 6 revisions" in lines["alignment"]
    assert "junior, senior, revisor" in lines["generators"]
    assert "raw 2 shards, 18 rows; revised 2 shards, 16 rows" in lines["synthesis"]
    assert "speed 15 of 17, teacher_only 12 of 12" in lines["corpus"]
    assert "speed, speed@0.5" in lines["embedding"]
    assert "base 41.3, speed 38.5" in lines["eval"] and "eval/summary.csv" in lines["eval"]
    assert "cost.json, data_card.md, 2 figures" in lines["report"]
    assert str(tmp_path / "results" / "tiny") in text.splitlines()[0]
    assert "random weights" in text and "noise" in text
    assert text.rstrip().endswith(run_summary.NEXT[-1])
    assert ".venv/bin/speed-plan config/quickstart.yaml" in text
    assert len(text.splitlines()) <= 25


def test_missing_files_are_named_not_fatal(tmp_path):
    run = tmp_path / "results" / "tiny"
    jsonl(run / "topics.jsonl", 7)
    text = summary(run)
    assert "7 topics" in text
    assert "examples missing" in text and "raw missing; revised missing" in text
    assert re.search(r"eval mean score\s+eval/summary.csv\s+missing", text)
    assert "random weights" not in text  # no models/tiny/: not known to be a tiny run


def test_missing_run_folder(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no config here: the default results/tiny, which is absent
    assert main([]) == 1
    out = capsys.readouterr().out
    assert "No run folder at results/tiny" in out


def test_run_folder_comes_from_the_config(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    fake_run(tmp_path / "out" / "mine")
    (tmp_path / "mine.yaml").write_text("results_dir: out\nrun: mine\n")
    assert main(["--configfile", "mine.yaml"]) == 0
    assert "7 topics" in capsys.readouterr().out


def test_next_commands_are_the_quickstart_header_s():
    header = []
    for line in (ROOT / "config" / "quickstart.yaml").read_text().splitlines():
        if not line.startswith("#"):
            break
        header.append(line.lstrip("# "))
    header_text = " ".join(header)
    for command in run_summary.NEXT:
        assert command.removeprefix(".venv/bin/") in header_text


def test_make_run_prints_the_summary():
    recipe = (ROOT / "Makefile").read_text().split("\nrun:", 1)[1].split("\n\n", 1)[0]
    assert "snakemake --cores $(CORES)" in recipe
    assert "-m speed.report.run_summary" in recipe.split("snakemake --cores", 1)[1]
