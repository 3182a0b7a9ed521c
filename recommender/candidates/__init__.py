"""Candidate sources and the pool they fill together.

``SOURCES`` maps each source's name to an instance; `candidates_generate` runs the sources
configured for the context's surface, each asked for its own number of candidates, and merges
them into one de-duplicated pool. Sizes come from ``settings.RECOMMENDER_CANDIDATE_SIZES``
(``{"home": {...}, "related": {...}}``) when set, else from ``DEFAULT_CANDIDATE_SIZES``.
"""

from __future__ import annotations

import logging
import time
from contextlib import nullcontext

from django.conf import settings
from django.db import connection, transaction

from .base import (  # noqa: F401  (re-exported: the package is the interface)
    AnnFilters,
    Candidate,
    CandidateSource,
    Context,
    PooledCandidate,
    candidates_merge,
)
from .because_you_liked import BecauseYouLikedSource
from .content_based import ContentBasedSource
from .family import FamilySource
from .family_ann import FamilyAnnSource
from .fresh import FreshSource
from .personal_ann import PersonalAnnSource
from .popular import PopularSource
from .related import RelatedSource

logger = logging.getLogger(__name__)

SOURCES: dict[str, CandidateSource] = {
    source.name: source
    for source in (
        PersonalAnnSource(),
        RelatedSource(),
        BecauseYouLikedSource(),
        ContentBasedSource(),
        PopularSource(),
        FreshSource(),
        # One per non-vector model family of a version's stack (recommender/stacking.py).
        FamilySource("ease"),
        FamilySource("als"),
        # One per vector family: its own published space, queried with a request-time query.
        FamilyAnnSource("two_tower"),
    )
}

DEFAULT_CANDIDATE_SIZES: dict[str, dict[str, int]] = {
    "home": {
        "personal_ann": 200,
        "ease": 100,
        "als": 100,
        "two_tower": 100,
        "because_you_liked": 60,
        "content_based": 60,
        "popular": 50,
        "fresh": 20,
    },
    "related": {"related": 100, "two_tower": 50, "content_based": 30},
}


class UnknownSourceError(KeyError):
    """A configured candidate source name is not in SOURCES."""


def candidate_sizes(surface: str) -> dict[str, int]:
    configured = settings.RECOMMENDER_CANDIDATE_SIZES
    return dict(configured.get(surface, DEFAULT_CANDIDATE_SIZES[surface]))


def candidates_generate(context: Context, sizes: dict[str, int] | None = None) -> list[PooledCandidate]:
    """Run the configured sources and merge their nominations into one pool.

    A source that raises is logged (``candidates.source_failed``) and skipped: the others'
    candidates still make the pool, and the pipeline decides whether to fall back. On the
    homepage the user's seen items are dropped (sources already exclude them in their queries;
    this catches any that do not).
    """
    sizes = candidate_sizes(context.surface) if sizes is None else sizes
    unknown = sorted(set(sizes) - set(SOURCES))
    if unknown:
        raise UnknownSourceError(
            f"unknown candidate sources {unknown}; known: {sorted(SOURCES)}. Check RECOMMENDER_CANDIDATE_SIZES."
        )
    lists: list[list[Candidate]] = []
    for name, size in sizes.items():
        if size < 1:
            continue
        started = time.perf_counter()
        try:
            # Inside a transaction a savepoint keeps a failed SQL statement from poisoning it for the
            # next source; in autocommit a failed statement cannot, and the savepoint's round trips are saved.
            with transaction.atomic() if connection.in_atomic_block else nullcontext():
                candidates = SOURCES[name].generate(context, size)
        except Exception as error:  # any source failure is survivable; it is logged with context
            logger.warning("candidates.source_failed source=%s surface=%s error=%r", name, context.surface, error)
            continue
        logger.debug(
            "candidates.source_done source=%s count=%s ms=%.1f",
            name,
            len(candidates),
            (time.perf_counter() - started) * 1000,
        )
        lists.append(candidates)
    pool = candidates_merge(lists)
    if context.surface == "home" and context.seen_item_ids:
        pool = [entry for entry in pool if entry.item_id not in context.seen_item_ids]
    return pool
