"""Recommendation pages: homepage list with explanations and fallback notice, related panel, htmx refresh."""

from __future__ import annotations

import pytest
from django.urls import reverse

from catalog.models import Feedback
from tests.factories import UserProfileFactory
from tests.recommender.test_training import train_inline

pytestmark = pytest.mark.django_db


def test_signed_in_home_shows_recommendations_with_explanations_and_badges(client, planted_catalog):
    train_inline()
    profile = planted_catalog.profiles_by_cluster[0][0]
    client.force_login(profile.user)
    page = client.get(reverse("home")).content.decode()
    assert "Recommended for you" in page
    assert "Because you liked Cluster 0 item" in page
    assert 'class="badge accent"' in page
    assert "data-fallback-reason" not in page


def test_anonymous_and_modelless_homes_say_they_show_popular_and_new(client, planted_catalog):
    page = client.get(reverse("home")).content.decode()
    assert 'data-fallback-reason="anonymous"' in page and "Popular right now" in page and "Cluster" in page
    profile = planted_catalog.profiles_by_cluster[0][0]
    client.force_login(profile.user)
    page = client.get(reverse("home")).content.decode()
    assert 'data-fallback-reason="no_active_model"' in page and "Cluster" in page


def test_item_page_loads_the_related_panel_and_refreshes_it_after_a_rating(client, planted_catalog):
    item = planted_catalog.items_by_cluster[0][0]
    page = client.get(reverse("item-detail", args=[item.external_id])).content.decode()
    panel_url = reverse("item-related-panel", args=[item.external_id])
    assert f'hx-get="{panel_url}"' in page
    assert "closest('#rating-widget')" in page
    assert f'<a href="{panel_url}">' in page  # without JavaScript


def test_related_panel_updates_after_rating_on_the_item_page(
    client, planted_catalog, django_capture_on_commit_callbacks
):
    train_inline()
    profile = planted_catalog.profiles_by_cluster[0][1]
    client.force_login(profile.user)
    item = planted_catalog.items_by_cluster[1][0]
    panel_url = reverse("item-related-panel", args=[item.external_id])
    before = client.get(panel_url, HTTP_HX_REQUEST="true").content.decode()
    assert "Related items" in before and "<html" not in before
    for target in planted_catalog.items_by_cluster[1][1:7]:
        with django_capture_on_commit_callbacks(execute=True):
            rated = client.post(
                reverse("item-rate", args=[target.external_id]),
                {"kind": "rating", "value": "5"},
                HTTP_HX_REQUEST="true",
            )
        assert rated.status_code == 200
    assert Feedback.objects.filter(user=profile, item__in=planted_catalog.items_by_cluster[1][1:7]).count() == 6
    after = client.get(panel_url, HTTP_HX_REQUEST="true").content.decode()
    for_you_before = before.split('id="for-you"')[1]
    for_you_after = after.split('id="for-you"')[1]
    assert for_you_before != for_you_after
    assert for_you_after.count("Cluster 1 item") > for_you_before.count("Cluster 1 item")


def test_related_page_without_javascript_and_unknown_item(client, planted_catalog):
    train_inline()
    item = planted_catalog.items_by_cluster[0][0]
    page = client.get(reverse("item-related-panel", args=[item.external_id])).content.decode()
    assert "<html" in page and "Cluster 0 item" in page
    assert client.get(reverse("item-related-panel", args=["missing"])).status_code == 404


def test_user_without_any_signal_sees_the_unknown_user_notice(client, planted_catalog):
    train_inline()
    profile = UserProfileFactory()
    client.force_login(profile.user)
    page = client.get(reverse("home")).content.decode()
    assert 'data-fallback-reason="unknown_user"' in page and "rate a few items" in page


@pytest.mark.django_db
def test_home_shows_a_row_per_candidate_source_on_request(client, planted_catalog):
    from tests.recommender.test_training import train_inline

    train_inline()
    profile = planted_catalog.profiles_by_cluster[0][0]
    client.force_login(profile.user)

    plain = client.get("/").content.decode()
    rows = client.get("/?rows=sources").content.decode()

    assert "Show a row per candidate source" in plain and "<h3>For you</h3>" not in plain
    assert "<h3>For you</h3>" in rows
    assert "<h3>Popular</h3>" in rows


@pytest.mark.django_db
def test_staff_viewing_as_a_user_sees_that_users_homepage(client, planted_catalog, django_user_model):
    from tests.recommender.test_training import train_inline

    train_inline()
    staff = django_user_model.objects.create_user("boss", password="pw-12345-long", is_staff=True)
    viewed = planted_catalog.profiles_by_cluster[1][0]
    client.force_login(staff)
    session = client.session
    session["view_as_profile_id"] = viewed.pk
    session.save()

    html = client.get("/").content.decode()

    assert f"Viewing as <strong>{viewed.external_id}</strong>" in html
    cluster_one_titles = [item.title for item in planted_catalog.items_by_cluster[1]]
    assert sum(title in html for title in cluster_one_titles) >= 8


# --- accounts without a profile (the admin `make run` creates has none) ------------------------


def _visible_text(html: str) -> str:
    """What a person reads: the main content without tags."""
    import re

    main = html.split('<main id="main"', 1)[1].split("</main>", 1)[0]
    return " ".join(re.sub(r"<[^>]+>", " ", main.split(">", 1)[1]).split())


def test_staff_without_a_profile_are_invited_to_view_as_a_user_not_to_sign_in(
    client, planted_catalog, django_user_model
):
    from catalog.models import UserProfile

    admin = django_user_model.objects.create_superuser("admin", password="pw-12345-long")
    assert not UserProfile.objects.filter(user=admin).exists()
    client.force_login(admin)
    html = client.get(reverse("home")).content.decode()
    text = _visible_text(html)
    assert "Sign in" not in html and "Signed in as <strong>admin</strong>" in html
    assert "Pick a user in View as user… at the top to see the homepage they get" in text
    assert "rate a few items to get yours" in text
    assert f'<a href="{reverse("catalogue")}">rate a few items</a>' in html
    assert 'id="view-as-user"' in html  # the switcher the notice points at
    assert "Cluster" in text  # the catalogue's welcome is still there


def test_a_signed_in_user_without_a_profile_is_invited_to_rate_and_the_first_rating_makes_one(
    client, planted_catalog, django_user_model
):
    from catalog.models import UserProfile

    user = django_user_model.objects.create_user("newcomer", password="pw-12345-long")
    assert not UserProfile.objects.filter(user=user).exists()
    client.force_login(user)
    html = client.get(reverse("home")).content.decode()
    text = _visible_text(html)
    assert "Sign in" not in html
    assert "We don't know your taste yet: rate a few items and your recommendations appear here." in text
    assert "View as user" not in html
    item = planted_catalog.items_by_cluster[0][0]
    client.post(reverse("item-rate", args=[item.external_id]), {"kind": "rating", "value": "5"})
    profile = UserProfile.objects.get(user=user)
    assert Feedback.objects.filter(user=profile, item=item).count() == 1
    after = client.get(reverse("home")).content.decode()
    # Now the pipeline serves the page (no model is trained here, so it says so).
    assert 'data-fallback-reason="no_active_model"' in after and "Sign in" not in after


def test_signed_out_visitors_are_still_asked_to_sign_in(client, planted_catalog):
    text = _visible_text(client.get(reverse("home")).content.decode())
    assert "Sign in and rate a few items to get personal recommendations." in text
