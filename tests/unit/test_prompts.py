"""Data prompts: attribute distributions (SPEED.md stage 3), family mix, purposes, determinism."""

from __future__ import annotations

import random
from collections import Counter
from itertools import combinations

import pytest

from speed.prompts import data
from speed.prompts.data import (
    PURPOSES,
    build_messages,
    build_prompts,
    family_counts,
    sample_attributes,
)
from speed.prompts.families import FAMILIES, STS_INSTRUCTION

# The paper's probabilities, written out here (not read from the module under test).
SPEED = {
    "retrieval": {
        "query_type": {"extremely long-tail": 0.4, "long-tail": 0.5, "common": 0.1},
        "query_length": {"less than 5 words": 0.4, "5 to 15 words": 0.4, "at least 10 words": 0.2},
        "clarity": {"clear": 0.6, "understandable with some effort": 0.2, "ambiguous": 0.2},
        "num_words": {w: 1 / 6 for w in (50, 100, 200, 300, 400, 500)},
    },
    "classification": {
        "length": {
            "less than 10 words": 0.1,
            "at least 10 words": 0.3,
            "at least 50 words": 0.2,
            "at least 100 words": 0.2,
            "at least 200 words": 0.2,
        },
    },
    "sts": {
        "unit": {"sentence": 0.9, "phrase": 0.05, "passage": 0.05},
        "high_score": {4: 1 / 3, 4.5: 1 / 3, 5: 1 / 3},
        "low_score": {2.5: 1 / 3, 3: 1 / 3, 3.5: 1 / 3},
    },
}
CLARITY = SPEED["retrieval"]["clarity"]
EDUCATION = {"retrieval": ["high school", "college", "PhD"]}
EDUCATION["classification"] = EDUCATION["retrieval"]
EDUCATION["sts"] = ["elementary school", "high school", "college"]
MIX = {"classification": 7, "sts": 7, "retrieval": 7, "s2s": 1, "p2p": 1}
N = 10_000
TOL = 0.02  # 2 percentage points; at N=10,000 the largest standard error is 0.5 points


def assert_close(values: list, expected: dict, what: str) -> None:
    counts = Counter(values)
    assert set(counts) <= set(expected), f"{what}: unexpected values {set(counts) - set(expected)}"
    for value, p in expected.items():
        freq = counts[value] / len(values)
        assert abs(freq - p) <= TOL, f"{what}={value!r}: {freq:.3f} vs {p}"


def samples(family: str, n: int = N, seed: int = 1234) -> list[dict]:
    rng = random.Random(seed)
    return [sample_attributes(family, rng) for _ in range(n)]


@pytest.mark.parametrize("family", ["retrieval", "classification", "sts"])
def test_attribute_distributions(family):
    attrs = samples(family)
    for key, dist in SPEED[family].items():
        assert all(key in a for a in attrs), key
        assert_close([a[key] for a in attrs], dist, f"{family}.{key}")
    with_edu = [a for a in attrs if "education" in a]
    assert abs(len(with_edu) / N - 0.5) <= TOL
    uniform = {e: 1 / 3 for e in EDUCATION[family]}
    assert_close([a["education"] for a in with_edu], uniform, f"{family}.education")


def test_retrieval_keys():
    for a in samples("retrieval", 2000):
        assert set(a) - {"education"} == {"query_type", "query_length", "clarity", "num_words"}


def test_classification_clarity_comes_with_education():
    attrs = samples("classification")
    for a in attrs:
        assert ("clarity" in a) == ("education" in a)
        assert set(a) <= {"length", "clarity", "education"}
    with_clarity = [a["clarity"] for a in attrs if "clarity" in a]
    assert abs(len(with_clarity) / N - 0.5) <= TOL
    assert_close(with_clarity, CLARITY, "classification.clarity")


def test_sts_keys():
    for a in samples("sts", 2000):
        assert set(a) - {"education"} == {"unit", "high_score", "low_score"}


@pytest.mark.parametrize("family", ["s2s", "p2p"])
def test_matching_families_have_no_attributes(family):
    assert samples(family, 50) == [{}] * 50


