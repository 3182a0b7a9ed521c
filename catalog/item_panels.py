"""Panels other apps add to the item page, so that the catalogue names none of them.

The item page renders each registered panel as a section whose content comes from the panel's
URL: htmx fetches it as a fragment when the page loads (and again after each rating when
``refresh_after_rating``); without JavaScript the section holds a link to the same URL, which
then answers a page of its own. An app registers its panels in its ``AppConfig.ready``; the
recommender adds "Related items" that way.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ItemPanel:
    """One section of the item page.

    ``key`` names the section's class and ids (``<key>-panel``, ``<key>-heading``); ``url_name``
    is a URL name that takes the item's ``external_id``.
    """

    key: str
    heading: str
    link_text: str
    url_name: str
    refresh_after_rating: bool = False


_panels: dict[str, ItemPanel] = {}


def item_panel_register(panel: ItemPanel) -> None:
    """Show ``panel`` on every item page. The same key again replaces it, so ``ready()`` may run twice."""
    _panels[panel.key] = panel


def item_panels() -> list[ItemPanel]:
    """The registered panels, in the order they were first registered."""
    return list(_panels.values())
