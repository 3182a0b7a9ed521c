"""Impressions written behind the response: queued outside a transaction, written in one batch.

Transactional tests: the writer's thread has its own connection and sees only committed rows.
"""

from __future__ import annotations

import time

import pytest

from catalog.models import Item, UserProfile
from recommender.rerank.models import Impression
from recommender.serving.impressions import ImpressionWriter
from tests.factories import ItemFactory, UserProfileFactory


@pytest.fixture
def shown(transactional_db):
    profile = UserProfileFactory()
    items = ItemFactory.create_batch(4)
    return profile, items


def wait_written(writer: ImpressionWriter, expected: int, *, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while Impression.objects.count() < expected and time.monotonic() < deadline:
        time.sleep(0.05)
    assert Impression.objects.count() == expected, f"{writer.written} written, {writer.pending()} pending"


def test_outside_a_transaction_impressions_are_queued_then_written_by_the_thread(shown, settings):
    settings.IMPRESSIONS_FLUSH_SECONDS = 0.05
    profile, items = shown
    writer = ImpressionWriter()
    writer.record(profile_id=profile.pk, item_ids=[items[0].pk, items[1].pk, items[0].pk], surface="home")
    writer.record(profile_id=profile.pk, item_ids=[items[2].pk], surface="home")
    wait_written(writer, 3)  # duplicates within one request count once
    assert set(Impression.objects.values_list("item_id", flat=True)) == {items[0].pk, items[1].pk, items[2].pk}
    assert set(Impression.objects.values_list("surface", flat=True)) == {"home"}


def test_flush_writes_what_is_queued_now_and_skips_rows_of_deleted_items(shown, settings):
    settings.IMPRESSIONS_FLUSH_SECONDS = 3600  # the thread never wakes during the test
    profile, items = shown
    writer = ImpressionWriter()
    writer.record(profile_id=profile.pk, item_ids=[item.pk for item in items], surface="home")
    assert writer.pending() == 4 and Impression.objects.count() == 0
    Item.objects.filter(pk=items[3].pk).delete()
    assert writer.flush() == 3
    assert writer.pending() == 0 and Impression.objects.count() == 3


def test_a_full_buffer_drops_its_oldest_rows(shown, settings):
    settings.IMPRESSIONS_FLUSH_SECONDS = 3600
    settings.IMPRESSIONS_BUFFER_ROWS = 3
    profile, items = shown
    writer = ImpressionWriter()
    writer.record(profile_id=profile.pk, item_ids=[items[0].pk, items[1].pk], surface="home")
    writer.record(profile_id=profile.pk, item_ids=[items[2].pk, items[3].pk], surface="home")
    assert (writer.pending(), writer.dropped) == (3, 1)
    writer.flush()
    assert set(Impression.objects.values_list("item_id", flat=True)) == {items[1].pk, items[2].pk, items[3].pk}


def test_a_refused_batch_is_dropped_and_logged_not_raised(shown, settings, caplog):
    settings.IMPRESSIONS_FLUSH_SECONDS = 3600
    profile, items = shown
    writer = ImpressionWriter()
    writer.record(profile_id=profile.pk, item_ids=[items[0].pk], surface="home")
    UserProfile.objects.filter(pk=profile.pk).delete()  # rows of a deleted profile are skipped, not an error
    assert writer.flush() == 0
    other = UserProfileFactory()
    writer.record(profile_id=other.pk, item_ids=[items[1].pk], surface="a-surface-too-long-for-its-column")
    assert writer.flush() == 0
    assert writer.dropped == 1 and "impressions.flush_failed" in caplog.text


@pytest.mark.django_db
def test_inside_a_transaction_the_write_is_immediate_and_joins_it():
    profile = UserProfileFactory()
    items = ItemFactory.create_batch(2)
    writer = ImpressionWriter()
    writer.record(profile_id=profile.pk, item_ids=[item.pk for item in items], surface="home")
    assert writer.pending() == 0 and Impression.objects.filter(profile=profile).count() == 2
