"""No cliffs: crossing a size budget changes which path answers, never what is served.

Each per-process copy and the related-list precomputation has a budget computed from the data
(docs/serving.md, "Budgets and their fallbacks"). A planted catalogue (two taste clusters, a
trained model) is served with every budget set to exactly what it needs, so everything answers
in process; then it is padded with cold items (new, with features, no feedback), which puts it
over the vector, catalogue and item-row budgets, and served again; then the same padded
catalogue is served with generous budgets. The lists must not step down: on the same catalogue
both paths serve identical lists, and padding only lets the new items in between the planted
ones. The related precomputation is cut by its time budget halfway through the catalogue, and
every item's related list is the same whether its row or the live pipeline answers.

Transactional: the per-process copies are never used inside a transaction.
"""

from __future__ import annotations

import itertools

import pytest
from django.core.cache import cache
from django.db import connection
from psycopg import sql

from catalog.models import Item, ItemFeature
from catalog.services import item_create
from recommender import serving
from recommender.candidates._catalogue import CATALOGUE_COPY, ITEM_BYTES, POSTING_BYTES, catalogue_memo
from recommender.generations import global_generation_bump, global_generation_fetch
from recommender.rerank.selectors import RULES
from recommender.selectors import related_precompute_coverage, related_precomputed_fetch, related_table
from recommender.services.precompute import related_items_precompute
from recommender.serving.context import ACTIVE_VERSION, context_build
from recommender.serving.results import ITEM_ROWS, _items_read, item_row_bytes
from recommender.serving.surfaces import ranked_candidates
from recommender.vectors.exact import VERSION_VECTORS, version_vectors, version_vectors_load
from recommender.vectors.store import vectors_drop
from tests.recommender.conftest import build_planted_catalog
from tests.recommender.test_training import train_inline

K = 10
PADDING = 40  # cold items: enough to cross every budget set to the planted catalogue's size
MEMOS = (ITEM_ROWS, VERSION_VECTORS, CATALOGUE_COPY, RULES, ACTIVE_VERSION)


@pytest.fixture
def served(transactional_db):
    # Flushed tables restart the generation counter: a copy kept by an earlier test must not answer.
    for memo in MEMOS:
        memo.clear()
    catalog = build_planted_catalog(users_per_cluster=15, items_per_cluster=30, ratings_per_user=10)
    version = train_inline()
    yield catalog, version
    for memo in MEMOS:
        memo.clear()
    vectors_drop(version_id=version.pk)
    with connection.cursor() as cursor:
        cursor.execute(
            sql.SQL("DROP TABLE IF EXISTS {}")
            .format(sql.Identifier(related_table(version.pk)))
            .as_string(connection.connection)
        )


def _budgets_set(settings, *, version_id: int, item_ids: list[int]) -> dict[str, int]:
    """Each budget set to exactly what the catalogue of ``item_ids`` needs (it fits; one more item does not)."""
    vectors = version_vectors_load(version_id)
    assert vectors is not None and len(vectors.item_ids) == len(item_ids)
    postings = ItemFeature.objects.filter(item_id__in=item_ids).count()
    budgets = {
        "VECTOR_EXACT_INDEX_BUDGET_BYTES": vectors.nbytes,
        "CATALOGUE_COPY_BUDGET_BYTES": len(item_ids) * ITEM_BYTES + postings * POSTING_BYTES,
        "ITEM_ROWS_BUDGET_BYTES": sum(item_row_bytes(row) for row in _items_read(item_ids).values()),
    }
    for name, value in budgets.items():
        setattr(settings, name, value)
    return budgets


def _new_generation() -> int:
    """A new ``global`` generation (the copies reload under the current budgets), the homepage cache emptied."""
    global_generation_bump()
    cache.clear()
    return global_generation_fetch()


def _in_process(version_id: int, generation: int) -> tuple[bool, bool]:
    """(the vectors are answered in process, the catalogue is) for requests of ``generation``."""
    return (
        version_vectors(version_id=version_id, generation=generation) is not None,
        catalogue_memo(generation=generation) is not None,
    )


def _rows_not_held(item_ids: set[int], generation: int) -> list[int]:
    """The rows of ``item_ids`` the item-row memo does not hold for ``generation`` (it loads them)."""
    missing: list[int] = []

    def load_many(ids: list[int]):
        missing.extend(ids)
        return _items_read(ids)

    ITEM_ROWS.get_many(sorted(item_ids), generation=generation, load_many=load_many)
    return missing


Served = dict[int, list[tuple[int, tuple[str, ...]]]]  # profile or item → [(item, the sources that nominated it)]


def _homepages(catalog) -> Served:
    lists = {}
    for profile in itertools.chain.from_iterable(catalog.profiles_by_cluster.values()):
        result = serving.recommend_for_user(profile=profile, k=K)
        assert not result.fallback and not result.cached, result.fallback_reason
        assert len(result.items) == K
        lists[profile.pk] = [(entry.item.pk, tuple(sorted(entry.sources))) for entry in result.items]
    return lists


