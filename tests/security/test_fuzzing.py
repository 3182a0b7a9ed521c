"""Schemathesis against the OpenAPI schema, in process (WSGI), as staff with a token.

Every operation of the schema gets positive and negative examples (wrong types, out-of-range
values, missing fields) and every response runs through all of schemathesis' checks: no 5xx,
status codes, content types, headers and bodies as documented, negative data refused, and
positive data accepted. The number of examples per operation is bounded
(``FUZZ_MAX_EXAMPLES``, default 25; about two minutes for all operations).

Positive data acceptance needs one thing a schema cannot carry: which users, items, feedback
kinds, feature types, rules, rule sets and experiments exist. So the test fuzzes against the
served schema narrowed to a known world (``_narrow_to_world``): the ids that name existing objects
become enums of the world's ids, feedback values follow each kind's range, and the stored rule's
kind decides which PATCH bodies are valid. That makes both directions meaningful: every
schema-valid request about the world must succeed (2xx, or 409 when it clashes with stored data),
and a request naming anything outside it is negative data that must be refused. The cross-field
rules JSON Schema cannot state hold on positive examples: an ``ends_at`` not after its
``starts_at`` is dropped (rules, experiments), and an experiment's variants are made consistent
as a whole (distinct keys, shares summing to 100, one control).
Each example runs in a savepoint that is rolled back, so every example meets the same world.
"""

from __future__ import annotations

import copy
import datetime as dt
import importlib
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from django.core.signals import request_finished, request_started
from django.core.wsgi import get_wsgi_application
from django.db import close_old_connections, transaction
from hypothesis import HealthCheck, settings
from rest_framework.authtoken.models import Token

from catalog.models import Feature, FeedbackKind, Item, UserProfile
from recommender.experiments.services import VariantSpec, experiment_create
from recommender.openapi import params_schema
from recommender.rerank.models import Rule, RuleSet
from recommender.rerank.params import RuleKind, params_clean
from tests.security.conftest import build_world

REPO = Path(__file__).resolve().parents[2]
MAX_EXAMPLES = int(os.environ.get("FUZZ_MAX_EXAMPLES", "25"))

# The world of tests.security.conftest.build_world, plus one rule with a known id.
WORLD_USERS = ["owner-profile", "other-profile"]
WORLD_ITEMS = ["item-a", "item-b"]
WORLD_ITEM_FEATURE_TYPES = ["genre"]
WORLD_RULE_ID = 424242
WORLD_RULE_KIND = RuleKind.FILTER_FEATURE
WORLD_RULE_PARAMS = {"feature_type": "genre", "values": ["Comedy"]}
# A rule set in no experiment and a draft experiment (two variants on the active version), with
# known ids; the world has no model version, so a variant names none.
WORLD_RULE_SET_ID = 434343
WORLD_EXPERIMENT_ID = 454545
# The feedback kinds every database starts with (catalog migration 0003): code → (min, max).
FEEDBACK_KINDS = {
    code: (low, high)
    for code, _, _, _, _, low, high, _ in importlib.import_module(
        "catalog.migrations.0003_default_feedback_kinds"
    ).DEFAULT_KINDS
}
# Seeded by catalog/migrations/0007: implicit play counts, at least 0, no upper bound.
FEEDBACK_KINDS["play"] = (0.0, None)


def _narrowed_params(kind: str) -> dict[str, Any]:
    """``params`` of ``kind`` with the references the world can satisfy: feature types, pinned items."""
    schema = params_schema(kind)
    properties = schema["properties"]
    if "feature_type" in properties:
        properties["feature_type"] = {"type": "string", "enum": WORLD_ITEM_FEATURE_TYPES}
    if kind == RuleKind.PIN:
        properties["item"] = {"type": "string", "enum": WORLD_ITEMS}
    return schema


def _narrow_rule_body(schema: dict[str, Any], *, partial: bool) -> None:
    for variant in schema["oneOf"]:
        if "rule_set" in variant["properties"]:
            variant["properties"]["rule_set"] = {"enum": [None, WORLD_RULE_SET_ID]}
        kind_schema = variant["properties"].get("kind")
        if kind_schema is None:
            # PATCH without a kind: the parameters are checked against the stored rule's kind.
            variant["properties"]["params"] = _narrowed_params(WORLD_RULE_KIND)
            continue
        kind = kind_schema["allOf"][0]["enum"][0]
        variant["properties"]["params"] = _narrowed_params(kind)
        if partial and params_clean(kind, WORLD_RULE_PARAMS)[1]:
            # A new kind sent without parameters keeps the stored ones: valid only where they suit it.
            variant["required"] = sorted(set(variant["required"]) | {"params"})


