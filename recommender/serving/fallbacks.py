"""Fallbacks: what serving shows when the model cannot serve, and the guard that decides it.

- no active model → ``no_active_model``;
- a database/vector-store error in the model path → ``vector_store_error`` (the read scope around
  the model path is rolled back, so the connection stays usable);
- a user the model cannot place (no vector, no feedback, no known side features) → ``unknown_user``;
- any other error in the model path → ``pipeline_error`` (logged with its traceback).

A fallback serves popular and fresh items, flagged ``fallback=True``; never a 500.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import psycopg
from django.db import DatabaseError

from catalog import selectors as catalog_selectors
from catalog.models import Item
from recommender.models import ModelVersion
from recommender.vectors.pgvector import serving_settings_ensure

from .context import UnknownUserError, read_scope

logger = logging.getLogger(__name__)


def fallback_payload(*, k: int, exclude: set[int], version_id: int | None) -> dict:
    """Popular and fresh items, interleaved (popular first), for when the model cannot serve."""
    popular = [item.pk for item in catalog_selectors.popular_items(limit=k + len(exclude))]
    fresh = list(
        Item.objects.filter(is_active=True)
        .order_by("-published_at", "-id")
        .values_list("pk", flat=True)[: k + len(exclude)]
    )
    chosen: list[tuple[int, str]] = []
    taken: set[int] = set()
    # Items the user already rated come last: only when too few others exist (a tiny catalogue).
    for allowed in (lambda item_id: item_id not in exclude, lambda item_id: True):
        for index in range(max(len(popular), len(fresh))):
            for ids, source in ((popular, "fallback_popular"), (fresh, "fallback_fresh")):
                if index < len(ids) and ids[index] not in taken and allowed(ids[index]) and len(chosen) < k:
                    taken.add(ids[index])
                    chosen.append((ids[index], source))
    return {
        "version_id": version_id,
        "rules_applied": [],
        "items": [
            {"item_id": item_id, "score": None, "sources": {source: 1.0}, "reasons": [], "notes": []}
            for item_id, source in chosen
        ],
    }


def serve_by_model(
    surface: str,
    build: Callable[[], dict],
    *,
    k: int,
    exclude: Callable[[], set[int]],
    version: ModelVersion | None,
    profile_id: int | None,
    item_id: int | None,
) -> tuple[dict, str]:
    """Run ``build()`` (the model path) in a read scope; (payload, fallback_reason).

    ``exclude`` is a callable giving the items a fallback should avoid, only called on fallback.
    """
    if version is None:
        return fallback_payload(k=k, exclude=exclude(), version_id=None), "no_active_model"
    try:
        # Idle here, so the HNSW settings are set for the connection's life (once per connection).
        serving_settings_ensure()
        with read_scope():
            return build(), ""
    except UnknownUserError:
        reason = "unknown_user"
    except (DatabaseError, psycopg.Error):
        logger.exception(
            "serving.vector_store_error surface=%s version=%s profile=%s item=%s",
            surface,
            version.pk,
            profile_id,
            item_id,
        )
        reason = "vector_store_error"
    except Exception:
        logger.exception(
            "serving.pipeline_error surface=%s version=%s profile=%s item=%s", surface, version.pk, profile_id, item_id
        )
        reason = "pipeline_error"
    return fallback_payload(k=k, exclude=exclude(), version_id=version.pk), reason
