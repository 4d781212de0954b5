"""Tiny evaluation folders in each local layout (docs/eval_layouts.md), built by the tests
themselves so layout and decontamination mechanisms run without the real MTEB sets."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

ANIMALS = [
    "The cat curled up on the sofa and purred.",
    "A dog barked at the mail carrier all morning.",
    "The horse galloped across the green pasture.",
    "Two parrots squawked loudly in their cage.",
]
CODE = [
    "The Python function raised a KeyError on missing input.",
    "Compile the C++ project with optimisations turned on.",
    "The SQL query joins the orders table with customers.",
    "A segmentation fault crashed the program at startup.",
]
FOOD = [
    "Simmer the tomato sauce with garlic for twenty minutes.",
    "Knead the bread dough until it is smooth and elastic.",
    "Whisk the eggs and sugar before folding in the flour.",
    "Grill the salmon fillets with lemon and fresh dill.",
]


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def sts_folder(d: Path) -> Path:
    write_jsonl(
        d / "test.jsonl",
        [
            {
                "sentence1": ANIMALS[0],
                "sentence2": "A cat purred while lying on a couch.",
                "score": 4.8,
            },
            {
                "sentence1": ANIMALS[1],
                "sentence2": "The dog kept barking at the postman.",
                "score": 4.5,
            },
            {
                "sentence1": CODE[0],
                "sentence2": "A Python function failed with KeyError.",
                "score": 4.0,
            },
            {"sentence1": FOOD[0], "sentence2": ANIMALS[2], "score": 0.0},
            {"sentence1": CODE[1], "sentence2": FOOD[1], "score": 0.2},
            {"sentence1": ANIMALS[3], "sentence2": "Birds make noise.", "score": 2.5},
        ],
    )
    return d


def pair_folder(d: Path) -> Path:
    rows = [
        {"sentence1": ANIMALS[0], "sentence2": "A cat purred while lying on a couch.", "label": 1},
        {
            "sentence1": CODE[0],
            "sentence2": "A Python function failed with a KeyError.",
            "label": 1,
        },
        {"sentence1": FOOD[1], "sentence2": "Work the dough until it becomes smooth.", "label": 1},
        {"sentence1": ANIMALS[1], "sentence2": FOOD[3], "label": 0},
        {"sentence1": CODE[2], "sentence2": ANIMALS[2], "label": 0},
        {"sentence1": FOOD[0], "sentence2": CODE[3], "label": 0},
    ]
    write_jsonl(d / "test.jsonl", rows)
    return d


def rerank_folder(d: Path) -> Path:
    def row(query: str, pos: str, neg: list[str]) -> dict[str, Any]:
        return {"query": query, "positive": [pos], "negative": neg}

    rows = [
        row("How do I fix a KeyError in Python?", CODE[0], ANIMALS[:2] + FOOD[:2]),
        row("How long should tomato sauce cook?", FOOD[0], CODE[:2] + ANIMALS[2:]),
        row("Why is my dog barking?", ANIMALS[1], FOOD[2:] + CODE[2:]),
        row("dropped: no negatives", FOOD[3], []),
    ]
    write_jsonl(d / "test.jsonl", rows)
    return d


def cluster_folder(d: Path) -> Path:
    groups = {"animals": ANIMALS, "code": CODE, "food": FOOD}
    write_jsonl(d / "test.jsonl", [{"text": t, "label": g} for g, ts in groups.items() for t in ts])
    return d


def classification_folder(d: Path) -> Path:
    rows = [{"text": t, "label": i} for i, ts in enumerate([ANIMALS, CODE]) for t in ts]
    write_jsonl(d / "train.jsonl", rows)
    write_jsonl(d / "test.jsonl", rows)
    return d


def retrieval_folder(d: Path) -> Path:
    write_jsonl(
        d / "corpus.jsonl",
        [{"_id": f"d{i}", "title": "", "text": t} for i, t in enumerate(CODE + FOOD)],
    )
    write_jsonl(
        d / "queries.jsonl",
        [{"_id": "q1", "text": "python error"}, {"_id": "q9", "text": "unused"}],
    )
    (d / "qrels").mkdir()
    (d / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td0\t1\n")
    return d


def task_result_file(path: Path, task: str, category: str, metric: str, score: float) -> str:
    """A per-task evaluation file (speed.eval.results) as rule evaluate writes it, for report
    tests that need no evaluation: one test split, main score `score` / 100."""
    doc = {
        "dataset_revision": "0",
        "task_name": task,
        "mteb_version": "2.26.24",
        "scores": {
            "test": [{"main_score": score / 100, "hf_subset": "default", "languages": ["eng-Latn"]}]
        },
        "evaluation_time": 1.0,
        "kg_co2_emissions": None,
        "date": None,
        "evaluation_phases": None,
        "model_name": "speed/test",
        "model_revision": "0",
        "task_type": category,
        "main_score_name": metric,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc))
    return str(path)