def _narrow_to_world(raw: dict[str, Any]) -> dict[str, Any]:
    raw = copy.deepcopy(raw)
    components = raw["components"]["schemas"]

    event = components["FeedbackEventInputRequest"]
    event["properties"]["user"] = {"type": "string", "enum": WORLD_USERS}
    event["properties"]["item"] = {"type": "string", "enum": WORLD_ITEMS}
    event["properties"]["kind"] = {"type": "string", "enum": sorted(FEEDBACK_KINDS)}
    event["oneOf"] = [
        {
            "properties": {
                "kind": {"enum": [code]},
                "value": {
                    "type": ["number", "null"],
                    **({"minimum": low} if low is not None else {}),
                    **({"maximum": high} if high is not None else {}),
                },
            }
        }
        for code, (low, high) in sorted(FEEDBACK_KINDS.items())
    ]

    _narrow_rule_body(components["RuleInputRequest"], partial=False)
    _narrow_rule_body(components["PatchedRuleInputRequest"], partial=True)

    variant = components["VariantInputRequest"]["properties"]
    variant["version"] = {"type": "null"}
    variant["rule_set"] = {"enum": [None, WORLD_RULE_SET_ID]}

    path_ids = {
        "/api/v1/items/{external_id}": WORLD_ITEMS,
        "/api/v1/users/{external_id}": WORLD_USERS,
        "/api/v1/rules/{rule_id}": [WORLD_RULE_ID],
        "/api/v1/rule-sets/{rule_set_id}": [WORLD_RULE_SET_ID],
        "/api/v1/experiments/{experiment_id}": [WORLD_EXPERIMENT_ID],
    }
    for path, operations in raw["paths"].items():
        ids = next((ids for prefix, ids in path_ids.items() if path.startswith(prefix)), None)
        if ids is None:
            continue
        for operation in operations.values():
            for parameter in operation.get("parameters", []):
                if parameter["in"] == "path":
                    parameter["schema"] = {**parameter["schema"], "enum": ids}
    return raw


# Django's WSGI handler, not config.wsgi: importing that module gives every new connection of this
# process the web statement timeout, and the import tests need long statements.
application = get_wsgi_application()
served = schemathesis.openapi.from_wsgi("/api/schema/?format=json", application)
schema = schemathesis.openapi.from_dict(_narrow_to_world(served.raw_schema))
schema.app = application
schema.location = served.location


@pytest.fixture
def keep_test_connection():
    """The real WSGI handler closes the connection after each request, which would end the
    test's transaction; Django's own test client disconnects the same receiver."""
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    yield
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


@pytest.fixture
def staff_token(db, keep_test_connection) -> str:
    world = build_world()
    Rule.objects.create(pk=WORLD_RULE_ID, name="Fuzzed rule", kind=WORLD_RULE_KIND, params=WORLD_RULE_PARAMS)
    RuleSet.objects.create(pk=WORLD_RULE_SET_ID, name="Fuzzed rule set")
    experiment_create(
        pk=WORLD_EXPERIMENT_ID,
        name="Fuzzed experiment",
        variants=[VariantSpec(key="A", share=50, is_control=True), VariantSpec(key="B", share=50)],
    )
    # The narrowed schema must describe this database, or the test would prove nothing.
    assert sorted(UserProfile.objects.values_list("external_id", flat=True)) == sorted(WORLD_USERS)
    assert sorted(Item.objects.values_list("external_id", flat=True)) == sorted(WORLD_ITEMS)
    assert (
        sorted(set(Feature.objects.filter(subject="item").values_list("type", flat=True))) == WORLD_ITEM_FEATURE_TYPES
    )
    assert {kind.code: (kind.min_value, kind.max_value) for kind in FeedbackKind.objects.all()} == FEEDBACK_KINDS
    return Token.objects.create(user=world.staff).key


def _period_ordered(case) -> None:
    """A positive rule or experiment body with both ends of its period gets them in order (JSON
    Schema cannot say it)."""
    body = case.body
    if not (isinstance(body, dict) and case.path.startswith(("/api/v1/rules", "/api/v1/experiments"))):
        return
    starts, ends = body.get("starts_at"), body.get("ends_at")
    if isinstance(starts, str) and isinstance(ends, str):
        try:
            unordered = dt.datetime.fromisoformat(ends) <= dt.datetime.fromisoformat(starts)
        except (TypeError, ValueError):  # not comparable here; the API answers for itself
            return
        if unordered:
            body["ends_at"] = None


def _variants_consistent(case) -> None:
    """A positive experiment body's variants made consistent as a whole (JSON Schema describes each
    variant alone): distinct keys, shares summing to 100, exactly one control, and two variants
    when interleaved (else split traffic)."""
    body = case.body
    if not (isinstance(body, dict) and case.path.startswith("/api/v1/experiments")):
        return
    variants = body.get("variants")
    if not isinstance(variants, list) or not all(isinstance(variant, dict) for variant in variants):
        return
    if len({variant.get("key") for variant in variants}) != len(variants):
        for position, variant in enumerate(variants):
            variant["key"] = f"v{position}"
    if sum(variant.get("share", 0) for variant in variants) != 100:
        base, remainder = divmod(100, len(variants))
        for position, variant in enumerate(variants):
            variant["share"] = base + (remainder if position == 0 else 0)
    if sum(1 for variant in variants if variant.get("is_control")) != 1:
        for position, variant in enumerate(variants):
            variant["is_control"] = position == 0
    if body.get("mode") == "interleave" and len(variants) != 2:
        body["mode"] = "split"


@schema.parametrize()
@settings(
    max_examples=MAX_EXAMPLES, deadline=None, derandomize=True, database=None, suppress_health_check=list(HealthCheck)
)
def test_api_meets_its_schema_under_fuzzing(case, staff_token):
    if case.meta is not None and case.meta.generation.mode.is_positive:
        _period_ordered(case)
        _variants_consistent(case)
    with transaction.atomic():  # each example meets the same world
        case.call_and_validate(headers={"Authorization": f"Token {staff_token}"})
        transaction.set_rollback(True)


def test_schema_validates_with_warnings_as_errors(tmp_path):
    output = tmp_path / "schema.yaml"
    result = subprocess.run(
        [sys.executable, "manage.py", "spectacular", "--validate", "--fail-on-warn", "--file", str(output)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Warning" not in result.stderr and "Error" not in result.stderr, result.stderr
    assert output.read_text().startswith("openapi: 3")
