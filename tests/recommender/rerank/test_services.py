"""The rule services: the one write path of the API, the admin and the dashboard."""

import pytest
from django.core.exceptions import ValidationError

from recommender import generations
from recommender.rerank.models import Rule
from recommender.rerank.services import rule_create, rule_delete, rule_update

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("params", [[], "", 0, False])
def test_rule_create_refuses_parameters_that_are_not_an_object_even_when_falsy(params):
    # A falsy non-object is not "no parameters": the API relies on this to keep answering 400.
    with pytest.raises(ValidationError) as raised:
        rule_create(name="r", kind="filter_inactive", params=params)
    assert raised.value.message_dict == {"params": ['Parameters must be a JSON object, e.g. {"lambda": 0.7}.']}
    assert Rule.objects.count() == 0


def test_rule_create_without_parameters_stores_the_kinds_defaults():
    assert rule_create(name="r", kind="filter_inactive").params == {}
    assert rule_create(name="s", kind="filter_seen", params=None).params == {
        "include_views": True,
        "impressions_within_days": None,
    }


def test_each_rule_write_bumps_the_global_cache_generation_once_and_a_refused_one_not_at_all():
    start = generations.global_generation_fetch()
    rule = rule_create(name="r", kind="filter_inactive")
    assert generations.global_generation_fetch() == start + 1
    rule_update(rule=rule, enabled=False)
    assert generations.global_generation_fetch() == start + 2
    with pytest.raises(ValidationError):
        rule_update(rule=rule, params={"lambda": 0.5})
    assert generations.global_generation_fetch() == start + 2
    rule_delete(rule=Rule.objects.get(pk=rule.pk))
    assert generations.global_generation_fetch() == start + 3
    assert not Rule.objects.exists()
