"""Item writes: create and update, features included; ``item_changed`` is sent after commit."""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

from django.db import transaction

from catalog import signals
from catalog.models import Item

from .features import FeatureSpec, item_features_replace

logger = logging.getLogger(__name__)


ITEM_UPDATABLE_FIELDS = frozenset(
    {"external_id", "title", "description", "published_at", "provider", "is_active", "metadata"}
)


def item_change_announce(*, item_id: int, created: bool = False) -> None:
    """Send ``item_changed`` after the current transaction commits (used by services and admin)."""
    transaction.on_commit(lambda: signals.item_changed.send(sender=Item, item_id=item_id, created=created))


@transaction.atomic
def item_create(
    *,
    external_id: str,
    title: str,
    description: str = "",
    published_at: dt.datetime | None = None,
    provider: str = "",
    is_active: bool = True,
    metadata: dict | None = None,
    features: FeatureSpec | None = None,
) -> Item:
    """Create an item and its side features; ``item_changed`` is sent after commit."""
    item = Item(
        external_id=(external_id or "").strip(),
        title=title,
        description=description or "",
        published_at=published_at,
        provider=provider or "",
        is_active=is_active,
        metadata=metadata if metadata is not None else {},
    )
    item.full_clean()
    item.save()
    if features:
        item_features_replace(item=item, features=features)
    logger.info("catalog.item.created item_id=%s external_id=%s", item.pk, item.external_id)
    item_change_announce(item_id=item.pk, created=True)
    return item


@transaction.atomic
def item_update(*, item: Item, **fields: Any) -> Item:
    """Change the given fields of ``item``; ``features`` (when given) replaces the whole set.

    Raises ``TypeError`` for a field that cannot be updated, like a wrong keyword argument would.
    ``item_changed`` is sent after commit when anything changed.
    """
    features = fields.pop("features", None)
    unknown = set(fields) - ITEM_UPDATABLE_FIELDS
    if unknown:
        raise TypeError(f"item_update() cannot update {sorted(unknown)}; allowed: {sorted(ITEM_UPDATABLE_FIELDS)}")
    if "external_id" in fields:
        fields["external_id"] = (fields["external_id"] or "").strip()
    if fields.get("metadata", {}) is None:
        fields["metadata"] = {}

    changed = [name for name, value in fields.items() if getattr(item, name) != value]
    for name in changed:
        setattr(item, name, fields[name])
    if changed:
        item.full_clean()
        item.save(update_fields=[*changed, "updated_at"])
    if features is not None:
        item_features_replace(item=item, features=features)
    if changed or features is not None:
        logger.info(
            "catalog.item.updated item_id=%s fields=%s features=%s", item.pk, ",".join(changed), features is not None
        )
        item_change_announce(item_id=item.pk, created=False)
    return item
