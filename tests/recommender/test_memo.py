"""`GenerationMemo`: one value per key and generation, never inside a transaction, within its budget."""

from __future__ import annotations

import pytest

from recommender.memo import GenerationMemo


class Loads:
    def __init__(self, value=lambda key: f"value of {key}"):
        self.calls: list = []
        self.value = value

    def __call__(self, key):
        self.calls.append(key)
        return self.value(key)


def test_a_value_is_loaded_once_per_generation():
    load = Loads()
    memo = GenerationMemo("test", load)
    assert memo.get("a", generation=1) == memo.get("a", generation=1) == "value of a"
    assert load.calls == ["a"]
    memo.get("a", generation=2)
    assert load.calls == ["a", "a"]


def test_without_a_generation_every_call_loads():
    load = Loads()
    memo = GenerationMemo("test", load)
    memo.get("a", generation=None)
    memo.get("a", generation=None)
    assert load.calls == ["a", "a"]


@pytest.mark.django_db
def test_inside_a_transaction_every_call_loads():
    load = Loads()
    memo = GenerationMemo("test", load)
    memo.get("a", generation=3)
    memo.get("a", generation=3)
    assert load.calls == ["a", "a"]


def test_none_is_memoised_like_any_value():
    load = Loads(value=lambda key: None)
    memo = GenerationMemo("test", load)
    assert memo.get("a", generation=1) is None and memo.get("a", generation=1) is None
    assert load.calls == ["a"]


def test_max_entries_and_the_byte_budget_stop_adding_but_still_answer():
    load = Loads(value=lambda key: "x" * key)
    by_count = GenerationMemo("test", load, max_entries=2)
    for key in (1, 2, 3, 3):
        assert by_count.get(key, generation=1) == "x" * key
    assert load.calls == [1, 2, 3, 3]

    load = Loads(value=lambda key: "x" * key)
    by_bytes = GenerationMemo("test", load, budget_bytes=5, size_of=len)
    for key in (4, 2, 1, 2, 1):
        by_bytes.get(key, generation=1)
    assert load.calls == [4, 2, 1, 2]  # 4 + 1 fit; 2 never does


def test_get_many_loads_only_what_is_missing_in_one_call():
    batches = []

    def load_many(keys):
        batches.append(list(keys))
        return {key: key * 10 for key in keys if key != 99}

    memo = GenerationMemo("test", lambda key: key * 10)
    assert memo.get_many([1, 2], generation=1, load_many=load_many) == {1: 10, 2: 20}
    assert memo.get_many([2, 3, 99], generation=1, load_many=load_many) == {2: 20, 3: 30}
    assert batches == [[1, 2], [3, 99]]


def test_a_callable_budget_is_read_at_each_store_and_usage_reports_the_table():
    budget = {"bytes": 3}
    load = Loads(value=lambda key: "x" * key)
    memo = GenerationMemo("test", load, budget_bytes=lambda: budget["bytes"], size_of=len)
    memo.get(2, generation=1)
    memo.get(2, generation=1)
    memo.get(3, generation=1)  # 2 + 3 > 3: answered, not kept
    assert memo.usage() == (1, 2)
    budget["bytes"] = 10
    memo.get(3, generation=1)
    memo.get(3, generation=1)
    assert load.calls == [2, 3, 3]
    assert memo.usage() == (2, 5)
