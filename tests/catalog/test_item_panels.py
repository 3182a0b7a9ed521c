"""The item page's panels: registered by other apps (catalog/item_panels.py), rendered by the catalogue."""

from __future__ import annotations

import pytest
from django.urls import reverse

from catalog import item_panels
from catalog.item_panels import ItemPanel, item_panel_register
from tests.factories import ItemFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def panels(monkeypatch):
    """The registry, emptied for one test and put back afterwards."""
    monkeypatch.setattr(item_panels, "_panels", {})
    return item_panels


def test_the_item_page_renders_each_registered_panel_in_order(client, panels):
    item = ItemFactory(external_id="tt-heat", title="Heat (1995)")
    item_panel_register(
        ItemPanel(
            key="first",
            heading="First panel",
            link_text="Show the first panel",
            url_name="item-detail",
            refresh_after_rating=True,
        )
    )
    item_panel_register(
        ItemPanel(key="second", heading="Second panel", link_text="Show the second panel", url_name="item-detail")
    )
    html = client.get(reverse("item-detail", args=[item.external_id])).content.decode()
    url = reverse("item-detail", args=[item.external_id])
    assert html.index('id="first-panel"') < html.index('id="second-panel"')
    first = html.split('id="first-panel"')[1].split("</section>")[0]
    second = html.split('id="second-panel"')[1].split("</section>")[0]
    assert f'hx-get="{url}"' in first and f'<a href="{url}">Show the first panel</a>' in first
    assert '<h2 id="first-heading">First panel</h2>' in first
    assert "closest('#rating-widget')" in first  # reloaded after a rating
    assert "closest('#rating-widget')" not in second and 'hx-trigger="load"' in second


def test_registering_a_key_again_replaces_the_panel(panels):
    item_panel_register(ItemPanel(key="same", heading="Old", link_text="Old", url_name="item-detail"))
    item_panel_register(ItemPanel(key="other", heading="Other", link_text="Other", url_name="item-detail"))
    item_panel_register(ItemPanel(key="same", heading="New", link_text="New", url_name="item-detail"))
    assert [(panel.key, panel.heading) for panel in panels.item_panels()] == [("same", "New"), ("other", "Other")]


def test_without_panels_the_item_page_shows_only_the_item(client, panels):
    item = ItemFactory(external_id="tt-heat", title="Heat (1995)")
    html = client.get(reverse("item-detail", args=[item.external_id])).content.decode()
    assert "Heat (1995)" in html and "<section" in html  # the rating widget
    assert "-panel" not in html and "Related items" not in html


def test_the_recommender_registers_the_related_items_panel():
    assert [(panel.key, panel.url_name) for panel in item_panels.item_panels()] == [("related", "item-related-panel")]
