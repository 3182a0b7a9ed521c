"""Each rule kind's effect on a ranked list over real catalogue rows (planted catalogue or a small
hand-made one). No model is needed except for MMR, which reads the published embeddings."""

import json
import math
from collections import Counter
from datetime import timedelta

import numpy as np
import pytest
from django.utils import timezone

from catalog.models import Feedback, Item
from catalog.services import feedback_record
from recommender.rerank.engine import rules_apply
from recommender.rerank.rules import mmr_order, provider_slots
from recommender.rerank.selectors import long_tail_threshold
from recommender.rerank.services import impressions_record
from tests.factories import FeedbackFactory, ItemFactory, UserProfileFactory

from .conftest import home, ids, ranked, rule

pytestmark = pytest.mark.django_db


def all_planted(planted):
    return [item for items in planted.items_by_cluster.values() for item in items]


def descending(items):
    """Scores n, n-1, ..., 1 in the given order."""
    return ranked([(item, len(items) - rank) for rank, item in enumerate(items)])


# Filters ---------------------------------------------------------------------------------------


def test_filter_seen_removes_exactly_the_rated_items(planted_catalog):
    profile = planted_catalog.profiles_by_cluster[0][0]
    items = all_planted(planted_catalog)
    rated = set(Feedback.objects.filter(user=profile).values_list("item_id", flat=True))
    assert len(rated) == 12

    result = rules_apply(
        context=home(profile), ranked=descending(items), k=len(items), rules=[rule("filter_seen", include_views=False)]
    )

    assert set(ids(result.items)) == {item.pk for item in items} - rated
    assert set(result.trace[0].removed) == rated


def test_filter_seen_views_and_impressions_are_optional():
    profile = UserProfileFactory()
    viewed, shown_recently, shown_long_ago, untouched = ItemFactory.create_batch(4)
    FeedbackFactory(user=profile, item=viewed, kind_code="view")
    impressions_record(profile_id=profile.pk, item_ids=[shown_recently.pk], surface="home")
    impressions_record(
        profile_id=profile.pk,
        item_ids=[shown_long_ago.pk],
        surface="home",
        shown_at=timezone.now() - timedelta(days=10),
    )
    items = descending([viewed, shown_recently, shown_long_ago, untouched])

    ratings_only = rules_apply(
        context=home(profile), ranked=items, k=4, rules=[rule("filter_seen", include_views=False)]
    )
    with_views = rules_apply(context=home(profile), ranked=items, k=4, rules=[rule("filter_seen")])
    with_impressions = rules_apply(
        context=home(profile), ranked=items, k=4, rules=[rule("filter_seen", impressions_within_days=2)]
    )

    assert ids(ratings_only.items) == ids(items)
    assert ids(with_views.items) == [shown_recently.pk, shown_long_ago.pk, untouched.pk]
    assert ids(with_impressions.items) == [shown_long_ago.pk, untouched.pk]


def test_filter_disliked_uses_the_current_state():
    profile = UserProfileFactory()
    disliked, liked_after_dislike, rated_low, rated_high, other = ItemFactory.create_batch(5)
    feedback_record(profile=profile, item=disliked, kind="dislike")
    feedback_record(profile=profile, item=liked_after_dislike, kind="dislike")
    feedback_record(profile=profile, item=liked_after_dislike, kind="like")  # supersedes the dislike
    feedback_record(profile=profile, item=rated_low, kind="rating", value=1)
    feedback_record(profile=profile, item=rated_high, kind="rating", value=5)
    items = descending([disliked, liked_after_dislike, rated_low, rated_high, other])

    plain = rules_apply(context=home(profile), ranked=items, k=5, rules=[rule("filter_disliked")])
    with_low_ratings = rules_apply(
        context=home(profile), ranked=items, k=5, rules=[rule("filter_disliked", rating_at_most=2)]
    )

    assert plain.trace[0].removed == [disliked.pk]
    assert set(with_low_ratings.trace[0].removed) == {disliked.pk, rated_low.pk}
    assert ids(with_low_ratings.items) == [liked_after_dislike.pk, rated_high.pk, other.pk]


def test_filter_feature_removes_items_with_the_values(planted_catalog):
    items = all_planted(planted_catalog)
    result = rules_apply(
        context=home(),
        ranked=descending(items),
        k=len(items),
        rules=[rule("filter_feature", feature_type="genre", values=["cluster-1"])],
    )
    assert set(ids(result.items)) == {item.pk for item in planted_catalog.items_by_cluster[0]}


