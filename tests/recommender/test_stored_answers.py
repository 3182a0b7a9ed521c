"""The lean hit path (config/stored_answers.py, recommender/serving/stored.py): a token-authenticated
hit answers the stored body of a cached list, byte for byte what the full view answers, under the
same authentication, authorisation and throttle rules; anything else is the full view's.

Which path answered is visible on the response: the full view returns DRF's ``Response``, the
lean path a plain ``HttpResponse``.
"""

from __future__ import annotations

import pytest
from django.core.cache import cache
from django.db import connection
from django.test.utils import CaptureQueriesContext
from rest_framework.authtoken.models import Token
from rest_framework.response import Response
from rest_framework.test import APIClient
from rest_framework.throttling import SimpleRateThrottle

from catalog.services.items import item_update
from config.authentication import token_lookup
from recommender.models import Impression
from tests.factories import StaffUserFactory, UserFactory
from tests.recommender.test_training import train_inline

pytestmark = pytest.mark.django_db


@pytest.fixture
def served(planted_catalog):
    cache.clear()  # stored bodies of another test's database state must not answer here
    yield planted_catalog, train_inline()
    cache.clear()


def token_client(user) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.get_or_create(user=user)[0].key}")
    return client


def forced_client(user) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


def is_lean(response) -> bool:
    return not isinstance(response, Response)


def home_url(profile, k: int | None = 10) -> str:
    return f"/api/v1/users/{profile.external_id}/recommendations" + (f"?k={k}" if k is not None else "")


def test_a_token_hit_answers_the_full_views_bytes_and_headers_and_records_impressions(served):
    catalog, _ = served
    profile = catalog.profiles_by_cluster[0][0]
    client = token_client(profile.user)

    first = client.get(home_url(profile))
    assert not is_lean(first) and first.json()["cached"] is False
    shown_before = Impression.objects.filter(profile=profile).count()
    lean = client.get(home_url(profile))
    shown_by_lean = Impression.objects.filter(profile=profile).count() - shown_before
    full = forced_client(profile.user).get(home_url(profile))  # a hit through DRF, the same list

    assert is_lean(lean) and not is_lean(full)
    assert lean.status_code == full.status_code == 200
    assert lean.content == full.content
    assert dict(lean.headers) == dict(full.headers)
    body = lean.json()
    assert body["cached"] is True and len(body["items"]) == 10
    assert {key: value for key, value in body.items() if key != "cached"} == {
        key: value for key, value in first.json().items() if key != "cached"
    }
    assert shown_by_lean == 10


def test_no_query_is_the_default_k_and_another_k_is_another_list(served):
    catalog, _ = served
    profile = catalog.profiles_by_cluster[1][0]
    client = token_client(profile.user)
    client.get(home_url(profile, k=None))
    default = client.get(home_url(profile, k=None))
    assert is_lean(default) and len(default.json()["items"]) == 10
    five = client.get(home_url(profile, k=5))
    assert not is_lean(five) and len(five.json()["items"]) == 5


def test_the_lean_path_keeps_authentication_and_authorisation(served):
    catalog, _ = served
    profile = catalog.profiles_by_cluster[0][0]
    url = home_url(profile)
    token_client(profile.user).get(url)  # stores the body

    bad_token = APIClient()
    bad_token.credentials(HTTP_AUTHORIZATION="Token not-a-key")
    refused = bad_token.get(url)
    assert refused.status_code == 401 and refused.json() == {"detail": "Invalid token."}
    assert refused["WWW-Authenticate"] == "Token"

    other = token_client(UserFactory()).get(url)
    assert other.status_code == 403 and "own" in other.json()["detail"]

    staff = token_client(StaffUserFactory()).get(url)
    assert is_lean(staff) and staff.status_code == 200 and staff.json()["cached"] is True

    inactive_client = token_client(profile.user)
    profile.user.is_active = False
    profile.user.save(update_fields=["is_active"])
    inactive = inactive_client.get(url)
    assert inactive.status_code == 401 and inactive.json() == {"detail": "User inactive or deleted."}

    staff_client = token_client(StaffUserFactory())
    missing = staff_client.get("/api/v1/users/nobody/recommendations?k=10")
    assert missing.status_code == 404 and "detail" in missing.json()
    malformed = staff_client.get(f"/api/v1/users/{profile.external_id}/recommendations?k=abc")
    assert malformed.status_code == 400 and "k" in malformed.json()


def test_only_plain_json_requests_take_the_lean_path(served):
    catalog, _ = served
    profile = catalog.profiles_by_cluster[0][0]
    client = token_client(profile.user)
    client.get(home_url(profile))
    assert is_lean(client.get(home_url(profile), HTTP_ACCEPT="application/json"))
    assert is_lean(client.get(home_url(profile), HTTP_ACCEPT="*/*"))
    indented = client.get(home_url(profile), HTTP_ACCEPT="application/json; indent=2")
    assert not is_lean(indented) and b"\n" in indented.content
    assert not is_lean(client.get(home_url(profile) + "&format=json"))
    assert not is_lean(client.head(home_url(profile)))


