"""Catalogue selectors against the real database: filters, sort orders, statistics, popularity."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from django.utils import timezone

from catalog import selectors, services
from catalog.models import Feedback
from tests.factories import FeedbackFactory, ItemFactory, UserProfileFactory

pytestmark = pytest.mark.django_db


def _titles(items) -> list[str]:
    return [item.title for item in items]


def _at(year: int) -> datetime:
    return datetime(year, 6, 1, tzinfo=UTC)


@pytest.fixture
def films():
    """Four items with planted genres, years and providers; one is inactive."""
    return {
        "toy": ItemFactory(
            title="Toy Story (1995)",
            provider="Pixar",
            published_at=_at(1995),
            features=[("genre", "Animation"), ("genre", "Comedy"), ("year", "1995")],
        ),
        "heat": ItemFactory(
            title="Heat (1995)",
            provider="Warner",
            published_at=_at(1995),
            features=[("genre", "Crime"), ("genre", "Drama"), ("year", "1995")],
        ),
        "us": ItemFactory(
            title="the story of us",
            provider="Castle Rock",
            published_at=_at(1999),
            features=[("genre", "Comedy"), ("genre", "Drama"), ("year", "1999")],
        ),
        "gone": ItemFactory(
            title="Gone Story", provider="Pixar", published_at=None, is_active=False, features=[("genre", "Comedy")]
        ),
    }


def test_item_list_search_matches_every_word_case_insensitively(films):
    assert sorted(_titles(selectors.item_list(search="STORY"))) == ["Toy Story (1995)", "the story of us"]
    assert _titles(selectors.item_list(search="toy story")) == ["Toy Story (1995)"]
    assert _titles(selectors.item_list(search="nothing like this")) == []


def test_item_list_feature_values_are_alternatives_and_types_must_all_match(films):
    comedy_or_crime = selectors.item_list(features={"genre": ["Comedy", "Crime"]}, sort="title")
    assert _titles(comedy_or_crime) == ["Heat (1995)", "the story of us", "Toy Story (1995)"]
    drama_in_1995 = selectors.item_list(features={"genre": ["Drama"], "year": ["1995"]})
    assert _titles(drama_in_1995) == ["Heat (1995)"]
    # An item matching two requested genres appears once, not once per matching feature.
    assert _titles(selectors.item_list(features={"genre": ["Comedy", "Drama"]}, search="us")) == ["the story of us"]


def test_item_list_provider_year_and_active_only(films):
    assert _titles(selectors.item_list(provider="Pixar")) == ["Toy Story (1995)"]
    assert sorted(_titles(selectors.item_list(provider=["Pixar", "Warner"]))) == ["Heat (1995)", "Toy Story (1995)"]
    assert _titles(selectors.item_list(year=1999)) == ["the story of us"]
    assert "Gone Story" in _titles(selectors.item_list(provider="Pixar", active_only=False))


def test_item_list_sorts(films):
    profile_a, profile_b = UserProfileFactory(), UserProfileFactory()
    # "us" gets two in-force rows; "heat" one rating re-rated twice: superseded rows do not count.
    services.feedback_record(profile=profile_a, item=films["us"], kind="rating", value=4)
    services.feedback_record(profile=profile_b, item=films["us"], kind="view")
    for value in (2, 3, 5):
        services.feedback_record(profile=profile_a, item=films["heat"], kind="rating", value=value)

    popular = list(selectors.item_list(sort="popular"))
    assert _titles(popular) == ["the story of us", "Heat (1995)", "Toy Story (1995)"]
    assert [item.popularity for item in popular] == [2, 1, 0]
    newest = selectors.item_list(sort="newest", active_only=False)
    # Same year: the later id first; the undated item last.
    assert _titles(newest) == ["the story of us", "Heat (1995)", "Toy Story (1995)", "Gone Story"]
    assert _titles(selectors.item_list(sort="title")) == ["Heat (1995)", "the story of us", "Toy Story (1995)"]


def test_item_list_refuses_an_unknown_sort():
    with pytest.raises(selectors.UnknownSortError, match="popular, newest, title"):
        selectors.item_list(sort="random")


def test_item_detail_prefetches_features(films, django_assert_num_queries):
    with django_assert_num_queries(2):
        item = selectors.item_detail(external_id=films["toy"].external_id)
        values = [(feature.type, feature.value) for feature in item.features.all()]
    assert values == [("genre", "Animation"), ("genre", "Comedy"), ("year", "1995")]


def test_item_statistics_counts_current_ratings_only(films):
    item = films["toy"]
    assert selectors.item_statistics(item=item) == {
        "ratings_count": 0,
        "rating_mean": None,
        "likes_count": 0,
        "dislikes_count": 0,
    }
    alice, bob, carol = UserProfileFactory(), UserProfileFactory(), UserProfileFactory()
    services.feedback_record(profile=alice, item=item, kind="rating", value=1)
    services.feedback_record(profile=alice, item=item, kind="rating", value=5)  # supersedes the 1
    services.feedback_record(profile=bob, item=item, kind="rating", value=2)
    services.feedback_record(profile=carol, item=item, kind="like")
    services.feedback_record(profile=bob, item=item, kind="view")
    assert selectors.item_statistics(item=item) == {
        "ratings_count": 2,
        "rating_mean": 3.5,
        "likes_count": 1,
        "dislikes_count": 0,
    }


def test_feature_facets_count_active_items_and_read_providers_from_items(films):
    facets = selectors.feature_facets()
    # Comedy is on three items but one is inactive.
    assert facets["genre"] == [("Animation", 1), ("Comedy", 2), ("Crime", 1), ("Drama", 2)]
    assert facets["year"] == [("1995", 2), ("1999", 1)]
    assert facets["provider"] == [("Castle Rock", 1), ("Pixar", 1), ("Warner", 1)]
    assert selectors.feature_facets(types=("tag",)) == {"tag": []}


def test_user_feedback_list_is_newest_first_without_superseded_rows(films):
    me, someone = UserProfileFactory(), UserProfileFactory()
    now = timezone.now()
    services.feedback_record(profile=me, item=films["toy"], kind="rating", value=2, created_at=now - timedelta(hours=3))
    services.feedback_record(profile=me, item=films["heat"], kind="view", created_at=now - timedelta(hours=2))
    services.feedback_record(profile=me, item=films["toy"], kind="rating", value=4, created_at=now - timedelta(hours=1))
    services.feedback_record(profile=someone, item=films["toy"], kind="rating", value=5)

    rows = list(selectors.user_feedback_list(profile=me))
    assert [(row.item.title, row.kind_id, row.value) for row in rows] == [
        ("Toy Story (1995)", "rating", 4.0),
        ("Heat (1995)", "view", 1.0),
    ]
    assert Feedback.objects.filter(user=me).count() == 3  # the superseded 2 is kept as history


def test_user_current_rating_follows_re_ratings(films):
    me = UserProfileFactory()
    assert selectors.user_current_rating(profile=me, item=films["toy"]) is None
    assert selectors.user_current_rating(profile=None, item=films["toy"]) is None
    services.feedback_record(profile=me, item=films["toy"], kind="rating", value=3)
    services.feedback_record(profile=me, item=films["toy"], kind="rating", value=1)
    assert selectors.user_current_rating(profile=me, item=films["toy"]) == 1.0


def test_user_feedback_get_only_returns_the_owners_rows(films):
    me, other = UserProfileFactory(), UserProfileFactory()
    row = services.feedback_record(profile=other, item=films["toy"], kind="like")
    assert selectors.user_feedback_get(profile=me, feedback_id=row.pk) is None
    assert selectors.user_feedback_get(profile=other, feedback_id=row.pk) == row


def test_popular_items_window_limit_and_zero_counts(films):
    now = timezone.now()
    FeedbackFactory(item=films["heat"], created_at=now - timedelta(days=100))
    FeedbackFactory(item=films["heat"], created_at=now - timedelta(days=100))
    FeedbackFactory(item=films["toy"], created_at=now - timedelta(days=1))
    FeedbackFactory(item=films["gone"], created_at=now - timedelta(days=1))  # inactive: never listed

    overall = selectors.popular_items()
    assert [(item.title, item.popularity) for item in overall] == [("Heat (1995)", 2), ("Toy Story (1995)", 1)]
    assert _titles(selectors.popular_items(days=7)) == ["Toy Story (1995)"]
    assert _titles(selectors.popular_items(limit=1)) == ["Heat (1995)"]
