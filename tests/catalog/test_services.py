"""Catalogue write services on the real PostgreSQL: validation, history, idempotency, races, signals."""

import datetime as dt
import threading

import pytest
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from catalog import signals
from catalog.models import Feature, Feedback, Item, ItemFeature, UserProfile
from catalog.services import (
    FeedbackBatchError,
    feedback_delete,
    feedback_record,
    feedback_record_batch,
    item_create,
    item_update,
    user_profile_create,
    user_profile_get_or_create_for_user,
    user_profile_update,
)
from tests.factories import FeedbackFactory, ItemFactory, UserFactory, UserProfileFactory, feedback_kinds_ensure

pytestmark = pytest.mark.django_db


@pytest.fixture
def profile():
    return UserProfileFactory()


@pytest.fixture
def item():
    return ItemFactory()


def _counts():
    return Feedback.objects.count(), Item.objects.count(), UserProfile.objects.count(), Feature.objects.count()


# ---------------------------------------------------------------- items and profiles


def test_item_create_stores_features_in_every_spelling():
    item = item_create(
        external_id=" m1 ",
        title="Toy Story",
        features=[("genre", "Comedy", 1.0), ("genre", "Animation"), {"type": "year", "value": 1995}],
    )
    assert item.external_id == "m1"
    links = {
        (link.feature.type, link.feature.value, link.weight) for link in item.feature_links.select_related("feature")
    }
    assert links == {("genre", "Comedy", 1.0), ("genre", "Animation", 1.0), ("year", "1995", 1.0)}

    other = item_create(external_id="m2", title="Heat", features={"genre": ["Comedy", "Crime"], "tag": {"heist": 0.5}})
    assert Feature.objects.filter(subject="item", type="genre", value="Comedy").count() == 1  # shared, not duplicated
    assert {(link.feature.value, link.weight) for link in other.feature_links.select_related("feature")} == {
        ("Comedy", 1.0),
        ("Crime", 1.0),
        ("heist", 0.5),
    }


def test_item_create_rejects_empty_external_id_and_writes_nothing():
    before = _counts()
    with pytest.raises(ValidationError) as error:
        item_create(external_id="   ", title="No id", features=[("genre", "Comedy")])
    assert "external_id" in error.value.message_dict
    assert _counts() == before


def test_item_create_rejects_bad_feature_and_writes_nothing():
    before = _counts()
    with pytest.raises(ValidationError) as error:
        item_create(external_id="m1", title="Bad", features=[("genre", "Comedy"), ("not a slug!", "x")])
    assert "features" in error.value.message_dict
    assert _counts() == before


def test_item_update_changes_fields_and_replaces_features(django_capture_on_commit_callbacks):
    item = item_create(external_id="m1", title="Old", features=[("genre", "Comedy")])
    received = []
    signals.item_changed.connect(lambda **kw: received.append(kw), weak=False, dispatch_uid="t-item")
    try:
        with django_capture_on_commit_callbacks(execute=True):
            item_update(item=item, title="New", features=[("genre", "Drama", 0.7)])
    finally:
        signals.item_changed.disconnect(dispatch_uid="t-item")
    item.refresh_from_db()
    assert item.title == "New"
    assert list(ItemFeature.objects.filter(item=item).values_list("feature__value", "weight")) == [("Drama", 0.7)]
    assert received == [{"signal": signals.item_changed, "sender": Item, "item_id": item.pk, "created": False}]
    with pytest.raises(TypeError):
        item_update(item=item, created_at=timezone.now())


@pytest.mark.parametrize("weight", [-0.5, 1e7, 1e300])
def test_a_feature_weight_training_would_refuse_is_refused_at_the_door(weight):
    # Training builds a non-negative float32 matrix; one such stored weight would fail every run.
    with pytest.raises(ValidationError, match="between 0 and 1e\\+06"):
        item_create(external_id="m1", title="x", features=[("genre", "Comedy", weight)])
    assert Item.objects.count() == 0
    item = ItemFactory()
    feature = Feature.objects.create(subject="item", type="genre", value="Comedy")
    with pytest.raises(IntegrityError), transaction.atomic():  # any other writer meets the database's check
        ItemFeature.objects.create(item=item, feature=feature, weight=weight)