def test_filter_age_removes_items_older_than_n_days():
    now = timezone.now()
    new, old, undated = (
        ItemFactory(published_at=now - timedelta(days=5)),
        ItemFactory(published_at=now - timedelta(days=50)),
        ItemFactory(),
    )
    items = descending([old, new, undated])

    keep_undated = rules_apply(context=home(), ranked=items, k=3, rules=[rule("filter_age", max_age_days=30)])
    drop_undated = rules_apply(
        context=home(), ranked=items, k=3, rules=[rule("filter_age", max_age_days=30, keep_undated=False)]
    )

    assert ids(keep_undated.items) == [new.pk, undated.pk]
    assert ids(drop_undated.items) == [new.pk]


def test_filter_inactive_removes_inactive_and_deleted_items():
    active, inactive, deleted = ItemFactory(), ItemFactory(is_active=False), ItemFactory()
    items = descending([inactive, active, deleted])
    Item.objects.filter(pk=deleted.pk).delete()

    result = rules_apply(context=home(), ranked=items, k=3, rules=[rule("filter_inactive")])

    assert ids(result.items) == [active.pk]
    assert set(result.trace[0].removed) == {inactive.pk, deleted.pk}


# Boosts ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "head_scores, tail_scores",
    [
        ([10, 9, 8, 7, 6], [4, 3.9, 3.8, 3.7, 3.6]),
        ([-1, -2, -3, -4, -5], [-6, -7, -8, -9, -10]),  # LightFM scores are unbounded: a boost must still lift
    ],
    ids=["positive scores", "negative scores"],
)
def test_feature_boost_lifts_matching_items(planted_catalog, head_scores, tail_scores):
    head, boosted = planted_catalog.items_by_cluster[0][:5], planted_catalog.items_by_cluster[1][:5]
    items = ranked(list(zip(head, head_scores, strict=True)) + list(zip(boosted, tail_scores, strict=True)))
    scores_before = [entry.score for entry in items]
    assert set(ids(items[:5])) == {item.pk for item in head}

    result = rules_apply(
        context=home(),
        ranked=items,
        k=5,
        rules=[rule("boost_feature", feature_type="genre", values=["cluster-1"], mode="multiply", amount=4)],
    )

    assert set(ids(result.items)) == {item.pk for item in boosted}
    assert all(entry.notes == ["boosted: genre=cluster-1"] for entry in result.items)
    assert set(result.trace[0].promoted) == {item.pk for item in boosted}
    assert set(result.trace[0].demoted) == {item.pk for item in head}
    assert [entry.score for entry in items] == scores_before  # the caller's "before" list is untouched
    assert all(entry.notes == [] for entry in items)


def test_additive_feature_boost():
    comedy, drama = ItemFactory(features=[("genre", "Comedy")]), ItemFactory(features=[("genre", "Drama")])
    items = ranked([(drama, 1.0), (comedy, 0.8)])
    result = rules_apply(
        context=home(),
        ranked=items,
        k=2,
        rules=[rule("boost_feature", feature_type="genre", values=["Comedy"], mode="add", amount=0.5)],
    )
    assert ids(result.items) == [comedy.pk, drama.pk]
    assert result.items[0].score == pytest.approx(1.3)


def test_an_overflowing_boost_keeps_every_score_finite():
    """Two ×1e308 boosts overflowed to inf, and a demotion after them made NaN: a 500 on the API (found live)."""
    comedy, drama = ItemFactory(features=[("genre", "Comedy")]), ItemFactory(features=[("genre", "Drama")])
    boost = {"feature_type": "genre", "values": ["Comedy"], "mode": "multiply", "amount": 1e308}
    result = rules_apply(
        context=home(),
        ranked=ranked([(drama, 2.0), (comedy, 1.0)]),
        k=2,
        rules=[
            rule("boost_feature", **boost),
            rule("boost_feature", **boost),
            rule("boost_feature", **{**boost, "amount": 1e-300}),
        ],
    )
    # The boosts take Comedy to the largest float instead of inf; the ×1e-300 demotion then takes it to
    # 0 (max − max) instead of NaN, below Drama.
    assert ids(result.items) == [drama.pk, comedy.pk]
    assert [entry.score for entry in result.items] == [2.0, 0.0]
    assert all(math.isfinite(entry.score) for entry in result.items)
    json.dumps([entry.score for entry in result.items], allow_nan=False)


def test_freshness_boost_moves_new_items_up():
    now = timezone.now()
    old = [ItemFactory(published_at=now - timedelta(days=400 + i)) for i in range(5)]
    new = [ItemFactory(published_at=now - timedelta(days=i)) for i in range(5)]
    items = ranked(
        [(item, 10.0 - i * 0.1) for i, item in enumerate(old)] + [(item, 9.0 - i * 0.1) for i, item in enumerate(new)]
    )
    context = home()

    result = rules_apply(
        context=context, ranked=items, k=5, rules=[rule("boost_freshness", half_life_days=30, weight=0.5)]
    )

    assert set(ids(result.items)) == {item.pk for item in new}
    newest = result.items[0]
    assert newest.item_id == new[0].pk
    age_days = (context.now - new[0].published_at).total_seconds() / 86400
    assert newest.score == pytest.approx(9.0 * (1 + 0.5 * 0.5 ** (age_days / 30)))
    assert newest.notes[0].startswith("fresh: +50%")


