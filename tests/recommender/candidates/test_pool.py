"""candidates_generate: configured sizes, seen items dropped, a failing source leaves the others' candidates."""

from __future__ import annotations

import logging

import pytest
from django.db import connection
from django.utils import timezone

from catalog.models import Feedback
from recommender.candidates import SOURCES, Context, UnknownSourceError, candidates_generate

pytestmark = pytest.mark.django_db


class BrokenSqlSource:
    """A source whose query fails inside the database, which aborts the surrounding transaction."""

    name = "broken_sql"

    def generate(self, context, n):
        with connection.cursor() as cursor:
            cursor.execute("SELECT * FROM no_such_table_for_candidates")
        return []


class RaisingSource:
    name = "raising"

    def generate(self, context, n):
        raise RuntimeError("vector store unreachable")


def test_failing_sources_are_logged_and_the_others_still_fill_the_pool(trained, monkeypatch, caplog):
    monkeypatch.setitem(SOURCES, BrokenSqlSource.name, BrokenSqlSource())
    monkeypatch.setitem(SOURCES, RaisingSource.name, RaisingSource())
    profile = trained.catalog.profiles_by_cluster[0][0]
    context = Context(
        surface="home",
        now=timezone.now(),
        version_id=trained.version.pk,
        profile_id=profile.pk,
        user_vector=trained.user_vector(profile.pk),
    )
    with caplog.at_level(logging.WARNING, logger="recommender.candidates"):
        pool = candidates_generate(context, {"broken_sql": 5, "personal_ann": 10, "raising": 5, "fresh": 5})

    sources = {name for entry in pool for name in entry.sources}
    assert sources == {"personal_ann", "fresh"}
    assert len([entry for entry in pool if "personal_ann" in entry.sources]) == 10
    messages = [record.getMessage() for record in caplog.records]
    assert any("candidates.source_failed source=broken_sql" in message for message in messages)
    assert any(
        "candidates.source_failed source=raising" in message and "vector store unreachable" in message
        for message in messages
    )


def test_home_pool_never_holds_seen_items_and_merges_sources(trained):
    profile = trained.catalog.profiles_by_cluster[1][0]
    seen = frozenset(Feedback.objects.filter(user=profile).values_list("item_id", flat=True))
    context = Context(
        surface="home",
        now=timezone.now(),
        version_id=trained.version.pk,
        profile_id=profile.pk,
        user_vector=trained.user_vector(profile.pk),
        seen_item_ids=seen,
    )
    pool = candidates_generate(context)  # the default sizes

    assert pool and not {entry.item_id for entry in pool} & seen
    assert len({entry.item_id for entry in pool}) == len(pool)
    assert any(len(entry.sources) > 1 for entry in pool)


def test_unknown_source_names_are_refused_with_a_hint(trained):
    with pytest.raises(UnknownSourceError, match="RECOMMENDER_CANDIDATE_SIZES"):
        candidates_generate(Context(surface="home", now=timezone.now()), {"personl_ann": 10})