def test_user_profile_create_makes_user_with_unusable_password():
    profile = user_profile_create(external_id="196", features={"age": "25-34", "gender": "M"})
    assert profile.user.username == "196"
    assert not profile.user.has_usable_password()
    assert sorted(profile.features.values_list("type", "value")) == [("age", "25-34"), ("gender", "M")]
    # An external id that is not a valid username, or that is taken, still gets a username.
    odd = user_profile_create(external_id="a b/c")
    assert odd.user.username.startswith("a-b-c-")
    with pytest.raises(ValidationError) as error:
        user_profile_create(external_id="196")
    assert "external_id" in error.value.message_dict


def test_user_profile_get_or_create_for_user_is_stable():
    user = UserFactory()
    first = user_profile_get_or_create_for_user(user=user)
    assert first.external_id == f"u-{user.pk}"
    assert user_profile_get_or_create_for_user(user=user).pk == first.pk
    assert UserProfile.objects.filter(user=user).count() == 1


def test_user_profile_update_replaces_features(profile):
    user_profile_update(profile=profile, features=[("age", "18-24")])
    user_profile_update(profile=profile, external_id="renamed", features=[("age", "25-34")])
    profile.refresh_from_db()
    assert profile.external_id == "renamed"
    assert list(profile.features.values_list("value", flat=True)) == ["25-34"]


# ---------------------------------------------------------------- feedback validation


def test_rating_out_of_range_is_a_clear_error_on_value(profile, item):
    with pytest.raises(ValidationError) as error:
        feedback_record(profile=profile, item=item, kind="rating", value=7)
    assert error.value.message_dict == {"value": ["A rating must be between 0.5 and 5; got 7."]}
    assert Feedback.objects.count() == 0


@pytest.mark.parametrize("value", [float("nan"), float("inf"), "4", True, 1e12])
def test_non_numeric_or_absurd_values_are_rejected(profile, item, value):
    with pytest.raises(ValidationError) as error:
        feedback_record(profile=profile, item=item, kind="view", value=value)
    assert "value" in error.value.message_dict
    assert Feedback.objects.count() == 0


def test_unknown_kind_names_the_known_kinds(profile, item):
    with pytest.raises(ValidationError) as error:
        feedback_record(profile=profile, item=item, kind="star")
    assert "rating" in error.value.message_dict["kind"][0]


def test_value_defaults_to_the_kind_default(profile, item):
    assert feedback_record(profile=profile, item=item, kind="rating").value == 5.0
    assert feedback_record(profile=profile, item=item, kind="view").value == 1.0


# ---------------------------------------------------------------- history and current state


def test_rerating_supersedes_and_keeps_history(profile, item):
    start = timezone.now()
    first = feedback_record(profile=profile, item=item, kind="rating", value=2, created_at=start)
    second = feedback_record(
        profile=profile, item=item, kind="rating", value=4, created_at=start + dt.timedelta(seconds=1)
    )
    rows = list(Feedback.objects.filter(user=profile, item=item, kind="rating").order_by("created_at"))
    assert [(r.value, r.is_current) for r in rows] == [(2.0, False), (4.0, True)]
    assert (first.pk, second.pk) == (rows[0].pk, rows[1].pk)


def test_late_older_event_is_kept_as_history_without_taking_over(profile, item):
    now = timezone.now()
    feedback_record(profile=profile, item=item, kind="rating", value=4, created_at=now)
    late = feedback_record(profile=profile, item=item, kind="rating", value=1, created_at=now - dt.timedelta(days=1))
    assert late.is_current is False
    assert Feedback.objects.get(user=profile, item=item, is_current=True).value == 4.0


def test_like_and_dislike_supersede_each_other(profile, item):
    feedback_record(profile=profile, item=item, kind="like")
    feedback_record(profile=profile, item=item, kind="dislike")
    current = Feedback.objects.filter(user=profile, item=item, is_current=True)
    assert list(current.values_list("kind", flat=True)) == ["dislike"]
    assert Feedback.objects.filter(user=profile, item=item, kind="like", is_current=False).count() == 1
    # A rating is independent of like/dislike.
    feedback_record(profile=profile, item=item, kind="rating", value=3)
    assert sorted(current.values_list("kind", flat=True)) == ["dislike", "rating"]


