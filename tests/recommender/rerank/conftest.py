"""Helpers for re-ranking tests: ranked lists built directly over real Item rows."""

from __future__ import annotations

import pytest
from django.utils import timezone

from recommender.candidates.base import Context, PooledCandidate
from recommender.rerank.models import Rule
from recommender.rerank.selectors import popularity_snapshot_clear


def ranked(pairs) -> list[PooledCandidate]:
    """[(item, score)] -> PooledCandidates sorted by score desc, as the scorer returns them."""
    entries = [
        PooledCandidate(item_id=item.pk, sources={"test": float(score)}, score=float(score)) for item, score in pairs
    ]
    return sorted(entries, key=lambda entry: -entry.score)


def rule(kind: str, **params) -> Rule:
    """An unsaved, validated rule (Rule.clean fills the defaults)."""
    instance = Rule(name=f"test {kind}", kind=kind, params=params)
    instance.full_clean()
    return instance


def home(profile=None, **kwargs) -> Context:
    return Context(surface="home", now=timezone.now(), profile_id=profile.pk if profile else None, **kwargs)


def ids(entries) -> list[int]:
    return [entry.item_id for entry in entries]


@pytest.fixture(autouse=True)
def _fresh_popularity():
    # Popularity is snapshotted per process between requests; each test has its own catalogue.
    popularity_snapshot_clear()
    yield
    popularity_snapshot_clear()