def test_demote_recently_shown_items():
    profile = UserProfileFactory()
    shown, other = ItemFactory(), ItemFactory()
    items = ranked([(shown, 2.0), (other, 1.5)])
    impressions_record(
        profile_id=profile.pk, item_ids=[shown.pk], surface="home", shown_at=timezone.now() - timedelta(hours=2)
    )

    within = rules_apply(
        context=home(profile), ranked=items, k=2, rules=[rule("demote_shown", within_hours=24, factor=0.5)]
    )
    outside = rules_apply(
        context=home(profile), ranked=items, k=2, rules=[rule("demote_shown", within_hours=1, factor=0.5)]
    )

    assert ids(within.items) == [other.pk, shown.pk]
    assert within.items[1].score == pytest.approx(1.0)
    assert within.items[1].notes == ["demoted: shown 2 h ago"]
    assert ids(outside.items) == [shown.pk, other.pk]


# Diversity -------------------------------------------------------------------------------------


def _genre_catalogue():
    """30 items over 6 genres, the best-scored ones mostly Drama, some with two genres."""
    genres = ["Drama", "Comedy", "Horror", "Action", "Western", "Musical"]
    items, pairs = [], []
    for i in range(30):
        own = ["Drama"] if i < 12 else [genres[i % 6]]
        if i % 7 == 3:
            own.append("Comedy")  # several genres: counts for each
        item = ItemFactory(features=[("genre", genre) for genre in own])
        items.append((item, set(own)))
        pairs.append((item, 100.0 - i))
    return items, ranked(pairs)


def test_max_two_per_genre_in_the_top_10():
    items, ranked_list = _genre_catalogue()
    genres_of = {item.pk: own for item, own in items}
    before = Counter(genre for entry in ranked_list[:10] for genre in genres_of[entry.item_id])
    assert before["Drama"] == 10

    result = rules_apply(
        context=home(),
        ranked=ranked_list,
        k=10,
        rules=[rule("diversity_feature_cap", feature_type="genre", max_per_value=2)],
    )

    after = Counter(genre for entry in result.items for genre in genres_of[entry.item_id])
    assert len(result.items) == 10
    assert max(after.values()) <= 2
    assert result.items[0].item_id == ranked_list[0].item_id  # the best item keeps its place
    scores = [entry.score for entry in result.items]
    assert scores == sorted(scores, reverse=True)  # the picks are the best allowed, in order


def test_feature_cap_never_breaks_the_cap_when_too_few_items_satisfy_it(planted_catalog):
    items = descending(all_planted(planted_catalog))  # only two genres: at most 4 items can qualify
    strict = rules_apply(
        context=home(), ranked=items, k=10, rules=[rule("diversity_feature_cap", feature_type="genre", max_per_value=2)]
    )
    filled = rules_apply(
        context=home(),
        ranked=items,
        k=10,
        rules=[rule("diversity_feature_cap", feature_type="genre", max_per_value=2, fill_when_short=True)],
    )
    assert len(strict.items) == 4
    assert len(filled.items) == 10


def test_mmr_selection_order_on_plain_vectors():
    relevance = np.array([1.0, 0.99, 0.5])
    embeddings = np.array([[1.0, 0.0], [1.0, 0.01], [0.0, 1.0]], dtype=np.float32)  # 0 and 1 are near-duplicates
    assert mmr_order(relevance, embeddings, 2, lam=1.0) == [0, 1]
    assert mmr_order(relevance, embeddings, 2, lam=0.5) == [0, 2]


def _mean_pairwise_cosine(embeddings: list[np.ndarray]) -> float:
    unit = np.stack(embeddings) / np.linalg.norm(np.stack(embeddings), axis=1, keepdims=True)
    similarity = unit @ unit.T
    n = len(unit)
    return float((similarity.sum() - n) / (n * (n - 1)))


