"""Local eval layouts: detection, naming, instructions; tiny tasks scored with all-MiniLM-L6-v2."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from speed.eval.instructions import (
    CATEGORY_DEFAULTS,
    TASK_INSTRUCTIONS,
    query_instruction,
    query_prefix,
)
from speed.eval.local_tasks import describe, detect_type, local_task
from speed.prompts.families import QUERY_FORMAT
from tests.eval_folders import (
    ANIMALS,
    CODE,
    classification_folder,
    cluster_folder,
    pair_folder,
    rerank_folder,
    retrieval_folder,
    sts_folder,
    write_jsonl,
)


def test_detect_type(tmp_path: Path) -> None:
    assert detect_type(sts_folder(tmp_path / "a")) == "STS"
    assert detect_type(pair_folder(tmp_path / "b")) == "PairClassification"
    assert detect_type(rerank_folder(tmp_path / "c")) == "Reranking"
    assert detect_type(cluster_folder(tmp_path / "d")) == "Clustering"
    assert detect_type(classification_folder(tmp_path / "e")) == "Classification"
    assert detect_type(retrieval_folder(tmp_path / "f")) == "Retrieval"
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no eval layout"):
        detect_type(tmp_path / "empty")


def test_language_subset_takes_parent_name_and_mteb_protocol(tmp_path: Path) -> None:
    spec = describe(classification_folder(tmp_path / "AmazonCounterfactualClassification" / "en"))
    assert (spec.name, spec.subset, spec.lang) == (
        "AmazonCounterfactualClassification",
        "en",
        "eng-Latn",
    )
    assert spec.options["samples_per_label"] == 32  # mteb's setting for this task
    assert spec.main_score == "accuracy"
    # also mteb's own subset names with a suffix
    assert (
        describe(
            classification_folder(tmp_path / "AmazonCounterfactualClassification" / "en-ext")
        ).subset
        == "en-ext"
    )
    # a short lowercase task folder is not a language subset
    spec = describe(retrieval_folder(tmp_path / "beir" / "nq"))
    assert (spec.name, spec.subset, spec.eval_split) == ("nq", "default", "test")


def test_known_name_gets_mteb_protocol_unknown_gets_defaults(tmp_path: Path) -> None:
    spec = describe(classification_folder(tmp_path / "Banking77Classification"))
    assert spec.options == {"samples_per_label": 8, "n_experiments": 10}
    spec = describe(classification_folder(tmp_path / "MyIntents"))
    assert (spec.name, spec.subset, spec.options) == ("MyIntents", "default", {})
    assert describe(sts_folder(tmp_path / "x")).main_score == "cosine_spearman"
    assert describe(pair_folder(tmp_path / "y")).main_score == "max_ap"
    assert describe(rerank_folder(tmp_path / "z")).main_score == "map_at_1000"


def test_task_json_overrides(tmp_path: Path) -> None:
    d = sts_folder(tmp_path / "folder")
    (d / "task.json").write_text(
        json.dumps({"name": "Renamed", "type": "STS", "main_score": "pearson", "max_score": 10})
    )
    spec = describe(d)
    assert (spec.name, spec.main_score, spec.options["max_score"]) == ("Renamed", "pearson", 10)
    task = local_task(d)
    assert task.metadata.name == "Renamed" and task.max_score == 10


def test_local_task_metadata_and_data(tmp_path: Path) -> None:
    task = local_task(retrieval_folder(tmp_path / "tiny"))
    assert task.metadata.type == "Retrieval" and task.metadata.main_score == "ndcg_at_10"
    assert len(task.metadata.revision) == 16  # folder content hash
    task.load_data()
    split = task.dataset["default"]["test"]
    assert split["queries"]["id"] == ["q1"]  # only queries with qrels
    assert split["relevant_docs"] == {"q1": {"d0": 1}}
    # clustering in mteb's own layout: one cluster set per row
    write_jsonl(
        tmp_path / "sets" / "test.jsonl",
        [{"sentences": ANIMALS + CODE, "labels": [0] * 4 + [1] * 4}] * 2,
    )
    clustering = local_task(tmp_path / "sets")
    clustering.load_data()
    assert clustering.dataset["default"]["test"].num_rows == 2
    sub = local_task(sts_folder(tmp_path / "STS22" / "en"))
    assert sub.metadata.hf_subsets == ["en"] and sub.metadata.name == "STS22"


def test_instruction_table_covers_mteb_english() -> None:
    import mteb

    v1 = {t.metadata.name for t in mteb.get_benchmark("MTEB(eng, v1)").tasks}
    v2 = {t.metadata.name for t in mteb.get_benchmark("MTEB(eng, v2)").tasks}
    cqa = {t.metadata.name for t in mteb.get_tasks(task_types=["Retrieval"], languages=["eng"])}
    cqa = {n for n in cqa if n.startswith("CQADupstack") and n != "CQADupstackRetrieval"}
    assert len(v1) == 56 and len(v2) == 41 and len(cqa) == 12
    assert not (v1 | v2 | cqa) - set(TASK_INSTRUCTIONS)
    assert all(v and "\n" not in v and len(v) < 120 for v in TASK_INSTRUCTIONS.values())
    assert query_instruction("STS12", "STS") == "Retrieve semantically similar text."
    assert query_instruction("SomethingNew", "STS") == CATEGORY_DEFAULTS["STS"]
    assert query_instruction("SomethingNew", "Retrieval") == CATEGORY_DEFAULTS["Retrieval"]
    assert query_prefix("SciFact", "Retrieval") == (
        f"Instruct: {TASK_INSTRUCTIONS['SciFact']}\nQuery: "
    )


@pytest.fixture(scope="module")
def tiny_scores(tmp_path_factory: pytest.TempPathFactory) -> dict[str, float]:
    from speed.eval.run import evaluate_model

    root = tmp_path_factory.mktemp("tiny_eval")
    specs = [
        f"local:{pair_folder(root / 'TinyPairs')}",
        f"local:{rerank_folder(root / 'TinyRerank')}",
        f"local:{cluster_folder(root / 'TinyClusters')}",
    ]
    df = evaluate_model("minilm", specs)
    assert df.columns == ["task", "category", "metric", "score"]
    assert df["category"].to_list() == ["PairClassification", "Reranking", "Clustering"]
    return dict(zip(df["task"], df["score"], strict=True))


def test_tiny_tasks_score_sensibly(tiny_scores: dict[str, float]) -> None:
    # separable toy data: a working pipeline scores near the top of each metric
    assert tiny_scores["TinyPairs"] > 95
    assert tiny_scores["TinyRerank"] > 95
    assert tiny_scores["TinyClusters"] > 50  # 12 items, k-means: well above chance (~15)


def test_instructions_reach_queries_only(tmp_path: Path) -> None:
    import mteb
    from sentence_transformers import SentenceTransformer

    from speed.eval.run import _encoder, _has_trained_prompts, resolve_model_path

    st = SentenceTransformer(resolve_model_path("minilm"))
    assert not _has_trained_prompts(st)  # saved without prompts: no instructions by default
    seen: list[tuple[str, str | None]] = []
    for fn in ("encode", "encode_query", "encode_document"):
        orig = getattr(st, fn)

        def rec(*a: Any, _fn: str = fn, _orig: Any = orig, **kw: Any) -> Any:
            seen.append((_fn, kw.get("prompt")))
            return _orig(*a, **kw)

        setattr(st, fn, rec)
    enc = _encoder(st, "local/x", "rev", instructions=True, per_query={})
    tasks = [
        local_task(sts_folder(tmp_path / "STSBenchmark")),
        local_task(retrieval_folder(tmp_path / "SciFact")),
    ]
    mteb.evaluate(enc, tasks, cache=None, show_progress_bar=False, co2_tracker=False)
    sts, sci = query_prefix("STSBenchmark", "STS"), query_prefix("SciFact", "Retrieval")
    assert ("encode", sts) in seen  # both sides of a symmetric task
    assert ("encode_query", sci) in seen
    assert [p for f, p in seen if f == "encode_document"] == [None]  # documents: no instruction


@pytest.mark.parametrize("query_format", [QUERY_FORMAT, "Task: {instruction} | {query}"])
def test_queries_with_their_own_instruction_get_it(tmp_path: Path, query_format: str) -> None:
    """The held-out synthetic retrieval task mixes tasks: each query keeps its own instruction,
    written in the model's own query format."""
    import mteb
    from sentence_transformers import SentenceTransformer

    from speed.eval.run import _encoder, resolve_model_path

    d = retrieval_folder(tmp_path / "SyntheticRetrieval")
    queries = [json.loads(x) for x in (d / "queries.jsonl").read_text().splitlines()]
    for i, q in enumerate(queries):
        q["instruction"] = f"Find the passage for question {i}."
    write_jsonl(d / "queries.jsonl", queries)
    task = local_task(d)
    assert task.query_instructions == {q["text"]: q["instruction"] for q in queries}

    st = SentenceTransformer(resolve_model_path("minilm"))
    texts: list[str] = []
    orig = st.encode

    def rec(*a: Any, **kw: Any) -> Any:
        sentences = a[0] if a else kw.get("inputs", kw.get("sentences"))
        texts.extend(sentences if isinstance(sentences, list) else [sentences])
        return orig(*a, **kw)

    st.encode = rec  # type: ignore[method-assign]
    table = {task.metadata.name: task.query_instructions}
    enc = _encoder(st, "local/x", "rev", True, table, query_format)
    mteb.evaluate(enc, [task], cache=None, show_progress_bar=False, co2_tracker=False)
    q1 = queries[0]  # the one query with qrels
    assert query_format.format(instruction=q1["instruction"], query=q1["text"]) in texts


