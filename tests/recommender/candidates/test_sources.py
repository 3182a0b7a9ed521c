"""Each candidate source nominates sensible items on a planted catalogue with a trained model."""

from __future__ import annotations

from datetime import timedelta

import pytest

from catalog.models import Feedback, Item
from catalog.services import feedback_record
from recommender.candidates import SOURCES, Context
from recommender.candidates.because_you_liked import BecauseYouLikedSource
from recommender.candidates.content_based import ContentBasedSource
from recommender.candidates.fresh import FreshSource
from recommender.candidates.personal_ann import PersonalAnnSource
from recommender.candidates.popular import PopularSource
from recommender.candidates.related import RelatedSource
from recommender.vectors.base import AnnFilters
from tests.factories import FeedbackFactory, ItemFactory, UserProfileFactory

pytestmark = pytest.mark.django_db


def rated_item_ids(profile_id: int) -> set[int]:
    return set(Feedback.objects.filter(user_id=profile_id).values_list("item_id", flat=True))


def test_registry_holds_every_source_by_name():
    assert set(SOURCES) == {
        "personal_ann",
        "related",
        "because_you_liked",
        "content_based",
        "popular",
        "fresh",
        "ease",  # one source per non-vector model family (recommender/candidates/family.py)
        "als",
        "two_tower",  # one per vector family, in its own space (recommender/candidates/family_ann.py)
    }
    assert all(name == source.name for name, source in SOURCES.items())


def test_personal_ann_returns_the_users_own_cluster_without_seen_items(trained, now):
    for cluster in (0, 1):
        profile = trained.catalog.profiles_by_cluster[cluster][0]
        seen = frozenset(rated_item_ids(profile.pk))
        context = Context(
            surface="home",
            now=now,
            version_id=trained.version.pk,
            profile_id=profile.pk,
            user_vector=trained.user_vector(profile.pk),
            seen_item_ids=seen,
        )
        candidates = PersonalAnnSource().generate(context, 10)

        assert len(candidates) == 10
        assert {c.item_id for c in candidates} <= trained.own_item_ids(cluster) - seen
        assert [c.score for c in candidates] == sorted((c.score for c in candidates), reverse=True)


def test_personal_ann_needs_a_user_vector(trained, now):
    context = Context(surface="home", now=now, version_id=trained.version.pk, profile_id=None)
    assert PersonalAnnSource().generate(context, 10) == []


@pytest.mark.parametrize("measure", ["cosine", "dot", "euclidean", "norm_damped"])
def test_related_returns_same_cluster_neighbours_and_never_the_seed(trained, now, measure):
    seed = trained.catalog.items_by_cluster[1][3]
    context = Context(surface="related", now=now, version_id=trained.version.pk, item_id=seed.pk, measure=measure)
    candidates = RelatedSource().generate(context, 10)

    assert len(candidates) == 10
    ids = [c.item_id for c in candidates]
    assert seed.pk not in ids
    assert set(ids) <= trained.own_item_ids(1)


def test_because_you_liked_reasons_point_at_recent_positive_items(trained, now):
    profile = trained.catalog.profiles_by_cluster[0][0]
    liked = rated_item_ids(profile.pk)
    # The newest feedback is a low re-rating: it supersedes a 4-5 star rating, so that item stops being a seed.
    disliked_now = sorted(liked)[0]
    feedback_record(profile=profile, item=Item.objects.get(pk=disliked_now), kind="rating", value=2.0)
    context = Context(
        surface="home",
        now=now,
        version_id=trained.version.pk,
        profile_id=profile.pk,
        measure="cosine",
        seen_item_ids=frozenset(liked),
    )
    candidates = BecauseYouLikedSource(seeds=3).generate(context, 12)

    assert len(candidates) == 12
    seeds = {c.reason["because_item_id"] for c in candidates}
    assert seeds <= liked - {disliked_now}
    assert 1 < len(seeds) <= 3  # interleaved over several seeds
    assert not {c.item_id for c in candidates} & liked
    assert {c.item_id for c in candidates} <= trained.own_item_ids(0)


def test_content_based_nominates_unrated_items_of_the_liked_genre(trained, now):
    profile = trained.catalog.profiles_by_cluster[1][2]
    liked = rated_item_ids(profile.pk)
    context = Context(surface="home", now=now, profile_id=profile.pk, seen_item_ids=frozenset(liked))
    candidates = ContentBasedSource().generate(context, 50)

    assert {c.item_id for c in candidates} == trained.own_item_ids(1) - liked


