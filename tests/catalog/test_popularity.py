"""Item.popularity is kept exact by the statement-level triggers of migration 0005."""

import pytest
from django.db.models import Count, F, Q

from catalog.models import Feedback, Item
from catalog.services import feedback_delete, feedback_record, feedback_record_batch
from tests.factories import ItemFactory, UserProfileFactory

pytestmark = pytest.mark.django_db


def counted(item: Item) -> int:
    """What the column must equal: in-force rows, counted the slow way."""
    return Feedback.objects.filter(Q(is_current=True) | Q(is_current__isnull=True), item=item).count()


def test_ratings_events_re_ratings_and_deletions_keep_the_count_exact():
    item, other = ItemFactory(), ItemFactory()
    alice, bob = UserProfileFactory(), UserProfileFactory()

    feedback_record(profile=alice, item=item, kind="rating", value=4)
    feedback_record(profile=bob, item=item, kind="view")
    feedback_record(profile=bob, item=item, kind="view")
    rerating = feedback_record(profile=alice, item=item, kind="rating", value=2)  # supersedes: net zero
    feedback_record(profile=alice, item=other, kind="like")
    feedback_record(profile=alice, item=other, kind="dislike")  # replaces the like: net zero

    item.refresh_from_db()
    other.refresh_from_db()
    assert (item.popularity, other.popularity) == (3, 1)
    assert (item.popularity, other.popularity) == (counted(item), counted(other))

    feedback_delete(feedback=rerating)
    item.refresh_from_db()
    assert item.popularity == counted(item) == 2


def test_a_batch_touching_many_items_updates_each_once():
    items = ItemFactory.create_batch(3)
    profile = UserProfileFactory()
    feedback_record_batch(
        profile=profile,
        events=[
            {"item": items[0], "kind": "view"},
            {"item": items[0], "kind": "click"},
            {"item": items[1], "kind": "rating", "value": 5},
            {"item": items[2], "kind": "purchase"},
        ],
    )
    assert [Item.objects.get(pk=item.pk).popularity for item in items] == [2, 1, 1]


def test_catalogue_sorts_by_the_stored_popularity(client):
    _quiet, busy = ItemFactory(title="Quiet"), ItemFactory(title="Busy")
    for profile in UserProfileFactory.create_batch(3):
        feedback_record(profile=profile, item=busy, kind="view")
    response = client.get("/catalogue/?sort=popular")
    html = response.content.decode()
    assert html.index("Busy") < html.index("Quiet")


@pytest.mark.movielens
def test_bulk_import_counts_match_a_recount(movielens_100k_dir):
    from django.core.management import call_command

    call_command("import_movielens", str(movielens_100k_dir), no_progress=True)
    mismatched = Item.objects.annotate(
        recount=Count("feedback", filter=Q(feedback__is_current=True) | Q(feedback__is_current__isnull=True))
    ).exclude(popularity=F("recount"))
    assert mismatched.count() == 0
    assert Item.objects.order_by("-popularity").first().title == "Star Wars (1977)"
