"""factory_boy factories for the catalogue, shared by every test package.

They write rows directly (fast, no signals). To exercise the feedback rules — superseding,
idempotency, like/dislike — call ``catalog.services.feedback_record`` instead of FeedbackFactory.
"""

from __future__ import annotations

import importlib

import factory
from django.contrib.auth import get_user_model
from django.utils import timezone

from catalog.models import Feature, FeatureSubject, Feedback, FeedbackKind, Item, ItemFeature, UserFeature, UserProfile

_SEED = importlib.import_module("catalog.migrations.0003_default_feedback_kinds")
_PLAY_SEED = importlib.import_module("catalog.migrations.0007_feedback_value_transform").PLAY_KIND


def feedback_kind_for(code: str) -> FeedbackKind:
    """The seeded FeedbackKind ``code``, recreated from the migration's defaults if a
    transactional test flushed the table (``transaction=True`` tests truncate seeded rows)."""
    kind = FeedbackKind.objects.filter(pk=code).first()
    if kind is not None:
        return kind
    for seed_code, name, weight, explicit, stateful, low, high, default in _SEED.DEFAULT_KINDS:
        FeedbackKind.objects.get_or_create(
            code=seed_code,
            defaults={
                "name": name,
                "weight": weight,
                "is_explicit": explicit,
                "is_stateful": stateful,
                "min_value": low,
                "max_value": high,
                "default_value": default,
            },
        )
    FeedbackKind.objects.get_or_create(
        code=_PLAY_SEED["code"], defaults={key: value for key, value in _PLAY_SEED.items() if key != "code"}
    )
    return FeedbackKind.objects.get(pk=code)


def feedback_kinds_ensure() -> None:
    """Make sure every default kind exists (see ``feedback_kind_for``)."""
    feedback_kind_for("rating")


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = get_user_model()
        django_get_or_create = ("username",)

    username = factory.Sequence(lambda n: f"user{n}")
    email = factory.LazyAttribute(lambda o: f"{o.username}@example.com")
    password = factory.django.Password("correct-horse-battery")
    is_staff = False


class StaffUserFactory(UserFactory):
    username = factory.Sequence(lambda n: f"staff{n}")
    is_staff = True
    is_superuser = True


class FeatureFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Feature
        django_get_or_create = ("subject", "type", "value")

    subject = FeatureSubject.ITEM
    type = "genre"
    value = factory.Sequence(lambda n: f"genre-{n}")


def _link_features(link_model, owner_field: str, subject: str):
    """A post_generation hook: ``features=[("genre", "Comedy"), ("year", "1995", 0.5)]``."""

    def hook(obj, create, extracted, **kwargs):
        if not create or not extracted:
            return
        for entry in extracted:
            feature_type, value, *rest = entry
            feature = FeatureFactory(subject=subject, type=feature_type, value=value)
            link_model.objects.update_or_create(
                **{owner_field: obj, "feature": feature},
                defaults={"weight": rest[0] if rest else 1.0},
            )

    return hook


class ItemFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Item
        skip_postgeneration_save = True

    external_id = factory.Sequence(lambda n: f"item-{n}")
    title = factory.Sequence(lambda n: f"Item {n}")
    description = ""
    provider = ""
    is_active = True
    published_at = None
    metadata = factory.LazyFunction(dict)
    features = factory.PostGeneration(_link_features(ItemFeature, "item", FeatureSubject.ITEM))


class UserProfileFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = UserProfile
        skip_postgeneration_save = True

    user = factory.SubFactory(UserFactory)
    external_id = factory.Sequence(lambda n: f"profile-{n}")
    features = factory.PostGeneration(_link_features(UserFeature, "profile", FeatureSubject.USER))


class FeedbackFactory(factory.django.DjangoModelFactory):
    """A raw feedback row; ``kind_code`` picks the kind (default ``view``, a repeatable kind).

    For stateful kinds the row is created current; creating two current rows for the same
    user, item and kind violates the database's unique rule, as it should.
    """

    class Meta:
        model = Feedback

    class Params:
        kind_code = "view"

    user = factory.SubFactory(UserProfileFactory)
    item = factory.SubFactory(ItemFactory)
    kind = factory.LazyAttribute(lambda o: feedback_kind_for(o.kind_code))
    value = factory.LazyAttribute(lambda o: o.kind.default_value)
    created_at = factory.LazyFunction(timezone.now)
    is_current = factory.LazyAttribute(lambda o: True if o.kind.is_stateful else None)
    idempotency_key = None
