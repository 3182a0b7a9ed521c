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


def test_version_models_keep_the_recent_ones_within_the_byte_budget_and_always_the_newest():
    from recommender.memo import VersionModels

    budget = {"bytes": 250}
    models = VersionModels("test", budget_bytes=lambda: budget["bytes"], size_of=len)
    models.store(1, "a" * 100)
    models.store(2, "b" * 100)
    assert models.keys() == [1, 2]
    assert models.lookup(1) == (True, "a" * 100)  # 1 is now the most recently used
    models.store(3, "c" * 100)  # 300 bytes > 250: the least recently used (2) goes
    assert models.keys() == [1, 3]
    assert models.lookup(2) == (False, None)

    # One version's models bigger than the whole budget (a million items): kept alone, never refused.
    models.store(4, "d" * 1_000)
    assert models.keys() == [4]
    assert models.lookup(4) == (True, "d" * 1_000)

    # The budget is read at each store, as a setting's override would be.
    budget["bytes"] = 10_000
    models.store(5, "e" * 100)
    assert models.keys() == [4, 5]