def test_mmr_lowers_pairwise_similarity_of_the_top_k(planted_catalog):
    from recommender.rerank.selectors import item_embeddings_fetch
    from recommender.vectors import store
    from recommender.vectors.base import AnnFilters
    from recommender.vectors.pgvector import PgvectorIndex
    from tests.recommender.test_training import train_inline

    version = train_inline()
    profile = planted_catalog.profiles_by_cluster[0][0]
    query = store.user_vector_fetch(version_id=version.pk, profile_id=profile.pk)
    pairs = PgvectorIndex(version.pk, exact=True).user_neighbours(query, k=60, filters=AnnFilters(active_only=False))
    items = ranked([(Item(pk=item_id), score) for item_id, score in pairs])
    embeddings = item_embeddings_fetch(vector_index=PgvectorIndex(version.pk), item_ids=ids(items))
    context = home(profile, version_id=version.pk)

    plain = rules_apply(context=context, ranked=items, k=10, rules=[])
    diverse = rules_apply(context=context, ranked=items, k=10, rules=[rule("diversity_mmr", **{"lambda": 0.3})])

    plain_similarity = _mean_pairwise_cosine([embeddings[i] for i in ids(plain.items)])
    diverse_similarity = _mean_pairwise_cosine([embeddings[i] for i in ids(diverse.items)])
    assert diverse_similarity < plain_similarity - 0.05
    assert diverse.items[0].item_id == plain.items[0].item_id  # the most relevant is picked first
    assert any(planted_catalog.cluster_of_item(i) == 1 for i in ids(diverse.items))  # pulled from deep down
    assert all(planted_catalog.cluster_of_item(i) == 0 for i in ids(plain.items))


# Fairness --------------------------------------------------------------------------------------


def test_provider_cap_limits_each_providers_share():
    providers = ["big"] * 12 + ["a", "b", "c", "d", "e", "f", "g", "h"]
    items = descending([ItemFactory(provider=provider) for provider in providers])
    result = rules_apply(context=home(), ranked=items, k=10, rules=[rule("fairness_provider_cap", max_percent=30)])

    shown = Counter(Item.objects.get(pk=i).provider for i in ids(result.items))
    assert provider_slots(30, 10) == 3
    assert shown["big"] == 3
    assert len(result.items) == 10
    assert max(shown.values()) <= 3


def test_long_tail_minimum(planted_catalog):
    items = all_planted(planted_catalog)
    popularity = Counter(Feedback.objects.values_list("item_id", flat=True))
    by_popularity = sorted(items, key=lambda item: (-popularity[item.pk], item.pk))
    counts = np.array([popularity[item.pk] for item in items])
    threshold = int(np.percentile(counts, 50, method="inverted_cdf"))  # = SQL percentile_disc
    assert long_tail_threshold(percentile=50, use_cache=False) == threshold
    tail = {item.pk for item in items if popularity[item.pk] <= threshold}
    ranked_list = descending(by_popularity)
    assert sum(i in tail for i in ids(ranked_list[:10])) == 0  # the head fills the plain top 10

    result = rules_apply(
        context=home(), ranked=ranked_list, k=10, rules=[rule("fairness_long_tail", min_percent=30, percentile=50)]
    )

    top = ids(result.items)
    assert sum(i in tail for i in top) == 3
    assert top[:7] == ids(ranked_list[:7])  # the lowest head items made room
    best_tail = [i for i in ids(ranked_list) if i in tail][:3]
    assert top[7:] == best_tail
    assert all(entry.notes == ["promoted: long tail"] for entry in result.items[7:])


# Pins ------------------------------------------------------------------------------------------


def test_pin_puts_an_uncandidated_item_at_its_slot_only_within_its_period():
    items = descending(ItemFactory.create_batch(6))
    pinned = ItemFactory(external_id="promo-1")
    now = timezone.now()
    current = rule("pin", item="promo-1", slot=2)
    current.starts_at, current.ends_at = now - timedelta(hours=1), now + timedelta(hours=1)
    future = rule("pin", item="promo-1", slot=2)
    future.starts_at = now + timedelta(days=1)
    past = rule("pin", item="promo-1", slot=2)
    past.ends_at = now - timedelta(minutes=1)

    within = rules_apply(context=home(), ranked=items, k=5, rules=[current])
    before_period = rules_apply(context=home(), ranked=items, k=5, rules=[future])
    after_period = rules_apply(context=home(), ranked=items, k=5, rules=[past])

    assert ids(within.items) == [items[0].item_id, pinned.pk, *ids(items[1:4])]
    assert within.items[1].notes == ["pinned at slot 2"]
    assert within.items[1].sources == {"pin": 1.0}
    assert ids(before_period.items) == ids(items[:5]) == ids(after_period.items)
    assert before_period.trace == [] == after_period.trace


def test_pin_moves_an_existing_candidate_and_skips_inactive_items():
    items = ItemFactory.create_batch(6)
    ItemFactory(external_id="gone", is_active=False)
    ranked_list = descending(items)
    moved = rules_apply(context=home(), ranked=ranked_list, k=6, rules=[rule("pin", item=items[4].external_id, slot=1)])
    inactive = rules_apply(context=home(), ranked=ranked_list, k=6, rules=[rule("pin", item="gone", slot=1)])
    assert ids(moved.items) == [items[4].pk, items[0].pk, items[1].pk, items[2].pk, items[3].pk, items[5].pk]
    assert ids(inactive.items) == ids(ranked_list)
    assert "inactive" in inactive.trace[0].summary
