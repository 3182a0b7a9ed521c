"""Clicks from the pages: a recommendation list links its items with ?via=<surface>, and opening
one records a ``click`` feedback for the signed-in visitor, which an experiment counts as an outcome."""

from __future__ import annotations

import re

import pytest
from django.urls import reverse

from catalog.models import Feedback
from recommender.experiments.results import experiment_report
from recommender.experiments.services import VariantSpec, experiment_create, experiment_start
from recommender.serving import impressions_flush
from tests.recommender.test_training import train_inline

pytestmark = pytest.mark.django_db


def _clicks(profile) -> int:
    return Feedback.objects.filter(user=profile, kind__code="click").count()


def _linked_items(html: str, via: str) -> list[str]:
    return re.findall(rf'href="/items/([^/"]+)/\?via={via}"', html)


def test_the_homepage_links_its_items_as_clicks_and_opening_one_records_it(client, planted_catalog):
    train_inline()
    profile = planted_catalog.profiles_by_cluster[0][0]
    client.force_login(profile.user)
    linked = _linked_items(client.get(reverse("home")).content.decode(), "home")
    assert len(linked) >= 5

    client.get(reverse("item-detail", args=[linked[0]]) + "?via=home")
    assert _clicks(profile) == 1
    client.get(reverse("item-detail", args=[linked[1]]))  # opened from elsewhere: not a click
    client.get(reverse("item-detail", args=[linked[1]]) + "?via=nowhere")
    client.get(reverse("item-detail", args=[linked[1]]) + "?via=home", headers={"Sec-Fetch-Site": "cross-site"})
    assert _clicks(profile) == 1


def test_the_related_panel_links_as_related_and_anonymous_visitors_record_nothing(client, planted_catalog):
    train_inline()
    item = planted_catalog.items_by_cluster[0][0]
    panel = client.get(reverse("item-related-panel", args=[item.external_id])).content.decode()
    linked = _linked_items(panel, "related")
    assert linked
    before = Feedback.objects.count()
    assert client.get(reverse("item-detail", args=[linked[0]]) + "?via=related").status_code == 200
    assert Feedback.objects.count() == before


def test_a_page_click_on_a_shown_item_is_the_experiments_outcome(client, planted_catalog):
    train_inline()
    experiment = experiment_start(
        experiment=experiment_create(
            name="page clicks",
            variants=[VariantSpec(key="A", share=50, is_control=True), VariantSpec(key="B", share=50)],
        )
    )
    profile = planted_catalog.profiles_by_cluster[1][0]
    client.force_login(profile.user)
    html = client.get(reverse("home")).content.decode()
    variant = re.search(r'data-variant="([^"]+)"', html).group(1)
    impressions_flush()
    client.get(reverse("item-detail", args=[_linked_items(html, "home")[0]]) + "?via=home")

    result = next(v for v in experiment_report(experiment).variants if v.key == variant)
    assert result.users == 1 and result.click_through is not None
    assert result.click_through.value == pytest.approx(1 / result.items_shown)