def test_a_trained_folder_is_queried_in_its_saved_format(tmp_path: Path) -> None:
    from speed.eval.run import model_identity, saved_query_format

    assert saved_query_format(tmp_path) == QUERY_FORMAT  # no speed_embedding.json: SPEED's
    own = "Task: {instruction} | {query}"
    (tmp_path / "speed_embedding.json").write_text(json.dumps({"query_format": own}))
    assert saved_query_format(tmp_path) == own
    # Another query format is another model for mteb's cache.
    ids = {
        model_identity("m", str(tmp_path), None, "a/b", "r", True, f)[1]
        for f in (own, QUERY_FORMAT)
    }
    assert len(ids) == 2
    with pytest.raises(ValueError, match="must end with"):
        query_prefix("SciFact", "Retrieval", "{query} (Instruct: {instruction})")


def test_cache_is_keyed_by_model_task_and_content(tmp_path: Path) -> None:
    from speed.eval.run import evaluate_model

    d = sts_folder(tmp_path / "TinySTS")
    first = evaluate_model("minilm", [f"local:{d}"], output_dir=tmp_path / "out")["score"][0]
    # <org>__<name>/<model revision>/<Task>/<data revision>/, mteb's cache inside
    (model,) = (tmp_path / "out").iterdir()
    assert model.name == "sentence-transformers__all-MiniLM-L6-v2"
    rows = [json.loads(x) for x in (d / "test.jsonl").read_text().splitlines()]
    for r in rows:
        r["score"] = 5 - r["score"]  # same task name, different data
    write_jsonl(d / "test.jsonl", rows)
    second = evaluate_model("minilm", [f"local:{d}"], output_dir=tmp_path / "out")["score"][0]
    assert second == pytest.approx(-first, abs=1e-6)
    (revision,) = model.iterdir()
    assert len(list((revision / "TinySTS").iterdir())) == 2  # one folder per data revision