def test_content_based_weights_rare_shared_features_higher(now):
    rare, common = ("studio", "tiny"), ("genre", "drama")
    liked = ItemFactory(features=[rare, common])
    shares_rare = ItemFactory(features=[rare])
    shares_common = ItemFactory(features=[common])
    ItemFactory.create_batch(6, features=[common])  # makes "drama" common: low idf
    ItemFactory(features=[("genre", "unrelated")])
    profile = UserProfileFactory()
    FeedbackFactory(user=profile, item=liked, kind_code="like")
    candidates = ContentBasedSource().generate(Context(surface="home", now=now, profile_id=profile.pk), 3)

    assert candidates[0].item_id == shares_rare.pk
    assert shares_common.pk in {c.item_id for c in candidates}
    assert liked.pk not in {c.item_id for c in candidates}


def test_content_based_on_the_related_surface_uses_the_seed_item(now):
    seed = ItemFactory(features=[("genre", "noir")])
    same = ItemFactory(features=[("genre", "noir")])
    ItemFactory(features=[("genre", "musical")])
    candidates = ContentBasedSource().generate(Context(surface="related", now=now, item_id=seed.pk), 10)

    assert [c.item_id for c in candidates] == [same.pk]


def test_popular_orders_by_decayed_popularity_within_the_window(now):
    old_hit, recent, outside_window, disliked = ItemFactory.create_batch(4)
    for _ in range(3):
        FeedbackFactory(item=old_hit, created_at=now - timedelta(days=20))
    for _ in range(2):
        FeedbackFactory(item=recent, created_at=now - timedelta(days=1))
    for _ in range(10):
        FeedbackFactory(item=outside_window, created_at=now - timedelta(days=200))
        FeedbackFactory(item=disliked, kind_code="dislike", created_at=now - timedelta(hours=1))
    source = PopularSource(window_days=90, half_life_days=7)
    candidates = source.generate(Context(surface="home", now=now), 10)

    assert [c.item_id for c in candidates] == [recent.pk, old_hit.pk]
    assert candidates[0].score == pytest.approx(2 * 0.5 ** (1 / 7), rel=1e-6)
    assert candidates[1].score == pytest.approx(3 * 0.5 ** (20 / 7), rel=1e-6)


def test_popular_applies_filters_and_seen_items(now):
    first, second, third = ItemFactory.create_batch(3)
    for count, item in ((3, first), (2, second), (1, third)):
        for _ in range(count):
            FeedbackFactory(item=item, created_at=now - timedelta(hours=1))
    Item.objects.filter(pk=second.pk).update(is_active=False)
    context = Context(surface="home", now=now, seen_item_ids=frozenset({first.pk}))

    assert [c.item_id for c in PopularSource().generate(context, 10)] == [third.pk]


def test_popular_finds_matching_items_below_the_memoised_head(now, monkeypatch):
    # The memoised head holds the 3 most popular items; a filter that removes all of them must still
    # get the most popular matching items from below the head (no cliff at CACHED_ITEMS).
    monkeypatch.setattr("recommender.candidates.popular.CACHED_ITEMS", 3)
    head = ItemFactory.create_batch(3, features=[("genre", "drama")])
    below = ItemFactory.create_batch(3, features=[("genre", "comedy")])
    for count, item in zip((9, 8, 7, 3, 2, 1), (*head, *below), strict=True):
        for _ in range(count):
            FeedbackFactory(item=item, created_at=now - timedelta(hours=1))
    drama = head[0].features.get().pk
    context = Context(surface="home", now=now, filters=AnnFilters(exclude_feature_ids=(drama,)))

    assert [c.item_id for c in PopularSource().generate(context, 2)] == [below[0].pk, below[1].pk]


def test_fresh_returns_newest_active_published_items_first(now):
    newest = ItemFactory(published_at=now - timedelta(hours=1))
    older = ItemFactory(published_at=now - timedelta(days=3))
    ItemFactory(published_at=now + timedelta(days=1))  # scheduled, not published yet
    ItemFactory(published_at=now - timedelta(minutes=5), is_active=False)
    ItemFactory(published_at=None)
    oldest = ItemFactory(published_at=now - timedelta(days=30))
    candidates = FreshSource().generate(Context(surface="home", now=now), 10)

    assert [c.item_id for c in candidates] == [newest.pk, older.pk, oldest.pk]
    assert candidates[0].score > candidates[1].score > candidates[2].score
