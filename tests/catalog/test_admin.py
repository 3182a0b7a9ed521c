"""The catalogue admin pages load, with data, for a staff superuser."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from catalog import signals
from catalog.models import Feature, Feedback, FeedbackKind, Item, UserProfile
from catalog.services import feedback_record
from tests.factories import FeedbackFactory, ItemFactory, UserProfileFactory

pytestmark = pytest.mark.django_db

CATALOG_MODELS = [Feature, Item, UserProfile, FeedbackKind, Feedback]


@pytest.fixture
def catalogue():
    profile = UserProfileFactory(features=[("age", "25-34")])
    item = ItemFactory(features=[("genre", "Comedy")])
    feedback_record(profile=profile, item=item, kind="rating", value=4, idempotency_key="admin-test")
    FeedbackFactory.create_batch(30, user=profile, item=item)
    return profile, item


@pytest.mark.parametrize("model", CATALOG_MODELS, ids=lambda m: m.__name__)
def test_changelist_loads(admin_client, catalogue, model):
    url = reverse(f"admin:catalog_{model._meta.model_name}_changelist")
    response = admin_client.get(url)
    assert response.status_code == 200
    assert response.context["cl"].result_count > 0


@pytest.mark.parametrize("model", CATALOG_MODELS, ids=lambda m: m.__name__)
def test_change_page_loads(admin_client, catalogue, model):
    obj = model.objects.first()
    response = admin_client.get(reverse(f"admin:catalog_{model._meta.model_name}_change", args=[obj.pk]))
    assert response.status_code == 200


def test_feedback_changelist_filters_and_search(admin_client, catalogue):
    profile, _ = catalogue
    url = reverse("admin:catalog_feedback_changelist")
    assert admin_client.get(url, {"kind__code__exact": "rating"}).context["cl"].result_count == 1
    assert admin_client.get(url, {"is_current__exact": "1"}).context["cl"].result_count == 1
    assert admin_client.get(url, {"q": profile.external_id}).context["cl"].result_count == 31
    assert admin_client.get(url, {"q": "admin-test"}).context["cl"].result_count == 1


def test_feedback_changelist_query_count_does_not_grow_with_rows(admin_client, catalogue):
    url = reverse("admin:catalog_feedback_changelist")
    with CaptureQueriesContext(connection) as few:
        admin_client.get(url)
    FeedbackFactory.create_batch(40)  # more users and items on the page
    with CaptureQueriesContext(connection) as many:
        admin_client.get(url)
    assert len(many) == len(few)


def test_feedback_is_read_only_but_deletable(admin_client, catalogue, django_capture_on_commit_callbacks):
    assert admin_client.get(reverse("admin:catalog_feedback_add")).status_code == 403
    rating = Feedback.objects.get(kind="rating")
    received = []
    signals.feedback_deleted.connect(lambda **kw: received.append(kw), weak=False, dispatch_uid="t-admin")
    try:
        with django_capture_on_commit_callbacks(execute=True):
            response = admin_client.post(reverse("admin:catalog_feedback_delete", args=[rating.pk]), {"post": "yes"})
    finally:
        signals.feedback_deleted.disconnect(dispatch_uid="t-admin")
    assert response.status_code == 302
    assert not Feedback.objects.filter(pk=rating.pk).exists()
    assert [(r["kind"], r["was_current"]) for r in received] == [("rating", True)]


def test_feedback_kind_weight_is_editable_from_the_list(admin_client):
    url = reverse("admin:catalog_feedbackkind_changelist")
    kinds = list(FeedbackKind.objects.order_by("code"))
    data = {"form-TOTAL_FORMS": len(kinds), "form-INITIAL_FORMS": len(kinds), "_save": "Save"}
    for index, kind in enumerate(kinds):
        data[f"form-{index}-code"] = kind.code
        data[f"form-{index}-weight"] = 3.0 if kind.code == "view" else kind.weight
    response = admin_client.post(url, data)
    assert response.status_code == 302, response.content[:2000]
    assert FeedbackKind.objects.get(code="view").weight == 3.0


def test_item_saved_in_admin_announces_the_change(admin_client, django_capture_on_commit_callbacks):
    received = []
    signals.item_changed.connect(lambda **kw: received.append(kw), weak=False, dispatch_uid="t-admin-item")
    data = {
        "external_id": "adm-1",
        "title": "Made in admin",
        "description": "",
        "provider": "",
        "is_active": "on",
        "metadata": "{}",
        "published_at_0": "",
        "published_at_1": "",
        "feature_links-TOTAL_FORMS": "0",
        "feature_links-INITIAL_FORMS": "0",
    }
    try:
        with django_capture_on_commit_callbacks(execute=True):
            response = admin_client.post(reverse("admin:catalog_item_add"), data)
    finally:
        signals.item_changed.disconnect(dispatch_uid="t-admin-item")
    assert response.status_code == 302, response.content[:3000]
    item = Item.objects.get(external_id="adm-1")
    assert [(r["item_id"], r["created"]) for r in received] == [(item.pk, True)]
