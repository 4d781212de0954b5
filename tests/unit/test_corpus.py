import json
import random

import polars as pl
import pytest

import speed.data.corpus
from speed.data.corpus import COLUMNS, assemble, build_eval_index, eval_texts
from speed.data.dedup import NearDuplicates, shingles, words

rng = random.Random(0)
VOCAB = [f"w{i}" for i in range(3000)]


def sentence(n=25):
    return " ".join(rng.choices(VOCAB, k=n))


def row(family="retrieval", **fields):
    keys = {
        "retrieval": ("user_query", "positive_document", "hard_negative_document"),
        "sts": ("S1", "S2", "S3"),
        "classification": ("input_text", "label", "misleading_label"),
        "s2s": ("input", "positive_document"),
    }[family]
    values = fields.get("values") or [sentence() for _ in keys]
    return {
        "family": family,
        "instruction": "Given a query, find documents that answer it",
        "text": json.dumps(dict(zip(keys, values, strict=True))),
        "topic": "Science/Physics",
        "topic_id": "topic-1",
        "task": "t",
        "prompt_id": f"p{rng.random()}",
        "generator": "senior",
        "revised": True,
    }


def build(rows, index=None, threshold=0.8):
    return assemble(rows, "speed", 1, 2000, threshold, 3, index)


def test_stats_add_up_and_columns_are_documented():
    rows = [row() for _ in range(20)]
    rows += [{**row(), "text": "not json"}, row(values=["same", "same", "other"])]
    frame, stats = build(rows)
    assert list(frame.columns) == list(COLUMNS)
    assert stats["in"] == stats["out"] + stats["dropped"] == 22
    assert stats["drops"]["invalid: no JSON object in output"] == 1
    assert stats["drops"]["invalid: positive equals query"] == 1
    assert frame["id"].n_unique() == frame.height == 20
    assert stats["length_words"]["query"]["p50"] == 25


def test_dedup_removes_planted_near_duplicates_and_keeps_distinct_texts():
    originals = [row() for _ in range(50)]
    planted = []
    for r in originals[:10]:
        fields = json.loads(r["text"])
        fields["user_query"] = fields["user_query"].upper()  # case and one extra word
        fields["positive_document"] += " indeed"
        planted.append({**r, "text": json.dumps(fields)})
    exact = [dict(originals[20])]
    frame, stats = build(originals + planted + exact)
    assert frame.height == 50
    assert stats["drops"]["exact duplicate"] == 1
    assert stats["drops"]["near duplicate"] == 10
    kept = set(frame["query"].to_list())
    assert {json.loads(r["text"])["user_query"] for r in originals} == kept


def test_near_duplicates_keep_first_of_each_group_across_chunks():
    a, b = sentence(40), sentence(40)
    near = NearDuplicates(0.8, 3)
    assert near.flags([words(a), words(b)]) == [False, False]
    # a later chunk is compared with what the earlier ones kept
    assert near.flags([words(a + " x"), words(sentence(40)), words(b)]) == [True, False, True]
    assert shingles("one two", 3) == {"one two"}


