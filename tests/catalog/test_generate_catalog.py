"""Synthetic catalogue: the planted structure (pure plan) and the COPY load (real PostgreSQL)."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command

from catalog.importers.synthetic import CatalogPlanError, plan_catalog
from catalog.models import Feedback, Item, ItemFeature, UserFeature, UserProfile

SMALL = {"users": 200, "items": 300, "interactions": 5000, "clusters": 3}


def _interactions(plan):
    chunks = list(plan.interaction_chunks())
    return {
        name: np.concatenate([getattr(chunk, name) for chunk in chunks])
        for name in ("user", "item", "rating", "created_unix", "in_cluster")
    }


def test_plan_has_exact_counts_distinct_pairs_and_planted_clusters():
    plan = plan_catalog(seed=1, chunk_size=700, **SMALL)  # small chunks: exercises the chunk seams
    rows = _interactions(plan)

    assert len(rows["user"]) == 5000
    assert len(np.unique(rows["user"].astype(np.int64) * plan.items + rows["item"])) == 5000
    assert sum(len(chunk.index) for chunk in plan.item_chunks()) == 300
    assert np.bincount(plan.item_cluster).tolist() == [100, 100, 100]
    # Users mostly rate their own cluster, and rate it higher.
    own = plan.item_cluster[rows["item"]] == plan.user_cluster[rows["user"]]
    assert np.array_equal(own, rows["in_cluster"])
    assert own.mean() > 0.7
    assert rows["rating"][own].mean() > rows["rating"][~own].mean() + 1.0
    assert set(np.unique(rows["rating"]).tolist()) <= {1.0, 2.0, 3.0, 4.0, 5.0}
    # Interactions happen after publication.
    assert (rows["created_unix"] >= plan.item_published_unix[rows["item"]]).all()


def test_plan_popularity_is_skewed_inside_clusters():
    plan = plan_catalog(users=2000, items=3000, interactions=60000, seed=3, clusters=3)
    counts = np.bincount(_interactions(plan)["item"], minlength=plan.items)
    members, offsets = plan.cluster_members
    head = counts[members[offsets[0] : offsets[0] + 10]].sum()
    tail = counts[members[offsets[1] - 10 : offsets[1]]].sum()
    assert head > 5 * tail


def test_plan_is_deterministic_per_seed():
    first, again, other = (_interactions(plan_catalog(seed=seed, **SMALL)) for seed in (1, 1, 2))
    assert all(np.array_equal(first[name], again[name]) for name in first)
    assert not np.array_equal(first["item"], other["item"])


def test_plan_refuses_impossible_sizes():
    with pytest.raises(CatalogPlanError, match="exceed"):
        plan_catalog(users=2, items=10, interactions=100, seed=0, clusters=2)
    with pytest.raises(CatalogPlanError, match="clusters"):
        plan_catalog(users=2, items=2, interactions=1, seed=0, clusters=3)


def _generate(seed: int) -> dict:
    out = io.StringIO()
    call_command(
        "generate_catalog",
        "--users",
        "200",
        "--items",
        "300",
        "--interactions",
        "5000",
        "--seed",
        str(seed),
        "--clusters",
        "3",
        "--no-progress",
        "--json",
        stdout=out,
    )
    return json.loads(out.getvalue().strip().splitlines()[-1])


def _ratings() -> set[tuple[str, str, float]]:
    return set(Feedback.objects.values_list("user__external_id", "item__external_id", "value"))


@pytest.mark.django_db
def test_generate_catalog_loads_the_plan_and_a_second_run_adds_nothing():
    summary = _generate(seed=7)

    assert summary["added"]["items"] == 300 and summary["added"]["users"] == 200
    assert summary["added"]["feedback"] == 5000
    assert Feedback.objects.filter(kind="rating", is_current=True).count() == 5000
    assert UserProfile.objects.count() == 200
    assert not get_user_model().objects.get(username="syn-user-0").has_usable_password()
    # The planted structure survives the load: users mostly rate items of their own segment.
    segment = dict(
        UserFeature.objects.filter(feature__type="segment").values_list("profile__external_id", "feature__value")
    )
    genre = dict(ItemFeature.objects.filter(feature__type="genre").values_list("item__external_id", "feature__value"))
    assert len(segment) == 200 and len(genre) == 300
    pairs = list(Feedback.objects.values_list("user__external_id", "item__external_id", "value"))
    own = np.array([genre[item] == f"cluster-{segment[user]}" for user, item, _ in pairs])
    values = np.array([value for _, _, value in pairs])
    assert own.mean() > 0.7
    assert values[own].mean() > values[~own].mean() + 1.0
    plan = plan_catalog(seed=7, **SMALL)
    assert Item.objects.get(external_id="syn-item-5").metadata["synthetic"]["cluster"] == plan.item_cluster[5]

    again = _generate(seed=7)
    assert set(again["added"].values()) == {0}


@pytest.mark.django_db
def test_generate_catalog_another_seed_differs_and_is_never_mixed_in():
    _generate(seed=1)
    first = _ratings()
    with pytest.raises(CommandError, match="already holds a synthetic catalogue made with 'seed=1"):
        _generate(seed=2)

    UserProfile.objects.all().delete()
    get_user_model().objects.filter(username__startswith="syn-user-").delete()
    Item.objects.all().delete()
    _generate(seed=2)
    second = _ratings()

    assert len(first) == len(second) == 5000
    assert first != second
