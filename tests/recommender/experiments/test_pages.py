"""The Experiments pages: the list, the create form, the results page and its buttons, and
"view as" a variant, through the Django test client on the real database."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from catalog.models import UserProfile
from catalog.services.feedback import feedback_record
from recommender.experiments.models import Experiment, ExperimentEvent, ExperimentStatus
from recommender.experiments.results import experiment_report
from recommender.experiments.services import VariantSpec, experiment_create, experiment_start
from recommender.models import ModelVersion, VersionStatus
from recommender.rerank.models import Impression, RuleSet
from recommender.serving.experiments import FORCED_VARIANTS_SESSION_KEY
from tests.factories import ItemFactory, feedback_kind_for

pytestmark = pytest.mark.django_db


def _client(username: str, *, staff: bool) -> Client:
    user = get_user_model().objects.create_user(username=username, is_staff=staff)
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def staff() -> Client:
    return _client("lead", staff=True)


def _draft(name: str = "home test", **fields) -> Experiment:
    return experiment_create(
        name=name,
        variants=[VariantSpec(key="A", share=50, is_control=True), VariantSpec(key="B", share=50)],
        **fields,
    )


def _form(**overrides) -> dict:
    data = {
        "name": "New ranking",
        "description": "Does the popularity baseline lose?",
        "surface": "home",
        "mode": "split",
        "outcome_window_hours": "24",
        "conversion_kinds": "like,purchase",
        "variants-TOTAL_FORMS": "3",
        "variants-INITIAL_FORMS": "0",
        "variants-0-key": "control",
        "variants-0-name": "The model",
        "variants-0-share": "60",
        "variants-0-is_control": "on",
        "variants-0-scorer": "model",
        "variants-1-key": "popular",
        "variants-1-share": "40",
        "variants-1-scorer": "popularity",
        "variants-1-candidate_sizes": '{"popular": 50}',
        "variants-2-scorer": "model",  # the blank extra row, as the browser posts it
    }
    return data | overrides


# --- Create -----------------------------------------------------------------------------------------


def test_the_form_offers_servable_versions_and_rule_sets(staff):
    ready = ModelVersion.objects.create(status=VersionStatus.READY, vectors_published=True, config_snapshot={})
    failed = ModelVersion.objects.create(status=VersionStatus.FAILED, config_snapshot={})
    RuleSet.objects.create(name="Holiday picks")
    response = staff.get(reverse("experiments-new"))
    assert response.status_code == 200
    version_choices = [str(value) for value, _ in response.context["formset"].forms[0].fields["version"].choices]
    assert version_choices == ["", str(ready.pk)]
    assert str(failed.pk) not in version_choices
    body = response.content.decode()
    assert "The active one" in body and "Rules in force" in body and "Holiday picks" in body
    assert len(response.context["formset"].forms) == 3  # A (control) and B at 50%, and a blank row


def test_staff_create_an_experiment_through_the_form(staff):
    ready = ModelVersion.objects.create(status=VersionStatus.READY, vectors_published=True, config_snapshot={})
    rule_set = RuleSet.objects.create(name="Holiday picks")
    response = staff.post(
        reverse("experiments-new"), _form(**{"variants-1-version": str(ready.pk), "variants-1-rule_set": rule_set.pk})
    )
    experiment = Experiment.objects.get(name="New ranking")
    assert response.status_code == 302
    assert response["Location"] == reverse("experiments-detail", args=[experiment.pk])
    assert experiment.status == ExperimentStatus.DRAFT
    assert experiment.created_by.username == "lead"
    variants = list(experiment.variants.order_by("position").values_list("key", "share", "is_control", "scorer"))
    assert variants == [("control", 60, True, "model"), ("popular", 40, False, "popularity")]
    popular = experiment.variants.get(key="popular")
    assert (popular.version, popular.rule_set, popular.candidate_sizes) == (ready, rule_set, {"popular": 50})
    assert list(experiment.events.values_list("action", flat=True)) == [ExperimentEvent.Action.CREATED]


def test_shares_not_summing_to_100_re_render_the_form_with_the_services_message(staff):
    response = staff.post(reverse("experiments-new"), _form(**{"variants-1-share": "30"}))
    assert response.status_code == 200
    assert "The variants&#x27; traffic shares must sum to 100%, not 90%." in response.content.decode()
    assert response.context["formset"].non_form_errors() == ["The variants' traffic shares must sum to 100%, not 90%."]
    assert not Experiment.objects.exists()


def test_field_and_row_errors_show_where_they_belong(staff):
    _draft(name="Taken")
    response = staff.post(
        reverse("experiments-new"),
        _form(name="Taken", **{"variants-1-candidate_sizes": "{popular: 5"}),
    )
    assert response.status_code == 200
    assert response.context["form"].errors["name"] == ["Experiment with this Name already exists."]
    row_errors = response.context["formset"].forms[1].errors["candidate_sizes"]
    assert row_errors[0].startswith("Not valid JSON:")
    response = staff.post(
        reverse("experiments-new"), _form(mode="interleave", **{"variants-1-candidate_sizes": '{"nope": 5}'})
    )
    errors = response.context["formset"].non_form_errors()
    assert any("unknown candidate sources ['nope']" in error for error in errors)
    assert Experiment.objects.count() == 1


# --- List and results ----------------------------------------------------------------------------------


def _traffic(experiment: Experiment) -> None:
    """A: 2 users, 4 items shown, 1 clicked, one 5-star rating; B: 2 users, 4 shown, 3 clicked."""
    for code in ("click", "rating"):
        feedback_kind_for(code)
    items = [ItemFactory(external_id=f"shown-{i}") for i in range(2)]
    shown_at = timezone.now() - timedelta(hours=2)
    later = shown_at + timedelta(minutes=30)
    variants = {variant.key: variant for variant in experiment.variants.all()}
    clicks = {"A": [{0}, set()], "B": [{0, 1}, {0}]}
    for key, users in clicks.items():
        for index, clicked in enumerate(users):
            user = get_user_model().objects.create_user(username=f"{key}-{index}")
            profile = UserProfile.objects.create(user=user, external_id=f"{key}-{index}")
            for position, item in enumerate(items):
                Impression.objects.create(
                    profile=profile,
                    item=item,
                    surface="home",
                    shown_at=shown_at,
                    experiment_id=experiment.pk,
                    variant_id=variants[key].pk,
                )
                if position in clicked:
                    feedback_record(profile=profile, item=item, kind="click", created_at=later)
            if (key, index) == ("A", 0):
                feedback_record(profile=profile, item=items[1], kind="rating", value=5, created_at=later)


def test_the_list_shows_each_experiment_with_its_variants_and_a_headline_when_running(staff):
    running = experiment_start(experiment=_draft())
    _draft(name="later test", surface="related")
    _traffic(running)
    response = staff.get(reverse("experiments"))
    body = response.content.decode()
    assert response.status_code == 200
    assert [row["experiment"].name for row in response.context["rows"]] == ["later test", "home test"]
    headlines = {row["experiment"].name: row["headline"] for row in response.context["rows"]}
    assert headlines["later test"] == ""
    assert headlines["home test"].startswith("Leader: B (75.00% click-through).")
    assert 'A <span class="muted small">(control)</span> 50%' in body
    assert 'href="/experiments/new"' in body


def test_the_results_page_shows_the_figures_the_chart_and_the_audit(staff):
    experiment = experiment_start(experiment=_draft())
    _traffic(experiment)
    response = staff.get(reverse("experiments-detail", args=[experiment.pk]))
    body = response.content.decode()
    assert response.status_code == 200
    rows = {row["key"]: row for row in response.context["rows"]}
    assert (rows["A"]["users"], rows["A"]["impressions"], rows["B"]["impressions"]) == (2, 4, 4)
    assert rows["A"]["click_through_shown"]["value"] == "25.00%"
    assert rows["B"]["click_through_shown"]["value"] == "75.00%"
    assert rows["A"]["conversion_shown"]["value"] == "50.00%"  # a 5-star rating converts
    assert rows["A"]["rating_shown"] == "5.00"
    assert [label for label, _, _ in rows["B"]["p_values"]] == ["Click-through", "Conversion"]
    for text in ("25.00%", "75.00%", "5.00", "p=", "<polyline", "Click-through by day", "Started", "Created"):
        assert text in body, text
    for verdict in experiment_report(experiment).verdicts:
        assert verdict.replace("'", "&#x27;") in body
    assert 'data-testid="stop"' in body and 'data-testid="start"' not in body
    assert 'data-testid="view-as-variant"' in body


def test_a_draft_without_traffic_renders_without_figures(staff):
    experiment = _draft()
    response = staff.get(reverse("experiments-detail", args=[experiment.pk]))
    body = response.content.decode()
    assert response.status_code == 200
    assert 'data-testid="start"' in body and 'data-testid="promote"' not in body
    assert "No impressions yet." in body
    assert 'data-testid="view-as-variant"' not in body  # only a running experiment serves a variant


def test_an_interleaved_experiment_renders_its_preference_summary(staff):
    experiment = experiment_start(experiment=_draft(mode="interleave"))
    _traffic(experiment)  # clicks on both teams' items
    listing = staff.get(reverse("experiments"))
    assert listing.context["rows"][0]["headline"] == " ".join(experiment_report(experiment).verdicts)
    detail = staff.get(reverse("experiments-detail", args=[experiment.pk]))
    assert detail.status_code == 200
    assert "users shown the mixed list" in detail.content.decode()


def test_a_rates_interval_is_shown_within_0_and_100_percent(staff):
    experiment = experiment_start(experiment=_draft())
    _traffic(experiment)  # two users a variant: the normal interval reaches past both ends
    rows = {row["key"]: row for row in staff.get(reverse("experiments-detail", args=[experiment.pk])).context["rows"]}
    assert rows["A"]["click_through_shown"]["interval"].startswith("0.00–")
    assert rows["B"]["click_through_shown"]["interval"].endswith("–100.00%")


# --- Buttons -----------------------------------------------------------------------------------------


def _messages(response) -> list[str]:
    return [str(message) for message in response.context["messages"]]


def test_start_stop_and_promote_through_the_buttons(staff):
    experiment = _draft()
    detail = reverse("experiments-detail", args=[experiment.pk])
    response = staff.post(reverse("experiments-start", args=[experiment.pk]), follow=True)
    assert response.redirect_chain == [(detail, 302)]
    assert _messages(response) == ["Experiment 'home test' is running."]
    experiment.refresh_from_db()
    assert experiment.status == ExperimentStatus.RUNNING

    response = staff.post(reverse("experiments-stop", args=[experiment.pk]), {"reason": "Seen enough"}, follow=True)
    experiment.refresh_from_db()
    assert experiment.status == ExperimentStatus.STOPPED
    assert experiment.events.get(action="stopped").detail == {"reason": "Seen enough"}
    assert "reason: Seen enough" in response.content.decode()  # the audit log
    b = experiment.variants.get(key="B")
    assert f'<option value="{b.pk}"' in response.content.decode()

    response = staff.post(reverse("experiments-promote", args=[experiment.pk]), {"variant": b.pk}, follow=True)
    experiment.refresh_from_db()
    assert (experiment.status, experiment.winner) == (ExperimentStatus.COMPLETED, b)
    assert _messages(response) == ["Variant B promoted: everyone gets it now."]
    actions = list(experiment.events.order_by("at", "id").values_list("action", "actor__username"))
    assert actions == [("created", None), ("started", "lead"), ("stopped", "lead"), ("promoted", "lead")]


def test_refusals_are_messages_not_errors(staff):
    first = experiment_start(experiment=_draft())
    second = _draft(name="clashing")
    response = staff.post(reverse("experiments-start", args=[second.pk]), follow=True)
    assert response.status_code == 200
    assert _messages(response) == ["Refused: Experiment 'home test' is already running on Homepage."]
    response = staff.post(reverse("experiments-stop", args=[second.pk]), follow=True)
    assert _messages(response) == ["Experiment 'clashing' is draft; only a running one can stop."]
    response = staff.post(reverse("experiments-promote", args=[second.pk]), {"variant": "nope"}, follow=True)
    assert _messages(response) == ["Pick the variant to promote."]
    other_variant = first.variants.get(key="A")
    response = staff.post(reverse("experiments-promote", args=[second.pk]), {"variant": other_variant.pk}, follow=True)
    assert _messages(response) == ["Pick the variant to promote."]  # a variant of another experiment
    second.refresh_from_db()
    assert second.status == ExperimentStatus.DRAFT
    assert staff.post(reverse("experiments-start", args=[99999])).status_code == 404


def test_only_staff_reach_the_pages(staff):
    experiment = _draft()
    ordinary = _client("reader", staff=False)
    anonymous = Client()
    pages = [
        ("get", reverse("experiments")),
        ("get", reverse("experiments-new")),
        ("get", reverse("experiments-detail", args=[experiment.pk])),
        ("post", reverse("experiments-start", args=[experiment.pk])),
        ("post", reverse("experiments-view-as", args=[experiment.pk])),
    ]
    for method, url in pages:
        assert getattr(ordinary, method)(url).status_code == 403, url
        response = getattr(anonymous, method)(url)
        assert response.status_code == 302 and response["Location"].startswith(reverse("login")), url
    experiment.refresh_from_db()
    assert experiment.status == ExperimentStatus.DRAFT
    assert "Experiments" not in ordinary.get(reverse("home")).content.decode()
    assert 'href="/experiments/"' in staff.get(reverse("home")).content.decode()


# --- View as a variant ----------------------------------------------------------------------------------


def test_view_as_stores_the_variant_and_the_homepage_serves_it(staff, trained):
    experiment = experiment_start(experiment=_draft(surface="both"))
    profile = trained.catalog.profiles_by_cluster[0][0]
    staff.post(reverse("view-as"), {"user": profile.external_id})
    natural = staff.get(reverse("home")).context["result"].experiment["variant"]
    other = "B" if natural == "A" else "A"

    response = staff.post(reverse("experiments-view-as", args=[experiment.pk]), {"variant": other}, follow=True)
    assert staff.session[FORCED_VARIANTS_SESSION_KEY] == {str(experiment.pk): other}
    assert _messages(response) == [f"You see the site as variant {other} of 'home test'."]
    home = staff.get(reverse("home"))
    expected = {"id": experiment.pk, "name": "home test", "variant": other, "mode": "split"}
    assert home.context["result"].experiment == expected
    assert f"Experiment home test: variant {other}" in home.content.decode()
    item = trained.catalog.items_by_cluster[0][0]
    panel = staff.get(reverse("item-related-panel", args=[item.external_id]))
    assert panel.context["related"].experiment["variant"] == other
    assert f"Experiment home test: variant {other}" in panel.content.decode()

    response = staff.post(reverse("experiments-view-as", args=[experiment.pk]), {"variant": "Z"}, follow=True)
    assert _messages(response) == ["Experiment 'home test' has no variant 'Z'."]
    staff.post(reverse("experiments-view-as", args=[experiment.pk]), {"variant": other, "clear": "1"})
    assert FORCED_VARIANTS_SESSION_KEY not in staff.session
    assert staff.get(reverse("home")).context["result"].experiment["variant"] == natural


def test_a_forced_variant_in_a_non_staff_session_is_ignored(trained):
    experiment = experiment_start(experiment=_draft())
    profile = trained.catalog.profiles_by_cluster[0][0]
    client = Client()
    client.force_login(profile.user)
    natural = client.get(reverse("home")).context["result"].experiment["variant"]
    session = client.session
    session[FORCED_VARIANTS_SESSION_KEY] = {str(experiment.pk): "B" if natural == "A" else "A"}
    session.save()
    home = client.get(reverse("home"))
    assert home.context["result"].experiment["variant"] == natural
    assert "Experiment home test" not in home.content.decode()  # the label is for staff


def test_an_anonymous_visitor_keeps_a_cookie_and_with_it_their_related_variant(client, trained):
    """The related panel assigns anonymous visitors by a ``rec_visitor`` cookie, set only when an
    experiment served them; the same cookie gets the same variant, and a bad one is replaced."""
    item = trained.catalog.items_by_cluster[0][0]
    url = reverse("item-related-panel", args=[item.external_id])
    plain = client.get(url)
    assert "rec_visitor" not in plain.cookies  # no experiment, no cookie

    experiment_start(
        experiment=experiment_create(
            name="related test",
            surface="related",
            variants=[
                VariantSpec(key="A", share=50, is_control=True, candidate_sizes={"popular": 20}),
                VariantSpec(key="B", share=50),
            ],
        )
    )
    variants_by_visitor = {}
    for _ in range(20):  # both variants unless 20 fair coins agree (2 in a million)
        visitor_client = Client()
        first = visitor_client.get(url)
        cookie = first.cookies["rec_visitor"]
        assert cookie["httponly"] and cookie["samesite"] == "Lax"
        variant = first.content.decode().split('data-experiment-variant="')[1].split('"')[0]
        again = visitor_client.get(url)
        assert "rec_visitor" not in again.cookies  # kept, not reissued
        assert f'data-experiment-variant="{variant}"' in again.content.decode()
        variants_by_visitor[cookie.value] = variant
    assert set(variants_by_visitor.values()) == {"A", "B"}
    forged = Client()
    forged.cookies["rec_visitor"] = "<script>"
    assert forged.get(url).cookies["rec_visitor"].value != "<script>"