def test_a_rating_changes_the_next_homepage_after_a_stored_hit(served, django_capture_on_commit_callbacks):
    catalog, _ = served
    profile = catalog.profiles_by_cluster[0][0]
    client = token_client(profile.user)
    client.get(home_url(profile))
    before = client.get(home_url(profile))
    assert is_lean(before)
    events = [{"item": item.external_id, "kind": "rating", "value": 5} for item in catalog.items_by_cluster[1][:6]]
    with django_capture_on_commit_callbacks(execute=True):
        assert client.post("/api/v1/feedback", {"events": events}, format="json").status_code == 201

    after = client.get(home_url(profile))
    assert not is_lean(after) and after.json()["cached"] is False
    assert [i["external_id"] for i in after.json()["items"]] != [i["external_id"] for i in before.json()["items"]]


def test_a_deactivated_item_is_not_served_from_a_stored_body(served, django_capture_on_commit_callbacks):
    catalog, _ = served
    profile = catalog.profiles_by_cluster[0][0]
    client = token_client(profile.user)
    client.get(home_url(profile))
    hit = client.get(home_url(profile))
    assert is_lean(hit)
    shown = hit.json()["items"][0]["external_id"]
    item = next(item for items in catalog.items_by_cluster.values() for item in items if item.external_id == shown)
    with django_capture_on_commit_callbacks(execute=True):
        item_update(item=item, is_active=False)

    after = client.get(home_url(profile))
    assert not is_lean(after)
    assert shown not in {i["external_id"] for i in after.json()["items"]}


def test_throttles_count_each_request_once_whichever_path_answers(served, settings):
    catalog, _ = served
    profile = catalog.profiles_by_cluster[0][0]
    # As tests/security: DRF copies the rates onto the class at import.
    original_rates = SimpleRateThrottle.THROTTLE_RATES
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": {"anon": None, "user": "3/minute"}}
    SimpleRateThrottle.THROTTLE_RATES = settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"]
    try:
        client = token_client(profile.user)
        answers = [client.get(home_url(profile)) for _ in range(4)]
    finally:
        SimpleRateThrottle.THROTTLE_RATES = original_rates
    assert [answer.status_code for answer in answers] == [200, 200, 200, 429]
    assert [is_lean(answer) for answer in answers[:3]] == [False, True, True]
    throttled = answers[3]
    assert not is_lean(throttled) and "throttled" in throttled.json()["detail"]
    assert 0 < int(throttled["Retry-After"]) <= 60


def test_a_related_token_hit_answers_the_full_views_bytes(served):
    catalog, _ = served
    profile = catalog.profiles_by_cluster[0][0]
    item = catalog.items_by_cluster[0][0]
    url = f"/api/v1/items/{item.external_id}/related?k=10"
    client = token_client(profile.user)
    assert not is_lean(client.get(url))
    lean = client.get(url)
    full = forced_client(profile.user).get(url)
    assert is_lean(lean) and not is_lean(full)
    assert lean.content == full.content and dict(lean.headers) == dict(full.headers)
    assert lean.json()["cached"] is True
    # Another visitor's list is keyed by their own generations: never this one's body.
    assert not is_lean(token_client(catalog.profiles_by_cluster[1][0].user).get(url))


@pytest.mark.django_db(transaction=True)
def test_a_dead_connection_is_replaced_by_the_token_statement_itself(settings):
    """The statement stands in for CONN_HEALTH_CHECKS' SELECT 1: a connection the server dropped
    between requests is replaced and the statement answered, as the health check would have."""
    user = UserFactory()
    key = Token.objects.create(user=user).key
    connection.ensure_connection()
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        pid = cursor.fetchone()[0]
    killer = connection.copy("killer")  # a second connection, to drop the first
    try:
        with killer.cursor() as cursor:
            cursor.execute("SELECT pg_terminate_backend(%s)", [pid])
    finally:
        killer.close()
    connection.health_check_enabled, connection.health_check_done = True, False  # a new request's state

    found_user, token, _ = token_lookup(key)

    assert found_user.pk == user.pk and token.key == key
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        assert cursor.fetchone()[0] != pid


def test_a_miss_handed_to_the_full_view_reads_the_token_once(served):
    """The lean path's read of the token is reused by the full view (`TokenRead`), for both surfaces."""
    catalog, _ = served
    profile = catalog.profiles_by_cluster[1][2]
    client = token_client(profile.user)
    item = catalog.items_by_cluster[1][0]
    for url in (home_url(profile), f"/api/v1/items/{item.external_id}/related?k=10"):
        with CaptureQueriesContext(connection) as queries:
            answer = client.get(url)
        assert answer.status_code == 200 and not is_lean(answer) and answer.json()["cached"] is False
        assert sum("authtoken_token" in query["sql"] for query in queries.captured_queries) == 1
