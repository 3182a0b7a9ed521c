"""/metrics: staff sessions and the METRICS_TOKEN bearer read it; everyone else gets a JSON 401 or 403."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.test import Client

pytestmark = pytest.mark.django_db


def _signed_in(*, staff: bool) -> Client:
    client = Client()
    client.force_login(get_user_model().objects.create_user("metrics-reader", is_staff=staff))
    return client


def test_anonymous_is_asked_for_credentials_in_json():
    response = Client().get("/metrics")
    assert response.status_code == 401
    assert response.json() == {"detail": "Authentication credentials were not provided."}
    assert response["WWW-Authenticate"] == 'Bearer realm="metrics"'


def test_a_signed_in_user_who_is_not_staff_is_refused():
    response = _signed_in(staff=False).get("/metrics")
    assert response.status_code == 403
    assert response.json() == {"detail": "You do not have permission to perform this action."}


def test_staff_read_the_exposition():
    response = _signed_in(staff=True).get("/metrics")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain")
    assert b"# TYPE recsys_serving_request_duration_seconds histogram" in response.content


def test_the_scraper_reads_it_with_the_configured_bearer_token(settings):
    settings.METRICS_TOKEN = "scrape-secret"
    response = Client().get("/metrics", HTTP_AUTHORIZATION="Bearer scrape-secret")
    assert response.status_code == 200
    assert b"recsys_active_model_version" in response.content


@pytest.mark.parametrize(("configured", "sent"), [("scrape-secret", "Bearer wrong"), (None, "Bearer anything")])
def test_a_wrong_token_or_no_configured_token_is_refused(settings, configured, sent):
    settings.METRICS_TOKEN = configured
    # A staff session does not rescue a wrong token: the request chose to authenticate by token.
    response = _signed_in(staff=True).get("/metrics", HTTP_AUTHORIZATION=sent)
    assert response.status_code == 401
    assert response.json() == {"detail": "Invalid token."}


def test_openmetrics_is_served_to_a_scraper_that_asks_for_it():
    response = _signed_in(staff=True).get("/metrics", HTTP_ACCEPT="application/openmetrics-text; version=1.0.0")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("application/openmetrics-text")
    assert response.content.rstrip().endswith(b"# EOF")


def test_only_reads_are_allowed():
    response = _signed_in(staff=True).post("/metrics")
    assert response.status_code == 405
    assert response["Allow"] == "GET, HEAD"
    assert response.json() == {"detail": 'Method "POST" not allowed.'}