def test_repeatable_kinds_are_not_stateful(profile, item):
    rows = [feedback_record(profile=profile, item=item, kind="view") for _ in range(3)]
    assert [r.is_current for r in rows] == [None, None, None]
    assert Feedback.objects.filter(kind="view").count() == 3


def test_repeated_idempotency_key_writes_nothing(profile, item):
    first = feedback_record(profile=profile, item=item, kind="rating", value=3, idempotency_key="k-1")
    again = feedback_record(profile=profile, item=item, kind="rating", value=3, idempotency_key="k-1")
    assert (first.replayed, again.replayed) == (False, True)
    assert again.pk == first.pk
    assert Feedback.objects.count() == 1
    other_item = ItemFactory()
    with pytest.raises(ValidationError) as error:
        feedback_record(profile=profile, item=other_item, kind="rating", value=3, idempotency_key="k-1")
    assert "idempotency_key" in error.value.message_dict
    assert Feedback.objects.count() == 1


def test_feedback_delete_of_current_rating_restores_nothing(profile, item):
    now = timezone.now()
    feedback_record(profile=profile, item=item, kind="rating", value=2, created_at=now)
    current = feedback_record(profile=profile, item=item, kind="rating", value=5, created_at=now + dt.timedelta(1))
    feedback_delete(feedback=current)
    rows = list(Feedback.objects.filter(user=profile, item=item).values_list("value", "is_current"))
    assert rows == [(2.0, False)]


# ---------------------------------------------------------------- batch


def test_batch_with_bad_event_three_writes_nothing_and_names_it(profile):
    items = ItemFactory.create_batch(3)
    events = [
        {"item": items[0].external_id, "kind": "rating", "value": 4},
        {"item": items[1].external_id, "kind": "view"},
        {"item": items[2].external_id, "kind": "rating", "value": 7},
        {"item": "no-such-item", "kind": "like"},
    ]
    before = _counts()
    with pytest.raises(FeedbackBatchError) as error:
        feedback_record_batch(profile=profile, events=events)
    assert error.value.event_errors == {
        2: {"value": ["A rating must be between 0.5 and 5; got 7."]},
        3: {"item": ["Unknown item 'no-such-item'."]},
    }
    assert error.value.message_dict["events.2.value"] == ["A rating must be between 0.5 and 5; got 7."]
    assert _counts() == before


def test_batch_error_found_while_writing_rolls_back_everything(profile):
    items = ItemFactory.create_batch(2)
    feedback_record(profile=profile, item=items[0], kind="view", idempotency_key="used")
    before = _counts()
    with pytest.raises(FeedbackBatchError) as error:
        feedback_record_batch(
            profile=profile,
            events=[
                {"item": items[1].external_id, "kind": "rating", "value": 4},
                {"item": items[1].external_id, "kind": "click", "idempotency_key": "used"},  # key of another event
            ],
        )
    assert set(error.value.event_errors) == {1}
    assert _counts() == before


def test_batch_records_in_order_for_named_users():
    profiles = UserProfileFactory.create_batch(2)
    item = ItemFactory()
    rows = feedback_record_batch(
        events=[
            {"user": profiles[0].external_id, "item": item.external_id, "kind": "rating", "value": 1},
            {"user": profiles[1].external_id, "item": item, "kind": "like"},
        ]
    )
    assert [(r.user_id, r.kind_id, r.is_current) for r in rows] == [
        (profiles[0].pk, "rating", True),
        (profiles[1].pk, "like", True),
    ]
    with pytest.raises(FeedbackBatchError) as error:
        feedback_record_batch(events=[{"item": item.external_id, "kind": "view"}])
    assert error.value.event_errors[0].keys() == {"user"}


def test_empty_external_ids_in_batch_are_field_errors(profile, item):
    with pytest.raises(FeedbackBatchError) as error:
        feedback_record_batch(profile=profile, events=[{"user": " ", "item": "", "kind": "view"}])
    assert error.value.event_errors[0] == {
        "user": ["The user may not be empty."],
        "item": ["The item may not be empty."],
    }
    assert Feedback.objects.count() == 0


# ---------------------------------------------------------------- signals


