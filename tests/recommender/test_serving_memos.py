"""The per-process serving copies answer exactly as the SQL they replace, and are refused where unsafe.

`recommender.candidates._catalogue.catalogue_memo` (content-based, fresh) and the in-process
vector index (tests/recommender/vectors/) are only used by requests in autocommit that read the
``global`` cache generation; here the catalogue copy is loaded directly and compared, answer for
answer, with the SQL statements on a planted catalogue with a trained model (planted clusters,
seen items excluded, an inactive item, a future item).
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import transaction
from django.utils import timezone

from catalog.array_selectors import user_feedback_summary, user_positive_item_ids, user_seen_item_ids
from catalog.models import Feedback, Item
from recommender import serving
from recommender.apis import RecommendationsOutputSerializer, recommendations_data
from recommender.candidates._catalogue import catalogue_copy_load, catalogue_memo
from recommender.candidates.content_based import ContentBasedSource
from recommender.candidates.fresh import FreshSource
from recommender.generations import global_generation_fetch
from recommender.rerank.models import Rule
from recommender.rerank.selectors import rules_for_surface
from recommender.serving.context import context_build
from recommender.vectors.exact import version_vectors
from recommender.vectors.store import user_vector_fetch
from tests.recommender.test_training import train_inline

pytestmark = pytest.mark.django_db


@pytest.fixture
def served(planted_catalog):
    version = train_inline()
    # An inactive and a not-yet-published item: both filters must hold in memory as in SQL.
    hidden = planted_catalog.items_by_cluster[0][5]
    Item.objects.filter(pk=hidden.pk).update(is_active=False)
    future = planted_catalog.items_by_cluster[1][7]
    Item.objects.filter(pk=future.pk).update(published_at=timezone.now() + timedelta(days=3))
    return planted_catalog, version


def _context(catalog, version, profile, *, surface="home", item=None):
    context = context_build(surface=surface, version=version, profile=profile, item=item)
    context.measure = "dot"
    return context


def _profiles(catalog):
    return [profiles[index] for profiles in catalog.profiles_by_cluster.values() for index in (0, 3, 9)]


def test_memo_content_based_and_fresh_equal_their_sql_statements(served, monkeypatch):
    catalog, version = served
    memo = catalogue_copy_load()
    cases = [_context(catalog, version, profile) for profile in _profiles(catalog)]
    cases += [
        _context(catalog, version, None, surface="related", item=items[2])
        for items in catalog.items_by_cluster.values()
    ]
    for context in cases:
        by_sql = {
            name: source.generate(context, 15)
            for name, source in (("content", ContentBasedSource()), ("fresh", FreshSource()))
        }
        # The same sources, now answered from the catalogue copy.
        monkeypatch.setattr("recommender.candidates.content_based.catalogue_memo", lambda generation: memo)
        monkeypatch.setattr("recommender.candidates.fresh.catalogue_memo", lambda generation: memo)
        in_memory = {
            "content": ContentBasedSource().generate(context, 15),
            "fresh": FreshSource().generate(context, 15),
        }
        monkeypatch.undo()
        for name in ("content", "fresh"):
            assert by_sql[name], name
            assert [(c.item_id, c.reason) for c in in_memory[name]] == [(c.item_id, c.reason) for c in by_sql[name]]
            assert [c.score for c in in_memory[name]] == pytest.approx([c.score for c in by_sql[name]], rel=1e-6)
        future = catalog.items_by_cluster[1][7].pk
        assert future not in {c.item_id for c in in_memory["fresh"]}


def test_memos_are_refused_inside_a_transaction_and_without_a_generation(served):
    _catalog, version = served
    generation = global_generation_fetch()
    assert transaction.get_connection().in_atomic_block  # the test's own transaction
    assert version_vectors(version_id=version.pk, generation=generation) is None
    assert catalogue_memo(generation=generation) is None
    # Rules are read fresh inside a transaction: a rule created in it is seen at once.
    before = rules_for_surface(surface="home", generation=generation)
    Rule.objects.create(name="no inactive", kind="filter_inactive", scope="home")
    assert len(rules_for_surface(surface="home", generation=generation)) == len(before) + 1


def test_feedback_summary_matches_the_separate_reads(served):
    catalog, version = served
    for profile in _profiles(catalog):
        context = context_build(surface="home", version=version, profile=profile)
        summary = user_feedback_summary(profile_id=profile.pk)
        assert summary.seen_item_ids == user_seen_item_ids(profile_id=profile.pk) == context.seen_item_ids
        assert summary.positive_item_ids[:50] == user_positive_item_ids(profile_id=profile.pk, limit=50)
        assert (context.user_vector == user_vector_fetch(version_id=version.pk, profile_id=profile.pk)).all()
        assert summary.newest_feedback_id == Feedback.objects.order_by("-id").values_list("id", flat=True)[0]


def test_plain_recommendations_body_equals_the_serializer(served):
    catalog, _version = served
    profile = catalog.profiles_by_cluster[1][2]
    Rule.objects.create(name="no inactive", kind="filter_inactive", scope="home")
    for result in (
        serving.recommend_for_user(profile=profile, k=6, use_cache=False),
        serving.recommend_for_user(profile=None, k=4),
        serving.related_items(item=catalog.items_by_cluster[0][1], k=5, profile=profile),
    ):
        assert result.items
        assert recommendations_data(result) == RecommendationsOutputSerializer(result).data
    assert any(entry.reasons for entry in serving.recommend_for_user(profile=profile, k=10).items)
