"""The experiments and rule-sets API: nested variants, field errors, the status machine over HTTP,
results, promotion, and rule-set CRUD with its refusal to delete a set in use.

Who may call what (anonymous 401, non-staff 403) is tests/security/test_authorisation.py's matrix.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from catalog.services import feedback_record
from recommender.experiments.models import Experiment, ExperimentStatus
from recommender.models import ModelVersion, VersionStatus
from recommender.rerank.models import Impression, Rule, RuleSet
from tests.factories import ItemFactory, StaffUserFactory, UserProfileFactory, feedback_kind_for
from tests.recommender.test_training import train_inline

pytestmark = pytest.mark.django_db

EXPERIMENTS = "/api/v1/experiments"
RULE_SETS = "/api/v1/rule-sets"


@pytest.fixture
def staff():
    return StaffUserFactory(username="boss")


@pytest.fixture
def client(staff) -> APIClient:
    client = APIClient()
    client.force_authenticate(staff)
    return client


def _body(name: str = "Homepage test", **fields) -> dict:
    return {
        "name": name,
        "variants": [
            {"key": "A", "share": 50, "is_control": True},
            {
                "key": "B",
                "name": "Popular only",
                "share": 50,
                "scorer": "popularity",
                "candidate_sizes": {"popular": 50},
            },
        ],
        **fields,
    }


def _create(client, **fields) -> dict:
    response = client.post(EXPERIMENTS, _body(**fields), format="json")
    assert response.status_code == 201, response.json()
    return response.json()


# --- Create, read, edit ---------------------------------------------------------------------------------


def test_create_with_nested_variants_then_the_detail_shows_them(client):
    created = _create(client, description="Popularity as a baseline", surface="both")

    detail = client.get(f"{EXPERIMENTS}/{created['id']}").json()
    assert detail == created
    assert (detail["name"], detail["status"], detail["surface"], detail["created_by"]) == (
        "Homepage test",
        "draft",
        "both",
        "boss",
    )
    variants = [
        (
            v["key"],
            v["name"],
            v["share"],
            v["is_control"],
            v["position"],
            v["version"],
            v["scorer"],
            v["candidate_sizes"],
        )
        for v in detail["variants"]
    ]
    assert variants == [
        ("A", "", 50, True, 0, None, "model", None),
        ("B", "Popular only", 50, False, 1, None, "popularity", {"popular": 50}),
    ]
    assert [(event["action"], event["actor"]) for event in detail["events"]] == [("created", "boss")]
    assert [row["id"] for row in client.get(EXPERIMENTS).json()] == [created["id"]]


def test_shares_not_summing_to_100_answer_400_with_the_field_errors(client):
    body = _body()
    body["variants"][0]["share"] = 40

    response = client.post(EXPERIMENTS, body, format="json")

    assert response.status_code == 400
    assert response.json() == {"variants": ["The variants' traffic shares must sum to 100%, not 90%."]}
    assert not Experiment.objects.exists()


def test_unknown_fields_are_refused_not_ignored(client):
    response = client.post(EXPERIMENTS, {**_body(), "colour": "red"}, format="json")
    assert response.status_code == 400
    assert response.json() == {"colour": ["Unknown field."]}

    body = _body()
    body["variants"][1]["shares"] = body["variants"][1].pop("share")
    # Per variant, by position (LIST_SERIALIZER_ERRORS_AS_DICT): only the variants at fault.
    assert client.post(EXPERIMENTS, body, format="json").json() == {"variants": {"1": {"shares": ["Unknown field."]}}}
    assert not Experiment.objects.exists()

    created = _create(client)
    response = client.patch(f"{EXPERIMENTS}/{created['id']}", {"status": "running"}, format="json")
    assert response.status_code == 400 and response.json() == {"status": ["Unknown field."]}


@pytest.mark.parametrize(
    ("variant_fields", "field", "message"),
    [
        ({"share": "50"}, "share", "Must be an integer."),
        ({"is_control": "yes"}, "is_control", "Must be a boolean."),
        ({"version": "latest"}, "version", "Must be an integer."),
        ({"version": 987654}, "version", "No model version with id 987654."),
        ({"rule_set": 987654}, "rule_set", "No rule set with id 987654."),
        ({"key": "not a slug"}, "key", None),
    ],
)
def test_wrong_types_and_unknown_ids_answer_400_naming_the_field(client, variant_fields, field, message):
    body = _body()
    body["variants"][1].update(variant_fields)

    response = client.post(EXPERIMENTS, body, format="json")

    assert response.status_code == 400
    errors = response.json()["variants"]["1"]
    assert list(errors) == [field]
    if message is not None:
        assert errors[field] == [message]


@pytest.mark.parametrize("variants", ["AB", {"key": "A"}, [], None])
def test_variants_that_are_not_a_list_of_two_or_more_answer_400(client, variants):
    response = client.post(EXPERIMENTS, {"name": "x", "variants": variants}, format="json")
    assert response.status_code == 400 and "variants" in response.json()


def test_a_patch_replaces_the_variants_and_validates_each_in_full(client):
    created = _create(client)
    url = f"{EXPERIMENTS}/{created['id']}"

    incomplete = client.patch(url, {"variants": [{"key": "A", "is_control": True}, {"key": "B"}]}, format="json")
    assert incomplete.status_code == 400
    assert incomplete.json() == {
        "variants": {"0": {"share": ["This field is required."]}, "1": {"share": ["This field is required."]}}
    }

    three = [{"key": "A", "share": 40, "is_control": True}, {"key": "B", "share": 30}, {"key": "C", "share": 30}]
    response = client.patch(url, {"description": "Three ways", "variants": three}, format="json")
    assert response.status_code == 200, response.json()
    assert [(v["key"], v["share"]) for v in response.json()["variants"]] == [("A", 40), ("B", 30), ("C", 30)]
    assert response.json()["description"] == "Three ways"
    assert [event["action"] for event in response.json()["events"]] == ["updated", "created"]

    ends_before_start = client.patch(
        url, {"starts_at": "2030-01-02T00:00:00Z", "ends_at": "2030-01-01T00:00:00Z"}, format="json"
    )
    assert ends_before_start.status_code == 400
    assert ends_before_start.json() == {"ends_at": ["The end must be after the start."]}


def test_a_taken_name_is_a_conflict(client):
    _create(client)
    response = client.post(EXPERIMENTS, _body(), format="json")
    assert response.status_code == 409 and "name" in response.json()


def test_an_unknown_experiment_is_404(client):
    for method, suffix in [("get", ""), ("patch", ""), ("get", "/results"), ("post", "/start"), ("post", "/stop")]:
        response = getattr(client, method)(f"{EXPERIMENTS}/987654{suffix}", {}, format="json")
        assert response.status_code == 404, (method, suffix)


# --- The status machine -----------------------------------------------------------------------------------


def test_start_then_an_overlapping_start_is_refused(client):
    first = _create(client, name="first", surface="both")
    second = _create(client, name="second", surface="home", ends_at=(timezone.now() + timedelta(days=7)).isoformat())

    started = client.post(f"{EXPERIMENTS}/{first['id']}/start")
    assert started.status_code == 200
    assert started.json()["status"] == "running" and started.json()["started_at"] is not None
    assert [event["action"] for event in started.json()["events"]] == ["started", "created"]

    clash = client.post(f"{EXPERIMENTS}/{second['id']}/start")
    assert clash.status_code == 400
    assert clash.json() == {"surface": ["Experiment 'first' is already running on Both."]}
    assert Experiment.objects.get(pk=second["id"]).status == ExperimentStatus.DRAFT

    again = client.post(f"{EXPERIMENTS}/{first['id']}/start")
    assert again.status_code == 409
    assert again.json() == {"detail": "Experiment 'first' is running; only a draft can start."}


def test_a_running_experiment_keeps_its_split_but_may_change_its_end(client):
    created = _create(client)
    url = f"{EXPERIMENTS}/{created['id']}"
    client.post(f"{url}/start")

    renamed = client.patch(url, {"name": "renamed"}, format="json")
    assert renamed.status_code == 409
    assert "only its end, outcome window and description can change" in renamed.json()["detail"]
    ends = timezone.now() + timedelta(days=3)
    response = client.patch(url, {"ends_at": ends.isoformat(), "outcome_window_hours": 48}, format="json")
    assert response.status_code == 200
    assert response.json()["outcome_window_hours"] == 48.0


def test_stop_then_stopping_again_is_a_conflict(client):
    created = _create(client)
    url = f"{EXPERIMENTS}/{created['id']}"
    assert client.post(f"{url}/stop", {"reason": "never started"}, format="json").status_code == 409
    client.post(f"{url}/start")

    stopped = client.post(f"{url}/stop", {"reason": "enough data"}, format="json")

    assert stopped.status_code == 200
    assert stopped.json()["status"] == "stopped" and stopped.json()["stopped_at"] is not None
    assert stopped.json()["events"][0]["action"] == "stopped"
    assert stopped.json()["events"][0]["detail"] == {"reason": "enough data"}
    assert client.post(f"{url}/stop").status_code == 409


def test_results_have_the_report_shape_and_count_the_traffic(client):
    created = _create(client)
    url = f"{EXPERIMENTS}/{created['id']}"
    client.post(f"{url}/start")
    experiment = Experiment.objects.get(pk=created["id"])
    control = experiment.variants.get(key="A")
    profile, item = UserProfileFactory(), ItemFactory()
    shown_at = timezone.now() - timedelta(hours=2)
    Impression.objects.create(
        profile=profile,
        item=item,
        surface="home",
        shown_at=shown_at,
        experiment_id=experiment.pk,
        variant_id=control.pk,
    )
    feedback_kind_for("click")
    feedback_record(profile=profile, item=item, kind="click", created_at=shown_at + timedelta(minutes=5))

    response = client.get(f"{url}/results")

    assert response.status_code == 200
    data = response.json()
    assert set(data) == {
        "experiment_id",
        "name",
        "status",
        "mode",
        "variants",
        "verdicts",
        "winner_key",
        "daily",
        "interleaving",
    }
    assert (data["experiment_id"], data["status"], data["winner_key"], data["interleaving"]) == (
        experiment.pk,
        "running",
        None,
        None,
    )
    by_key = {variant["key"]: variant for variant in data["variants"]}
    assert (by_key["A"]["users"], by_key["A"]["impressions"], by_key["A"]["items_shown"]) == (1, 1, 1)
    assert by_key["A"]["click_through"]["value"] == 1.0
    assert set(by_key["A"]["click_through"]) == {"value", "variance", "low", "high", "users", "unit_variance"}
    assert by_key["B"]["users"] == 0 and by_key["B"]["click_through"] is None
    assert len(data["verdicts"]) == 1
    assert data["daily"] == [
        {
            "day": shown_at.date().isoformat(),
            "variant": "A",
            "items_shown": 1,
            "impressions": 1,
            "clicked": 1,
            "click_through": 1.0,
        }
    ]


def test_promote_activates_the_winners_version_and_completes_the_experiment(client, trained):
    first = trained.version
    second = train_inline()  # the newer run becomes active; the first stays ready
    assert second.status == VersionStatus.ACTIVE
    body = _body()
    body["variants"][1] = {"key": "B", "share": 50, "version": first.pk}
    response = client.post(EXPERIMENTS, body, format="json")
    assert response.status_code == 201, response.json()
    url = f"{EXPERIMENTS}/{response.json()['id']}"
    assert client.post(f"{url}/promote", {"variant": "B"}, format="json").status_code == 409  # a draft
    client.post(f"{url}/start")
    client.post(f"{url}/stop")

    no_winner = client.post(f"{url}/promote", {}, format="json")
    assert no_winner.status_code == 400
    assert no_winner.json() == {
        "variant": ["No variant is significantly better than the control yet: name the variant to promote."]
    }
    unknown = client.post(f"{url}/promote", {"variant": "Z"}, format="json")
    assert unknown.status_code == 400
    assert unknown.json() == {"variant": ["Experiment 'Homepage test' has no variant 'Z'; its variants: A, B."]}

    promoted = client.post(f"{url}/promote", {"variant": "B"}, format="json")

    assert promoted.status_code == 200, promoted.json()
    assert (promoted.json()["status"], promoted.json()["winner"]) == ("completed", "B")
    assert ModelVersion.objects.get(status=VersionStatus.ACTIVE).pk == first.pk
    assert promoted.json()["events"][0]["action"] == "promoted"
    assert promoted.json()["events"][0]["detail"]["activated_version"] == first.pk
    assert client.post(f"{url}/promote", {"variant": "A"}, format="json").status_code == 409


# --- Rule sets ------------------------------------------------------------------------------------------------


def test_rule_set_create_read_update_delete(client):
    created = client.post(RULE_SETS, {"name": "Holiday", "description": "Seasonal picks"}, format="json")
    assert created.status_code == 201
    data = created.json()
    assert (data["name"], data["description"], data["enabled"], data["rule_count"], data["variant_count"]) == (
        "Holiday",
        "Seasonal picks",
        True,
        0,
        0,
    )
    url = f"{RULE_SETS}/{data['id']}"
    assert client.get(url).json() == data
    assert [row["name"] for row in client.get(RULE_SETS).json()] == ["Holiday"]

    taken = client.post(RULE_SETS, {"name": "Holiday"}, format="json")
    assert taken.status_code == 409 and "name" in taken.json()
    assert client.patch(url, {"enabeld": False}, format="json").json() == {"enabeld": ["Unknown field."]}
    assert client.patch(url, {"enabled": "no"}, format="json").json() == {"enabled": ["Must be a boolean."]}
    updated = client.patch(url, {"enabled": False}, format="json")
    assert updated.status_code == 200
    assert (updated.json()["enabled"], updated.json()["name"]) == (False, "Holiday")

    assert client.delete(url).status_code == 204
    assert client.get(url).status_code == 404
    assert not RuleSet.objects.exists()


def test_a_rule_set_that_rules_belong_to_or_a_variant_uses_cannot_be_deleted(client):
    rule_set = RuleSet.objects.create(name="Holiday")
    rule = Rule.objects.create(name="Hide inactive", kind="filter_inactive", rule_set=rule_set)
    url = f"{RULE_SETS}/{rule_set.pk}"
    assert client.get(url).json()["rule_count"] == 1

    response = client.delete(url)

    assert response.status_code == 409
    assert response.json() == {
        "detail": "Rule set 'Holiday' cannot be deleted: 1 rule belongs to it. "
        "Move its rules out and remove it from the variants first."
    }

    rule.delete()
    body = _body()
    body["variants"][1]["rule_set"] = rule_set.pk
    _create(client, **{key: value for key, value in body.items() if key != "name"})
    assert client.get(url).json()["variant_count"] == 1

    response = client.delete(url)

    assert response.status_code == 409
    assert "experiment variants use it ('Homepage test')" in response.json()["detail"]
    assert RuleSet.objects.filter(pk=rule_set.pk).exists()
