"""Fixtures of the security tests: a small world with an owner, another user and staff."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from django.contrib.auth import get_user_model
from django.core.cache import cache
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from catalog.models import Feedback, Item, UserProfile
from catalog.services import feedback_record
from recommender.experiments.models import Experiment
from recommender.experiments.services import VariantSpec, experiment_create
from recommender.rerank.models import Rule, RuleSet
from tests.factories import ItemFactory, feedback_kind_for

PASSWORD = "correct-horse-battery-staple"


@pytest.fixture(autouse=True)
def _fresh_cache_and_fast_hasher(settings):
    """Lockout counters and throttle histories live in the cache: each test starts from none.

    MD5 hashing only so that creating users with passwords takes microseconds, not 0.3 s each.
    """
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    cache.clear()
    yield
    cache.clear()


@dataclass
class World:
    owner: object
    other: object
    staff: object
    owner_profile: UserProfile
    other_profile: UserProfile
    item: Item
    second_item: Item
    owner_feedback: Feedback
    rule: Rule
    rule_set: RuleSet  # in no experiment, so it may be deleted
    experiment: Experiment  # a draft on the homepage, control "A" and "B" on the active version

    def user_for(self, role: str):
        return {"anonymous": None, "user": self.owner, "other": self.other, "staff": self.staff}[role]


def make_user(username: str, *, staff: bool = False):
    return get_user_model().objects.create_user(
        username=username, password=PASSWORD, is_staff=staff, is_superuser=staff
    )


def build_world() -> World:
    owner, other, staff = make_user("owner"), make_user("other"), make_user("staffer", staff=True)
    owner_profile = UserProfile.objects.create(user=owner, external_id="owner-profile")
    other_profile = UserProfile.objects.create(user=other, external_id="other-profile")
    item = ItemFactory(external_id="item-a", title="Item A", features=[("genre", "Drama")])
    second_item = ItemFactory(external_id="item-b", title="Item B", features=[("genre", "Comedy")])
    feedback_kind_for("rating")
    owner_feedback = feedback_record(profile=owner_profile, item=item, kind="rating", value=4.0)
    rule = Rule.objects.create(
        name="No dramas", kind="filter_feature", params={"feature_type": "genre", "values": ["Drama"]}
    )
    rule_set = RuleSet.objects.create(name="Holiday picks", description="Seasonal rules, off by default.")
    experiment = experiment_create(
        name="Homepage test",
        variants=[VariantSpec(key="A", share=50, is_control=True), VariantSpec(key="B", share=50)],
    )
    return World(
        owner, other, staff, owner_profile, other_profile, item, second_item, owner_feedback, rule, rule_set, experiment
    )


@pytest.fixture
def world(db) -> World:
    return build_world()


def api_client(user=None, *, token: bool = False) -> APIClient:
    client = APIClient()
    if user is not None:
        if token:
            client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.get_or_create(user=user)[0].key}")
        else:
            client.force_authenticate(user)
    return client