def test_module_constants_match_speed():
    assert SPEED["retrieval"]["query_type"] == data.RETRIEVAL_QUERY_TYPE
    assert SPEED["retrieval"]["query_length"] == data.RETRIEVAL_QUERY_LENGTH
    assert data.CLARITY == CLARITY
    assert sorted(data.DOC_MIN_WORDS) == sorted(SPEED["retrieval"]["num_words"])
    assert SPEED["classification"]["length"] == data.CLASSIFICATION_LENGTH
    assert SPEED["sts"]["unit"] == data.STS_UNIT
    assert sorted(data.STS_HIGH) == sorted(SPEED["sts"]["high_score"])
    assert sorted(data.STS_LOW) == sorted(SPEED["sts"]["low_score"])
    assert data.EDUCATION_PROBABILITY == 0.5


# --- family quotas ---------------------------------------------------------------------------


def test_family_counts_exact():
    assert family_counts(23, MIX) == {
        "classification": 7,
        "sts": 7,
        "retrieval": 7,
        "s2s": 1,
        "p2p": 1,
    }
    assert family_counts(46, MIX) == {f: 2 * w for f, w in MIX.items()}
    assert family_counts(0, MIX) == dict.fromkeys(MIX, 0)
    paper = {"classification": 7, "sts": 7, "retrieval": 7, "matching": 2}
    assert family_counts(23, paper) == paper


@pytest.mark.parametrize("n", [1, 2, 5, 10, 22, 24, 99, 101, 1000, 9999])
def test_family_counts_sum_and_rounding(n):
    counts = family_counts(n, MIX)
    assert sum(counts.values()) == n
    for f, w in MIX.items():
        assert abs(counts[f] - n * w / 23) < 1


# --- built prompts ---------------------------------------------------------------------------

TOPICS = [
    {"id": f"topic-{i}", "path": path}
    for i, path in enumerate(
        [
            "Arts/Crafts/Textiles",
            "Science/Biology/Botany",
            "Recreation/Outdoors/Hiking",
            "Business/Agriculture/Dairy",
            "Computers/Programming/Compilers",
            "Health/Nutrition",
            "Sports/Sailing/Racing",
            "Home/Gardening/Roses",
        ]
    )
]
VERBS = {
    "classification": "Classify a {t} forum post by the action it requests ({j})",
    "retrieval": "Given a {t} question, retrieve passages that answer it ({j})",
    "s2s": "Given a {t} product title, find its catalogue keywords ({j})",
    "p2p": "Given a {t} report, find the longer article it summarises ({j})",
}


def fake_tasks(per_family: int) -> dict[str, list[dict]]:
    """Plain task records, one per (topic, j). s2s and p2p prompts have no sampled attributes:
    their only variety is the task and the guideline order (4! orders), so a large n needs
    enough tasks for every prompt to be new (here 96 tasks -> 576 distinct prompts per purpose
    bucket, for 435 needed at n=10,000)."""
    out = {}
    for family, pattern in VERBS.items():
        out[family] = [
            {
                "task": pattern.format(t=TOPICS[j % len(TOPICS)]["path"].split("/")[-1], j=j),
                "topic": TOPICS[j % len(TOPICS)]["path"],
                "topic_id": TOPICS[j % len(TOPICS)]["id"],
            }
            for j in range(per_family)
        ]
    return out


TASKS = fake_tasks(96)


def build(purpose="synthesis", n=200, seed=0, tasks=TASKS, topics=TOPICS, mix=MIX):
    return build_prompts(purpose, n, mix, tasks, topics, seed, max_field_chars=300)


@pytest.fixture(scope="module")
def big() -> list[dict]:
    return build(n=N)


def test_build_mix(big):
    assert len(big) == N
    counts = Counter(p["family"] for p in big)
    for family, w in MIX.items():
        assert abs(counts[family] / N - w / 23) <= TOL, family
    assert counts == Counter(family_counts(N, MIX))
    assert len({p["id"] for p in big}) == N
    assert {p["purpose"] for p in big} == {"synthesis"}


def test_families_are_interleaved(big):
    first = [p["family"] for p in big[:200]]
    assert set(first) >= {"classification", "sts", "retrieval"}


def test_schema_requires_family_keys(big):
    for p in big:
        keys = FAMILIES[p["family"]].keys
        schema = p["schema"]
        assert schema["required"] == list(keys)
        assert set(schema["properties"]) == set(keys)
        assert schema["additionalProperties"] is False
        assert all(v["maxLength"] == 300 for v in schema["properties"].values())


