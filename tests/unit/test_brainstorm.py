"""Brainstorm answers: parsing the task list, cleaning it, keeping one task per topic."""

from __future__ import annotations

import pytest

from speed.data.tasks import clean_tasks, parse_task_list
from speed.prompts.brainstorm import brainstorm_messages, brainstorm_schema, choose_tasks
from speed.prompts.families import BRAINSTORMED

T1 = "Given a hiking trail name, retrieve reports of its current conditions."
T2 = "Given a gear question, find forum answers from experienced hikers."
T3 = "Given a trail claim, retrieve evidence that supports or refutes it."


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (f'{{"tasks": ["{T1}", "{T2}", "{T3}"]}}', [T1, T2, T3]),
        (f'{{\n  "tasks": [\n    "{T1}",\n    "{T2}"\n  ]\n}}', [T1, T2]),
        (f'{{"tasks": ["{T1}", "{T2}"], "notes": []}}', [T1, T2]),
        (f'{{"ideas": ["{T1}", "{T2}"]}}', [T1, T2]),
        (f'["{T1}", "{T2}"]', [T1, T2]),
        (f"['{T1}', '{T2}']", [T1, T2]),
        (f"[\"{T1}\", 'Given a route, find its huts']", [T1, "Given a route, find its huts"]),
        (f"- {T1}\n- {T2}\n- {T3}", [T1, T2, T3]),
        (f"* {T1}\n* {T2}", [T1, T2]),
        (f"\u2022 {T1}\n\u2022 {T2}", [T1, T2]),
        (f"1. {T1}\n2. {T2}\n3. {T3}", [T1, T2, T3]),
        (f"1) {T1}\n2) {T2}", [T1, T2]),
        (f"(1) {T1}\n(2) {T2}\n(3) {T3}", [T1, T2, T3]),
        (f'1. "{T1}",\n2. "{T2}"', [T1, T2]),
        (f'```json\n{{"tasks": ["{T1}", "{T2}"]}}\n```', [T1, T2]),
        (f'```\n["{T1}", "{T2}"]\n```', [T1, T2]),
        (f"```\n- {T1}\n- {T2}\n```", [T1, T2]),
        (f'Here are some ideas:\n```json\n["{T1}"]\n```\nGood luck!', [T1]),
        (f'Here are the tasks: ["{T1}", "{T2}"]. I hope they help.', [T1, T2]),
        (f'Sure!\n{{"tasks": ["{T1}"]}}\nThese cover the topic.', [T1]),
        (f"Here are five tasks:\n\n1. {T1}\n2. {T2}\n\nLet me know.", [T1, T2]),
        # brackets inside items do not make a list of their own
        (f'{{"tasks": ["Given a [product] name, find reviews", "{T1}"]}}',
         ["Given a [product] name, find reviews", T1]),
        (f"1. Given a review, predict a rating in [1, 5].\n2. {T2}",
         ["Given a review, predict a rating in [1, 5].", T2]),
        (f"- Tag posts with labels like ['urgent', 'later']\n- {T2}",
         ["Tag posts with labels like ['urgent', 'later']", T2]),
        # garbage
        ("", []),
        ("   ", []),
        ("I am not able to help with this topic.", []),
        ("[1, 2, 3]", []),
        ('{"count": 3}', []),
        ("{{{ [[[", []),
    ],
)  # fmt: skip
def test_parse_task_list(text, expected):
    assert parse_task_list(text) == expected


def test_clean_tasks_counts_drops():
    tasks = [
        T1,
        "   ",
        "",
        '"  "',
        " ".join(["word"] * 25),
        T1.upper(),
        T1.rstrip(".") + "  ",
        "  Given a  map, find   its legend.  ",
        "'Given a hut, find its owner'",
        T2,
    ]
    kept, dropped = clean_tasks(tasks, max_words=20)
    assert kept == [T1, "Given a map, find its legend.", "Given a hut, find its owner", T2]
    assert dropped == {"empty": 3, "overlong": 1, "duplicate": 2}
    assert len(kept) + sum(dropped.values()) == len(tasks)


def test_clean_tasks_word_limit_is_inclusive():
    kept, dropped = clean_tasks([" ".join(["w"] * 12), " ".join(["v"] * 13)], max_words=12)
    assert kept == [" ".join(["w"] * 12)]
    assert dropped["overlong"] == 1


def test_choose_tasks_deterministic():
    tasks = [f"Task number {i} for the topic" for i in range(10)]
    first = choose_tasks(tasks, 1, 7, "Arts/Movies", "retrieval")
    assert len(first) == 1 and first[0] in tasks
    assert choose_tasks(list(tasks), 1, 7, "Arts/Movies", "retrieval") == first
    assert choose_tasks(tasks, 3, 7, "Arts/Movies", "retrieval") == choose_tasks(
        tasks, 3, 7, "Arts/Movies", "retrieval"
    )
    assert len(set(choose_tasks(tasks, 3, 7, "Arts/Movies", "retrieval"))) == 3
    assert choose_tasks(tasks, 20, 7, "Arts/Movies", "retrieval") != []
    assert sorted(choose_tasks(tasks, 20, 7, "Arts/Movies", "retrieval")) == sorted(tasks)
    assert choose_tasks([], 1, 7, "Arts/Movies", "retrieval") == []


def test_choose_tasks_varies_with_seed_topic_family():
    tasks = [f"Task number {i} for the topic" for i in range(10)]
    picks = {
        tuple(choose_tasks(tasks, 1, seed, topic, family))
        for seed in range(3)
        for topic in ("Arts/Movies", "Science/Biology", "Sports/Golf")
        for family in BRAINSTORMED
    }
    assert len(picks) > 3


def test_choose_tasks_stable_across_other_topics():
    topics = [f"Top/Area{i}" for i in range(40)]
    tasks = {t: [f"{t} task {j}" for j in range(5)] for t in topics}

    def run(subset):
        return {t: choose_tasks(tasks[t], 1, 3, t, "classification") for t in subset}

    full = run(topics)
    assert run(topics[::-1]) == full
    half = run(topics[::2])
    assert all(half[t] == full[t] for t in half)
    # interleave calls for other topics and families: no shared generator state
    for t in topics[:10]:
        choose_tasks(tasks[topics[-1]], 2, 3, topics[-1], "s2s")
        assert choose_tasks(tasks[t], 1, 3, t, "classification") == full[t]


@pytest.mark.parametrize("family", BRAINSTORMED)
def test_brainstorm_messages_mention_topic(family):
    messages = brainstorm_messages(family, "Recreation/Outdoors/Hiking", k=4)
    assert [m["role"] for m in messages] == ["user"]
    content = messages[0]["content"]
    assert "Recreation/Outdoors/Hiking" in content
    assert "about 4" in content
    assert '"tasks"' in content


def test_classification_brainstorm_avoids_overused_kinds():
    content = brainstorm_messages("classification", "Arts/Music")[0]["content"].lower()
    for kind in ("sentiment", "topic", "study", "genre", "spam", "urgency", "language"):
        assert kind in content, kind
    assert "do not" in content
    other = brainstorm_messages("retrieval", "Arts/Music")[0]["content"].lower()
    assert "sentiment" not in other


def test_brainstorm_schema():
    schema = brainstorm_schema(max_chars=120, max_items=6)
    assert schema["required"] == ["tasks"]
    assert schema["additionalProperties"] is False
    items = schema["properties"]["tasks"]
    assert items["maxItems"] == 6 and items["minItems"] == 1
    assert items["items"] == {"type": "string", "minLength": 1, "maxLength": 120}
