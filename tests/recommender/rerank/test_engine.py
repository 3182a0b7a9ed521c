"""The engine: stored rules per surface and order, the trace, the one-batch loading, and
parameters that never turn into ORM field names."""

import pytest
from django.core.exceptions import ValidationError
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from recommender.candidates.base import Context
from recommender.rerank.engine import rules_apply
from recommender.rerank.models import Impression, Rule
from recommender.rerank.services import impressions_record, rule_create, rule_update
from tests.factories import FeedbackFactory, ItemFactory, UserProfileFactory

from .conftest import home, ids, ranked

pytestmark = pytest.mark.django_db


def test_stored_rules_apply_by_surface_order_and_enabled_flag():
    comedy = ItemFactory(features=[("genre", "Comedy")])
    drama = ItemFactory(features=[("genre", "Drama")])
    horror = ItemFactory(features=[("genre", "Horror")])
    items = ranked([(drama, 3), (horror, 2), (comedy, 1)])
    rule_create(
        name="no horror on related",
        kind="filter_feature",
        scope="related",
        order=1,
        params={"feature_type": "genre", "values": ["Horror"]},
    )
    rule_create(
        name="comedy first",
        kind="boost_feature",
        scope="home",
        order=2,
        params={"feature_type": "genre", "values": ["Comedy"], "mode": "add", "amount": 5},
    )
    rule_create(name="then pin drama", kind="pin", scope="both", order=3, params={"item": drama.external_id, "slot": 1})
    rule_create(
        name="switched off",
        kind="filter_feature",
        enabled=False,
        order=0,
        params={"feature_type": "genre", "values": ["Comedy"]},
    )

    on_home = rules_apply(context=home(), ranked=items, k=3)
    on_related = rules_apply(context=Context(surface="related", now=timezone.now()), ranked=items, k=3)

    assert [effect.rule_name for effect in on_home.trace] == ["comedy first", "then pin drama"]
    assert ids(on_home.items) == [drama.pk, comedy.pk, horror.pk]
    assert on_home.items[1].notes == ["boosted: genre=Comedy"]
    assert on_home.items[0].notes == ["pinned at slot 1"]
    assert [effect.rule_name for effect in on_related.trace] == ["no horror on related", "then pin drama"]
    assert ids(on_related.items) == [drama.pk, comedy.pk]
    assert on_related.trace[0].removed == [horror.pk]


def test_result_is_at_most_k_and_rules_see_the_whole_list():
    items = ItemFactory.create_batch(12)
    pinned = ItemFactory(external_id="deep")
    ranked_list = ranked([(item, 12 - i) for i, item in enumerate(items)] + [(pinned, -100)])
    rule_create(name="deep item to slot 1", kind="pin", params={"item": "deep", "slot": 1})

    result = rules_apply(context=home(), ranked=ranked_list, k=5)

    assert len(result.items) == 5
    assert result.items[0].item_id == pinned.pk
    assert result.trace[0].promoted == [pinned.pk]
    assert result.trace[0].demoted == ids(ranked_list[:5])  # each moved down one place (the fifth out)


def test_attributes_are_loaded_in_one_batch_whatever_the_pool_size():
    profile = UserProfileFactory()
    for count, expected in ((5, 5), (40, 4)):
        items = [ItemFactory(features=[("genre", f"g{i % 4}")], provider=f"p{i % 3}") for i in range(count)]
        FeedbackFactory(user=profile, item=items[0], kind_code="rating")
        impressions_record(profile_id=profile.pk, item_ids=[items[1].pk], surface="home")
        rules = [
            Rule(name="seen", kind="filter_seen", params={"impressions_within_days": 1}),
            Rule(name="cap", kind="diversity_feature_cap", params={"feature_type": "genre", "max_per_value": 2}),
            Rule(name="providers", kind="fairness_provider_cap", params={"max_percent": 50}),
            Rule(name="tail", kind="fairness_long_tail", params={"min_percent": 20}),
        ]
        with CaptureQueriesContext(connection) as queries:
            rules_apply(
                context=home(profile), ranked=ranked([(item, i) for i, item in enumerate(items)]), k=10, rules=rules
            )
        # items, features, feedback, impressions; the popularity snapshot only the first time
        assert len(queries) == expected, [query["sql"] for query in queries]


def test_a_rule_saved_around_validation_is_skipped_not_fatal():
    item = ItemFactory()
    broken = Rule.objects.create(name="typo", kind="diversity_mmr", params={"lamda": 0.5})  # no full_clean
    result = rules_apply(context=home(), ranked=ranked([(item, 1)]), k=1)
    assert ids(result.items) == [item.pk]
    assert result.trace[0].rule_id == broken.pk
    assert "lamda: unknown parameter" in result.trace[0].summary
    assert "lambda: required" in result.trace[0].summary


def test_parameters_never_become_orm_field_names():
    # Were "feature_type" used as a lookup (filter(**{feature_type: value})), "is_active" or
    # "id__gt" would match every item; as data they name no feature type and match nothing.
    active = ItemFactory(features=[("genre", "Comedy")])
    items = ranked([(active, 1)])
    for sneaky in ("is_active", "id__gt", "feature__type"):
        with pytest.raises(ValidationError, match="unknown item feature type"):
            rule_create(name="sneaky", kind="filter_feature", params={"feature_type": sneaky, "values": ["0"]})
        stored = Rule.objects.create(
            name="sneaky", kind="filter_feature", params={"feature_type": sneaky, "values": ["True", "0", "1"]}
        )
        assert ids(rules_apply(context=home(), ranked=items, k=1).items) == [active.pk]
        stored.delete()
    with pytest.raises(ValidationError, match="is_active: unknown parameter"):
        rule_create(name="extra key", kind="filter_inactive", params={"is_active": False})
    rule = rule_create(name="fine", kind="filter_inactive")
    with pytest.raises(ValueError, match="Not rule fields: params__x"):
        rule_update(rule=rule, params__x=1)


def test_impressions_record_inserts_one_row_per_distinct_item():
    profile = UserProfileFactory()
    items = ItemFactory.create_batch(3)
    with CaptureQueriesContext(connection) as queries:
        rows = impressions_record(
            profile_id=profile.pk, item_ids=[items[0].pk, items[1].pk, items[0].pk, items[2].pk], surface="home"
        )
    assert len(queries) == 1
    assert len(rows) == 3
    assert set(Impression.objects.filter(profile=profile).values_list("item_id", flat=True)) == {i.pk for i in items}


def test_an_impression_window_longer_than_a_timedelta_means_every_impression():
    """A valid rule of 1e300 days used to raise OverflowError, and every request fell back."""
    profile = UserProfileFactory()
    items = [ItemFactory() for _ in range(4)]
    impressions_record(profile_id=profile.pk, item_ids=[items[1].pk], surface="home")
    Impression.objects.filter(profile_id=profile.pk).update(shown_at=timezone.now() - timezone.timedelta(days=3000))
    for rule in (
        Rule(name="seen", kind="filter_seen", params={"impressions_within_days": 1e300}),
        Rule(name="shown", kind="demote_shown", params={"within_hours": 1e300, "factor": 0.0}),
    ):
        rule.full_clean()
        result = rules_apply(
            context=home(profile), ranked=ranked([(item, 10 - i) for i, item in enumerate(items)]), k=4, rules=[rule]
        )
        if rule.kind == "filter_seen":
            assert items[1].pk not in ids(result.items)
        else:
            assert ids(result.items)[-1] == items[1].pk