def test_per_task_file_is_mtebs_result_with_the_model_identity(tmp_path: Path) -> None:
    """The workflow's evaluation file: mteb's loader opens it, and it says everything the
    summary needs (speed.eval.results)."""
    import mteb

    from speed.eval.results import ADDED_KEYS, read_scores, read_task_file
    from speed.stages.evaluate import evaluate_variant

    spec = f"local:{sts_folder(tmp_path / 'TinySTS')}"
    out, cache = tmp_path / "eval" / "base" / "TinySTS.json", tmp_path / "cache"
    scores = evaluate_variant("base", spec, None, "minilm", out, cache)
    result = mteb.TaskResult.from_disk(out)
    assert result.task_name == "TinySTS" and list(result.scores) == ["test"]
    doc = read_task_file(out)
    (model,) = cache.iterdir()
    (revision,) = model.iterdir()
    assert model.name == "speed__base"
    assert (doc["model_name"], doc["model_revision"]) == ("speed/base", revision.name)
    assert (doc["task_type"], doc["main_score_name"]) == ("STS", "cosine_spearman")
    assert 100 * result.get_score() == pytest.approx(scores["score"][0], abs=1e-9)
    assert read_scores([out]).to_dicts() == scores.to_dicts()
    mteb_file = next(cache.rglob("results/*/*/TinySTS.json"))
    assert json.loads(mteb_file.read_text()) == {
        k: v for k, v in doc.items() if k not in ADDED_KEYS
    }  # mteb's file, kept, plus the added keys
    assert not list(out.parent.glob(".*"))  # written under a temp name, renamed


