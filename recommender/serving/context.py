"""The request's `Context`: who asks, under which version, what they have seen, and their vector."""

from __future__ import annotations

from contextlib import nullcontext

import numpy as np
from django.db import connection, transaction
from django.utils import timezone
from psycopg import sql

from catalog.array_selectors import user_feedback_summary
from catalog.models import Item, UserProfile
from recommender.candidates._shared import context_feedback_prime
from recommender.candidates.base import Context, Surface
from recommender.memo import GenerationMemo
from recommender.models import ModelVersion
from recommender.selectors import active_version
from recommender.services.realtime import user_vector_resolve
from recommender.vectors.base import AnnFilters
from recommender.vectors.store import VersionTables


class UnknownUserError(LookupError):
    """The model has no vector for this user and none can be derived (no feedback, no known features)."""


# Activation (and rollback) changes which version is active and bumps the generation after it
# commits, so the copy read under a generation is the one any request of that generation would
# read. The object is shared between requests: serving only reads it.
ACTIVE_VERSION: GenerationMemo[None, ModelVersion | None] = GenerationMemo(
    "active_version", lambda _key: active_version(), max_entries=1
)


def serving_version(generation: int | None) -> ModelVersion | None:
    """`active_version()`, kept per process for as long as the ``global`` generation holds."""
    return ACTIVE_VERSION.get(None, generation=generation)


def read_scope():
    """A savepoint when already inside a transaction, else nothing (autocommit).

    The model path only reads (plus single-statement upserts of a folded-in user vector). In
    autocommit a failed statement ends its own implicit transaction and leaves the connection
    usable, so the BEGIN/SAVEPOINT/RELEASE/COMMIT round trips a savepoint per stage would cost
    buy nothing there; inside an outer transaction (tests, ATOMIC_REQUESTS) the savepoint is what
    keeps a failed statement from poisoning it.
    """
    return transaction.atomic() if connection.in_atomic_block else nullcontext()


def context_build(
    *,
    surface: Surface,
    version: ModelVersion | None,
    profile: UserProfile | None = None,
    item: Item | None = None,
    require_user_vector: bool = False,
    generation: int | None = None,
) -> Context:
    """The request's Context; the user vector is stored (trained/folded in) or derived from features.

    ``generation`` is the ``global`` generation the request read first: with it, stages may use
    per-process copies (`recommender.memo`), and the context picks its vector index from it.
    """
    summary = None
    if profile is not None:
        # Seen items, positive seeds, the log's newest id and the stored user vector in one round
        # trip (sources read the first three from the context's memo).
        vector_column = (
            sql.SQL("(SELECT score_vector::real[] FROM {} WHERE profile_id = %(profile)s)").format(
                sql.Identifier(VersionTables(version.pk).users)
            )
            if version is not None
            else None
        )
        summary = user_feedback_summary(profile_id=profile.pk, extra_column=vector_column)
    user_vector = None
    if summary is not None and profile is not None and version is not None:
        user_vector = None if summary.extra is None else np.asarray(summary.extra, dtype=np.float32)
        if user_vector is None:  # not stored: fold-in, side features, or unknown
            user_vector, _origin = user_vector_resolve(profile_id=profile.pk, version=version)
        if user_vector is None and require_user_vector:
            raise UnknownUserError(f"profile {profile.pk} has no vector in v{version.pk}")
    context = Context(
        surface=surface,
        now=timezone.now(),
        version_id=version.pk if version else None,
        profile_id=profile.pk if profile else None,
        item_id=item.pk if item else None,
        user_vector=user_vector,
        filters=AnnFilters(active_only=True),
        seen_item_ids=summary.seen_item_ids if summary is not None else frozenset(),
        generation=generation,
    )
    if summary is not None:
        context_feedback_prime(context, summary)
    return context