@pytest.fixture
def eval_dir(tmp_path):
    sts = tmp_path / "STSBenchmark"
    sts.mkdir()
    pairs = [
        {"sentence1": sentence(12), "sentence2": sentence(12), "score": 3.0} for _ in range(30)
    ]
    (sts / "test.jsonl").write_text("".join(json.dumps(p) + "\n" for p in pairs))
    ret = tmp_path / "SciFact"
    ret.mkdir()
    docs = [{"_id": str(i), "title": "T", "text": sentence(120)} for i in range(30)]
    (ret / "corpus.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
    return {"STSBenchmark": str(sts), "SciFact": str(ret)}, pairs, docs


def test_decontamination_removes_planted_copies_and_nothing_else(eval_dir):
    tasks, pairs, docs = eval_dir
    index = build_eval_index(tasks, ngram=13, threshold=0.7, shingle_size=2)
    clean = [row() for _ in range(40)]
    inside = " ".join(docs[3]["text"].split()[30:60])  # 30 words copied into a longer document
    copies = [
        row(values=[pairs[0]["sentence1"], sentence(), sentence()]),  # exact STS sentence
        row(values=[sentence(), "Intro text here. " + inside + " more words", sentence()]),
        row(values=[sentence(), sentence(), pairs[1]["sentence2"].upper() + "!"]),  # edited
        row("sts", values=[pairs[2]["sentence1"] + " too", sentence(10), sentence(10)]),
    ]
    frame, stats = build(clean + copies, index)
    assert frame.height == 40
    assert stats["drops"]["contaminated"] == 4
    assert stats["decontamination_hits"] == {"STSBenchmark": 3, "SciFact": 1}
    assert set(frame["query"].to_list()) == {json.loads(r["text"])["user_query"] for r in clean}


def test_chunks_give_the_result_of_one_pass(eval_dir, monkeypatch):
    """Duplicates and diversity span chunks: streaming in chunks of 7 rows changes nothing."""
    tasks, pairs, _docs = eval_dir
    index = build_eval_index(tasks, ngram=13, threshold=0.7, shingle_size=2)
    rows = [row(rng.choice(["retrieval", "sts", "s2s"])) for _ in range(60)]
    for r in rows[:40:3]:  # exact (case) and near (one more word) duplicates, chunks later
        fields = json.loads(r["text"])
        first, second = list(fields)[:2]
        fields[first] = fields[first].upper()
        exact = {**r, "text": json.dumps(fields)}
        fields[second] += " indeed"
        rows += [exact, {**r, "text": json.dumps(fields)}]
    rows[10:10] = [row(values=[pairs[i]["sentence1"], sentence(), sentence()]) for i in range(3)]
    whole = build(rows, index)
    monkeypatch.setattr(speed.data.corpus, "CHUNK_ROWS", 7)
    chunked = build(iter(rows), index)
    assert chunked[0].equals(whole[0])
    assert chunked[1] == whole[1]
    frame, stats = chunked
    assert stats["drops"] == {"contaminated": 3, "exact duplicate": 14, "near duplicate": 14}
    assert frame["id"].to_list() == [f"speed-{i:07d}" for i in range(60)]
    # distinct-n over all queries, then all positives, as one word sequence
    tokens = [w for t in frame["query"].to_list() + frame["positive"].to_list() for w in words(t)]
    bigrams = list(zip(tokens, tokens[1:], strict=False))
    assert stats["distinct_1"] == len(set(tokens)) / len(tokens)
    assert stats["distinct_2"] == len(set(bigrams)) / len(bigrams)


def test_eval_texts_skip_ids_and_labels(tmp_path):
    (tmp_path / "test.jsonl").write_text(
        json.dumps({"text": "hello world", "label": 3, "label_text": "card_arrival"}) + "\n"
    )
    assert list(eval_texts(tmp_path)) == ["hello world"]


def test_parquet_round_trip(tmp_path):
    from speed.data.corpus import write_corpus

    frame, stats = build(
        [
            row(),
            row("s2s"),
            row("sts"),
            row("classification", values=["a long input text here", "label a", "label b"]),
        ]
    )
    write_corpus(frame, stats, str(tmp_path / "c.parquet"), str(tmp_path / "c.stats.json"))
    back = pl.read_parquet(tmp_path / "c.parquet")
    assert back.equals(frame)
    assert back.filter(pl.col("family") == "s2s")["negative"].to_list() == [None]


def test_truncated_outputs_are_dropped_per_family_and_repairs_counted():
    whole = [row(), row("sts"), row("classification", values=["a long input text", "x", "y"])]
    cut = [{**row(), "finish_reason": "length"}, {**row("sts"), "finish_reason": "length"}]
    fenced = {**row(), "text": "```json\n" + row()["text"] + "\n```"}
    label_in_input = row("classification", values=["the input says Sports here", "sports", "y"])
    frame, stats = build([*whole, *cut, fenced, label_in_input])
    assert frame.height == 4  # the whole ones and the fenced one, never a truncated one
    assert stats["drops"]["invalid: truncated"] == 2
    assert stats["invalid_per_family"]["retrieval"] == {"invalid: truncated": 1}
    assert stats["invalid_per_family"]["sts"] == {"invalid: truncated": 1}
    assert stats["invalid_per_family"]["classification"] == {"invalid: label in input": 1}
    assert stats["repairs"] == {"markdown fence": 1}