def test_a_truncated_cache_file_is_dropped_not_trusted(tmp_path: Path, caplog) -> None:
    from speed.eval.run import evaluate_model

    spec = f"local:{sts_folder(tmp_path / 'TinySTS')}"
    cache = tmp_path / "cache"
    first = evaluate_model("minilm", [spec], output_dir=cache)
    (cached,) = cache.rglob("results/*/*/TinySTS.json")
    text = cached.read_text()
    cached.write_text(text[: len(text) // 2])  # what a kill inside a plain write leaves
    out = tmp_path / "TinySTS.json"
    with caplog.at_level("WARNING", logger="speed.eval.run"):
        again = evaluate_model("minilm", [spec], output_dir=cache, result_files=[out])
    assert "dropping the cached result" in caplog.text
    assert again.to_dicts() == first.to_dicts()
    assert json.loads(cached.read_text())["scores"]  # rewritten whole
    assert json.loads(out.read_text())["task_name"] == "TinySTS"


def test_bad_specs_fail_fast() -> None:
    from speed.eval.run import load_tasks

    with pytest.raises(ValueError, match="local:<dir> or mteb:<TaskName>"):
        load_tasks(["STSBenchmark"])
    with pytest.raises(FileNotFoundError):
        load_tasks(["local:/nonexistent/folder"])


def test_cli_mteb_task_offline_fails_clearly(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    # an empty HF home: mteb's own data cannot be there, and nothing may be downloaded
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    proc = subprocess.run(
        [str(Path(sys.executable).with_name("speed-eval")), "--model", "minilm"]
        + ["--task", "mteb:STSBenchmark", "--output", str(tmp_path / "x.csv")],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2
    assert "mteb:STSBenchmark" in proc.stderr and "local HF cache" in proc.stderr
    assert not (tmp_path / "x.csv").exists()


CONFIGS = sorted(
    set((Path(__file__).parents[2] / "config").glob("*.yaml"))
    - {Path(__file__).parents[2] / "config" / "schema.yaml"}
)


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_configured_mteb_task_has_its_own_instruction(path: Path) -> None:
    config = yaml.safe_load(path.read_text()) or {}
    tasks = (config.get("evaluation") or {}).get("tasks") or []
    missing = [t for t in tasks if t.startswith("mteb:") and t[5:] not in TASK_INSTRUCTIONS]
    assert not missing, f"{path}: add these to speed/eval/instructions.py: {missing}"