def _related_lists(items) -> Served:
    lists = {}
    for item in items:
        result = serving.related_items(item=item, k=K)
        assert not result.fallback, result.fallback_reason
        assert len(result.items) == K
        lists[item.pk] = [(entry.item.pk, tuple(sorted(entry.sources))) for entry in result.items]
    return lists


def _ids(lists: Served) -> dict[int, list[int]]:
    return {key: [item_id for item_id, _ in entries] for key, entries in lists.items()}


def _shown(*lists: Served) -> set[int]:
    return {item_id for served in lists for entries in served.values() for item_id, _ in entries}


def _pad(count: int) -> list[Item]:
    """Cold items of no particular taste: both planted genres (so they get cold-start vectors), no feedback."""
    both = [("genre", "cluster-0", 1.0), ("genre", "cluster-1", 1.0)]
    return [item_create(external_id=f"cold-{i}", title=f"Cold item {i}", features=both) for i in range(count)]


def test_crossing_the_serving_budgets_does_not_step_the_lists_down(served, settings):
    catalog, version = served
    planted = list(Item.objects.order_by("pk"))
    planted_ids = {item.pk for item in planted}
    budgets = _budgets_set(settings, version_id=version.pk, item_ids=sorted(planted_ids))

    # Within every budget: vectors, catalogue and every row shown answered in process.
    generation = _new_generation()
    assert _in_process(version.pk, generation) == (True, True)
    home_before, related_before = _homepages(catalog), _related_lists(planted)
    shown_before = _shown(home_before, related_before)
    assert _rows_not_held(shown_before, generation) == []
    assert ITEM_ROWS.usage()[1] <= budgets["ITEM_ROWS_BUDGET_BYTES"]

    # Padded with cold items: over the vector and catalogue budgets (the item creations bumped the
    # generation). The lists show rows of the planted items only (below), so the item-row budget is
    # crossed by halving it: half the rows shown are answered from the database.
    padding = _pad(PADDING)
    settings.ITEM_ROWS_BUDGET_BYTES = budgets["ITEM_ROWS_BUDGET_BYTES"] // 2
    generation = global_generation_fetch()
    cache.clear()
    assert _in_process(version.pk, generation) == (False, False)
    related_of_padding = _related_lists(padding)
    home_over, related_over = _homepages(catalog), _related_lists(planted)
    shown_over = _shown(home_over, related_over, related_of_padding)
    assert _rows_not_held(shown_over, generation) != []  # answered from the database past the budget
    assert ITEM_ROWS.usage()[1] <= settings.ITEM_ROWS_BUDGET_BYTES

    # The planted lists do not step down: the cold items of no particular taste enter no list, and
    # every planted user's homepage and every planted item's related list is what it was (the
    # items; which sources nominated them may change: the cold items are now the freshest).
    assert _ids(home_over) == _ids(home_before)
    assert _ids(related_over) == _ids(related_before)
    assert shown_over <= planted_ids

    # The same padded catalogue within generous budgets, everything in process again: identical
    # lists, down to the sources that nominated each item (the in-process copies and SQL/HNSW
    # answer alike).
    for name in budgets:
        setattr(settings, name, 100 * budgets[name])
    generation = _new_generation()
    assert _in_process(version.pk, generation) == (True, True)
    assert _related_lists(padding) == related_of_padding
    assert _homepages(catalog) == home_over
    assert _related_lists(planted) == related_over
    assert _rows_not_held(shown_over, generation) == []


class StepClock:
    """A clock that advances one second each time it is read (time is the boundary mocked)."""

    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        self.now += 1.0
        return self.now


def test_a_related_list_is_the_same_whether_precomputed_or_live(served, settings):
    _catalog, version = served
    _pad(PADDING)
    items = list(Item.objects.filter(is_active=True).order_by("-popularity", "pk"))
    cache.clear()
    live = _related_lists(items)  # no table yet: every list live

    # Checked before each item: reads 2..n+1 pass a budget of n + 0.5 seconds, so n items are stored.
    covered = len(items) // 2
    settings.RELATED_PRECOMPUTE_SECONDS = covered + 0.5
    coverage = related_items_precompute(version=version, clock=StepClock())
    assert (coverage.items, coverage.of, coverage.stopped_by) == (covered, len(items), "time_budget")
    assert related_precompute_coverage(version_id=version.pk)["items"] == covered
    stored = {item.pk: related_precomputed_fetch(version_id=version.pk, item_id=item.pk) for item in items}
    assert all(stored[item.pk] is not None for item in items[:covered])  # the most popular half
    assert all(stored[item.pk] is None for item in items[covered:])  # the tail is served live

    assert _related_lists(items) == live
    for item in items[:covered]:
        # The whole ranked pool is stored, so rules applied at request time see what they see live.
        pool = ranked_candidates(context_build(surface="related", version=version, item=item))
        assert [candidate.item_id for candidate in stored[item.pk]] == [c.item_id for c in pool if c.item_id != item.pk]
        assert [candidate.item_id for candidate in stored[item.pk]][:K] == _ids(live)[item.pk]