def test_feedback_signal_fires_after_commit_only(profile, item, django_capture_on_commit_callbacks):
    received = []
    signals.feedback_recorded.connect(lambda **kw: received.append(kw), weak=False, dispatch_uid="t-feedback")
    try:
        with django_capture_on_commit_callbacks(execute=True) as callbacks:
            row = feedback_record(profile=profile, item=item, kind="like")
            assert received == []  # still inside the transaction
        assert len(callbacks) == 1
        assert received == [
            {
                "signal": signals.feedback_recorded,
                "sender": Feedback,
                "profile_id": profile.pk,
                "item_id": item.pk,
                "kind": "like",
                "feedback_id": row.pk,
            }
        ]

        received.clear()
        with (
            django_capture_on_commit_callbacks(execute=True) as callbacks,
            pytest.raises(RuntimeError),
            transaction.atomic(),
        ):
            feedback_record(profile=profile, item=item, kind="view")
            raise RuntimeError("roll back")
        assert callbacks == [] and received == []

        with django_capture_on_commit_callbacks(execute=True):
            feedback_record(profile=profile, item=item, kind="like", idempotency_key="x")
            received.clear()
            feedback_record(profile=profile, item=item, kind="like", idempotency_key="x")  # replay: no signal
        assert len(received) == 1
    finally:
        signals.feedback_recorded.disconnect(dispatch_uid="t-feedback")


# ---------------------------------------------------------------- concurrency (real threads, real connections)


def _in_threads(count, work):
    barrier = threading.Barrier(count)
    errors = []

    def run(index):
        try:
            barrier.wait(timeout=10)
            work(index)
        except Exception as error:  # reported to the test below, never swallowed
            errors.append(error)
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert errors == []


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("existing", [False, True], ids=["no-current-row", "with-current-row"])
def test_concurrent_reratings_leave_exactly_one_current_row(existing):
    feedback_kinds_ensure()
    profile, item = UserProfileFactory(), ItemFactory()
    if existing:
        feedback_record(profile=profile, item=item, kind="rating", value=1)
    for _ in range(4):
        _in_threads(3, lambda i: feedback_record(profile=profile, item=item, kind="rating", value=2 + i))
        current = Feedback.objects.filter(user=profile, item=item, kind="rating", is_current=True)
        assert current.count() == 1
    assert Feedback.objects.filter(user=profile, item=item, kind="rating").count() == 12 + int(existing)


@pytest.mark.django_db(transaction=True)
def test_current_row_written_outside_the_service_is_retried_and_superseded(caplog):
    """Writer A bypasses the service (as the admin or a bulk import may) and holds an uncommitted
    current row; B's insert waits on the partial unique index, fails once A commits, retries,
    and supersedes A's row."""
    feedback_kinds_ensure()
    profile, item = UserProfileFactory(), ItemFactory()
    a_inserted, b_started = threading.Event(), threading.Event()
    results = {}

    def writer_a():
        with transaction.atomic():
            results["a"] = FeedbackFactory(user=profile, item=item, kind_code="rating", value=2)
            a_inserted.set()
            b_started.wait(timeout=10)
            threading.Event().wait(1.0)  # give B time to block on the index before A commits

    def writer_b():
        a_inserted.wait(timeout=10)
        b_started.set()
        results["b"] = feedback_record(profile=profile, item=item, kind="rating", value=4)

    with caplog.at_level("INFO", logger="catalog.services"):
        _in_threads(2, lambda i: writer_a() if i == 0 else writer_b())
    rows = dict(Feedback.objects.filter(user=profile, item=item).values_list("pk", "is_current"))
    assert rows == {results["a"].pk: False, results["b"].pk: True}
    assert any("feedback.record.retry" in message for message in caplog.messages)


@pytest.mark.django_db(transaction=True)
def test_concurrent_same_idempotency_key_stores_one_row():
    feedback_kinds_ensure()
    profile, item = UserProfileFactory(), ItemFactory()
    results = []
    _in_threads(
        3, lambda i: results.append(feedback_record(profile=profile, item=item, kind="view", idempotency_key="same"))
    )
    assert Feedback.objects.count() == 1
    assert len({r.pk for r in results}) == 1
    assert sorted(r.replayed for r in results) == [False, True, True]


@pytest.mark.django_db(transaction=True)
def test_user_profile_get_or_create_for_user_race():
    user = get_user_model().objects.create(username="racer")
    results = []
    _in_threads(3, lambda i: results.append(user_profile_get_or_create_for_user(user=user)))
    assert len({p.pk for p in results}) == 1
    assert UserProfile.objects.filter(user=user).count() == 1