def test_sts_has_topic_others_have_task(big):
    known = {f: {t["task"] for t in ts} for f, ts in TASKS.items()}
    for p in big:
        content = p["messages"][0]["content"]
        assert p["topic"] and p["topic_id"]
        if p["family"] == "sts":
            assert p["task"] is None
            assert p["instruction"] == STS_INSTRUCTION
            assert p["topic"] in {t["path"] for t in TOPICS}
            assert p["topic"].replace("/", " > ") in content
        else:
            assert p["task"] in known[p["family"]]
            assert p["instruction"] == p["task"]
            assert p["task"] in content


def test_attributes_are_in_the_prompt(big):
    for p in big[:2000]:
        content = p["messages"][0]["content"]
        for key, value in p["attributes"].items():
            assert str(value) in content, (key, value)
        for key in FAMILIES[p["family"]].keys:
            assert key in content
        assert "JSON object only" in content


def test_guideline_order_is_shuffled(big):
    for family in ("s2s", "retrieval"):
        orders = Counter()
        for p in big:
            if p["family"] != family:
                continue
            lines = [x for x in p["messages"][0]["content"].splitlines() if x.startswith("- ")]
            orders[next(i for i, x in enumerate(lines) if x.startswith("- Keys:"))] += 1
        assert len(orders) >= 4, (family, orders)  # "Keys:" moves around the list


def test_guideline_orders_within_one_prompt_setting():
    rng = random.Random(5)
    attrs = sample_attributes("retrieval", random.Random(1))
    orders = {
        tuple(
            build_messages("retrieval", attrs, "Given a query, find docs", "A/B", rng)[0][
                "content"
            ].splitlines()
        )
        for _ in range(50)
    }
    assert len(orders) > 1
    assert len({tuple(sorted(o)) for o in orders}) == 1  # same guidelines, other order


def test_deterministic():
    a = build(n=300, seed=11)
    assert build(n=300, seed=11) == a
    b = build(n=300, seed=12)
    assert a != b
    shared = {p["messages"][0]["content"] for p in a} & {p["messages"][0]["content"] for p in b}
    assert len(shared) < 30


def test_purposes_never_share_prompts():
    contents = {}
    for purpose in PURPOSES:
        prompts = build(purpose=purpose, n=400, seed=3)
        assert {p["purpose"] for p in prompts} == {purpose}
        assert all(p["id"].startswith(f"{purpose}-") for p in prompts)
        contents[purpose] = {p["messages"][0]["content"] for p in prompts}
    for x, y in combinations(PURPOSES, 2):
        assert not contents[x] & contents[y], (x, y)


def test_purposes_are_built_independently():
    small = build(purpose="seed", n=50, seed=3)
    assert build(purpose="seed", n=50, seed=3) == small
    # no shared generator state: building another purpose changes nothing
    build(purpose="candidates", n=10, seed=3)
    assert build(purpose="seed", n=50, seed=3) == small


def test_unknown_purpose():
    with pytest.raises(ValueError, match="unknown prompt purpose"):
        build(purpose="eval", n=5)


@pytest.mark.parametrize("family", ["classification", "retrieval", "s2s", "p2p"])
def test_family_without_tasks_raises(family):
    with pytest.raises(ValueError, match=family):
        build(n=50, tasks={**TASKS, family: []})
    with pytest.raises(ValueError, match=family):
        build(n=50, tasks={f: t for f, t in TASKS.items() if f != family})


def test_family_with_zero_quota_needs_no_tasks():
    mix = {"classification": 1, "sts": 1, "retrieval": 0}
    prompts = build(n=20, mix=mix, tasks={"classification": TASKS["classification"]})
    assert {p["family"] for p in prompts} == {"classification", "sts"}


def test_no_topics_raises():
    with pytest.raises(ValueError, match="no topics"):
        build(n=20, topics=[])


def test_few_distinct_prompts_repeat_within_their_purpose():
    # one s2s task has 24 guideline orders, about 6 of them in a purpose's bucket
    prompts = build(n=40, mix={"s2s": 1}, tasks={"s2s": TASKS["s2s"][:1]})
    contents = {p["messages"][0]["content"] for p in prompts}
    assert len(prompts) == 40 and 1 < len(contents) < 40
    other = build(purpose="candidates", n=40, mix={"s2s": 1}, tasks={"s2s": TASKS["s2s"][:1]})
    assert not contents & {p["messages"][0]["content"] for p in other}
